"""Metrics for attribution maps: the paper's fidelity test, deletion/insertion curves, localisation against masks,
bias ratios, and bootstrap confidence intervals.

Conventions: maps are signed ``(B, H, W)`` tensors on any grid; image-space metrics first resize them to the
image (bilinear, ``align_corners=False``, in float64) and rank there. Ranking is by value (most positive first),
as the paper keeps "the most relevant pixels"; pass ``map.abs()`` to rank by magnitude.

Ties: cells are ordered by a *stable* descending sort, so equal values keep their raster order (row by row, the
top-left cell first). The ``fraction`` most relevant cells are the first ``n = round(fraction * H * W)`` of that
order (Python's ``round``, half to even; at least one cell when ``fraction > 0``): a constant map keeps exactly
``n`` cells, the first ``n`` in raster order, on every device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from . import arguments
from .core import Decomposition, resize_maps
from .preprocessing import normalization_of

FILLS: tuple[str, ...] = ("zero", "black")
Fill = str | float | Sequence[float] | torch.Tensor
"""What removed pixels become, in the tensor the model receives: ``"zero"`` (0: the mean colour of a normalised
model), ``"black"`` (``-mean / std`` per channel, from the input normalisation), or a number or one number per
channel."""


def as_maps(maps, batch: int | None = None) -> torch.Tensor:
    """Maps as a ``(B, H, W)`` float tensor: numpy arrays converted, a ``(B, 1, H, W)`` channel axis dropped; a
    clear error for any other shape, or a batch size other than ``batch``."""
    try:
        maps = torch.as_tensor(maps)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"maps must be a tensor or an array of numbers, (B, H, W); got {type(maps).__name__}") from exc
    if maps.dtype == torch.bool or maps.is_complex():
        raise TypeError(f"maps of dtype {maps.dtype}: give real numbers (one relevance value per cell)")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"maps of shape {tuple(maps.shape)}: give one map per image, (B, H, W) or (B, 1, H, W); "
                         "sum a (B, C, H, W) contribution over channels first (e.g. .sum(1)); a decomposition with "
                         "k classes per example has a class axis, (B, k, H, W): pick one with Decomposition.column(j)")
    if batch is not None and maps.shape[0] != batch:
        raise ValueError(f"{maps.shape[0]} maps for {batch} images: give one map per image")
    return maps if maps.is_floating_point() else maps.double()


def as_masks(masks, batch: int | None = None) -> torch.Tensor:
    """Object masks as a ``(B, H, W)`` bool tensor, from bools or from numbers that are only 0 and 1 (or 0 and
    255, as mask images are stored); a ``(B, 1, H, W)`` channel axis is dropped."""
    try:
        masks = torch.as_tensor(masks)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"masks must be a tensor or an array, (B, H, W); got {type(masks).__name__}") from exc
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3 or (batch is not None and masks.shape[0] != batch):
        raise ValueError(f"masks of shape {tuple(masks.shape)}: give one (H, W) mask per map, (B, H, W)")
    if masks.dtype == torch.bool:
        return masks
    values = set(masks.unique().tolist())
    if values <= {0, 1} or values <= {0, 255}:
        return masks > 0
    raise ValueError(f"masks hold values {sorted(values)[:6]}: give bools, or 0/1 (0/255) numbers")


def to_image_grid(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, h, w)`` maps to ``size`` (bilinear, float64); unchanged values if already that size."""
    if isinstance(size, (str, bytes)) or not isinstance(size, (Sequence, torch.Size)) or len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    size = tuple(arguments.integer("size", int(v) if isinstance(v, torch.Tensor) else v, 1) for v in size)
    return resize_maps(as_maps(maps).double(), size)


def cells_kept(fraction: float, cells: int) -> int:
    """How many of ``cells`` the ``fraction`` most relevant ones are: ``round(fraction * cells)``, at least 1 when
    ``fraction > 0``, 0 when ``fraction == 0``."""
    fraction = arguments.number("fraction", fraction, 0, 1)
    cells = arguments.integer("cells", cells, 0)
    return 0 if fraction == 0 else max(1, round(fraction * cells))


def relevance_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every cell of each map, 0 = most relevant: ``(B, H, W)`` int64 (ties in raster order).

    Raises ``ValueError`` for a map holding NaN (it has no order)."""
    flat = as_maps(maps).flatten(1)
    if flat.is_floating_point() and bool(flat.isnan().any()):
        raise ValueError("a map holds NaN values: it cannot be ranked")
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks.view(maps.shape)


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean ``(B, H, W)``: the ``fraction`` of cells with the largest values of each map (ties in raster order)."""
    fraction = arguments.number("fraction", fraction, 0, 1, low_open=True)
    ranks = relevance_ranks(maps)
    return ranks < cells_kept(fraction, ranks[0].numel())


def tie_counts(maps: torch.Tensor, fraction: float) -> dict[str, torch.Tensor]:
    """What ties do to the ``fraction`` most relevant cells of each map, ``(B,)`` int64 each: ``zeros`` (cells equal
    to 0), ``tied`` (cells whose value another cell of the same map holds) and ``by_tie_rule`` (kept cells whose
    value a cell left out also holds: the raster order, not the map, chose them)."""
    fraction = arguments.number("fraction", fraction, 0, 1, low_open=True)
    flat = as_maps(maps).flatten(1)
    if flat.is_floating_point() and bool(flat.isnan().any()):
        raise ValueError("a map holds NaN values: it cannot be ranked")
    n = cells_kept(fraction, flat.shape[1])
    values = torch.sort(flat, dim=1, descending=True).values
    same = values[:, 1:] == values[:, :-1]  # neighbours in the sorted order share a value
    tied = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    tied[:, 1:] |= same
    tied[:, :-1] |= same
    cut = values[:, n - 1:n]  # the smallest value kept
    kept_at_cut = n - (flat > cut).sum(1)
    return {"zeros": (flat == 0).sum(1), "tied": tied.sum(1),
            "by_tie_rule": torch.where((flat == cut).sum(1) > kept_at_cut, kept_at_cut, 0)}


def fill_value(fill: Fill = "zero", normalization=None) -> torch.Tensor:
    """The value removed pixels get (:data:`Fill`), float64: a scalar, or ``(C,)`` per channel. ``"black"`` needs
    ``normalization=(mean, std)``."""
    if isinstance(fill, str):
        arguments.choice("fill", fill, FILLS)
        if fill == "zero":
            return torch.tensor(0.0, dtype=torch.float64)
        if normalization is None:
            raise ValueError("fill='black' needs the input normalisation: pass normalization=(mean, std), or give the "
                             "model its preprocessing (model.preprocessing = pwawidgets.Preprocessing(...); "
                             "pwawidgets.load_model does)")
        try:
            mean, std = (torch.as_tensor(v, dtype=torch.float64).flatten() for v in normalization)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"normalization must be (mean, std), one value per channel each; got "
                             f"{normalization!r}") from exc
        if mean.shape != std.shape or not bool((std > 0).all() & torch.isfinite(mean).all()):
            raise ValueError(f"normalization must be (mean, std) of equal length with every std > 0; got "
                             f"{normalization!r}")
        return -mean / std
    try:
        value = torch.as_tensor(fill, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"fill must be one of {FILLS}, a number or one number per channel; got {fill!r}") from exc
    if value.dim() > 1 or isinstance(fill, bool) or not bool(torch.isfinite(value).all()):
        raise ValueError(f"fill must be one of {FILLS}, a finite number or one number per channel; got {fill!r}")
    return value


def _fill(fill: Fill, normalization, inputs: torch.Tensor) -> torch.Tensor:
    value = fill_value(fill, normalization)
    if value.dim() and value.numel() != inputs.shape[1]:
        raise ValueError(f"fill has {value.numel()} values for images with {inputs.shape[1]} channels")
    value = value.to(dtype=inputs.dtype, device=inputs.device)
    return value.view(1, -1, 1, 1) if value.dim() else value


def _images(inputs, name: str = "inputs") -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
        what = f"{inputs.dtype} {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) float tensor as the model receives it, got {what}")
    arguments.finite(name, inputs)
    return inputs


def keep_top(inputs: torch.Tensor, maps: torch.Tensor, fraction: float = 0.3, fill: Fill = "zero",
             normalization=None) -> torch.Tensor:
    """The paper's masking: keep the ``fraction`` most relevant pixels of each image, set the rest to ``fill``.

    ``maps`` are resized to the image and ranked there. ``fill`` (:data:`Fill`): ``"zero"`` (0 in the tensor
    the model receives: the mean colour of a normalised image), ``"black"`` (``-mean / std``, from
    ``normalization``), or the value(s) to write.
    """
    inputs = _images(inputs)
    arguments.number("fraction", fraction, 0, 1, low_open=True)
    fill_t = _fill(fill, normalization, inputs)
    keep = top_fraction_mask(to_image_grid(as_maps(maps, inputs.shape[0]), inputs.shape[-2:]), fraction).unsqueeze(1)
    return torch.where(keep, inputs, fill_t)


def remove_top(inputs: torch.Tensor, maps: torch.Tensor, fraction: float, fill: Fill = "zero",
               normalization=None) -> torch.Tensor:
    """Deletion: set the ``fraction`` most relevant pixels to ``fill`` (as in :func:`keep_top`), keep the rest
    (``fraction`` in [0, 1])."""
    inputs = _images(inputs)
    fill_t = _fill(fill, normalization, inputs)
    n = cells_kept(fraction, inputs.shape[-2] * inputs.shape[-1])
    ranks = relevance_ranks(to_image_grid(as_maps(maps, inputs.shape[0]), inputs.shape[-2:]))
    return torch.where((ranks < n).unsqueeze(1), fill_t, inputs)


def topk_intersection(full: torch.Tensor, masked: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Per example: ``|top-k(full) ∩ top-k(masked)| / k`` from two ``(B, classes)`` logit tensors (float64)."""
    for name, t in (("full", full), ("masked", masked)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be (batch, classes) logits, got {shape}")
    if full.shape != masked.shape:
        raise ValueError(f"full {tuple(full.shape)} and masked {tuple(masked.shape)} logits differ in shape")
    k = arguments.integer("k", k, 1)
    if k > full.shape[1]:
        raise ValueError(f"k must lie in [1, {full.shape[1]}] (the number of classes), got {k}")
    if not (bool(torch.isfinite(full).all()) and bool(torch.isfinite(masked).all())):
        raise ValueError("logits hold NaN or infinite values: their top-k classes are not defined")
    a = full.topk(k, dim=1).indices
    b = masked.topk(k, dim=1).indices
    shared = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum(1)
    return shared.double() / k


@torch.no_grad()
def masked_topk_overlap(model: nn.Module, inputs: torch.Tensor, masked: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Per example: ``|top-k(model(inputs)) ∩ top-k(model(masked))| / k`` for inputs and their masked copies
    (e.g. from :func:`keep_top`), float64 ``(B,)``; two forward passes, on copies (the model may edit its input)."""
    inputs, masked = _images(inputs), _images(masked, "masked")
    if inputs.shape != masked.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and masked {tuple(masked.shape)} differ in shape: give one "
                         "masked copy per image")
    k = arguments.integer("k", k, 1)
    return topk_intersection(model(inputs.clone()), model(masked.clone()), k)


def fidelity(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, fraction: float = 0.3, k: int = 5,
             fill: Fill = "zero", normalization=None) -> torch.Tensor:
    """The paper's fidelity test (Sec. 3.1) per image: keep the ``fraction`` most relevant pixels of each image
    (:func:`keep_top`), set the others to ``fill``, and return the share of the full image's top-``k`` classes
    still in the top ``k``: ``(B,)`` float64 in [0, 1] (1: the masked image keeps all of them).

    ``fill`` (:data:`Fill`): ``"zero"`` (0 in the model's input), ``"black"`` (``-mean / std`` from
    ``normalization`` or the model's preprocessing) or the value(s) to write. The model runs on copies. For many
    images, methods, layers and fractions at once, see :func:`pwawidgets.fidelity.evaluate`.
    """
    inputs = _images(inputs)
    k = arguments.integer("k", k, 1)
    norm = normalization_of(model, normalization)
    return masked_topk_overlap(model, inputs, keep_top(inputs, maps, fraction, fill, norm), k)


def curve_area(fractions: torch.Tensor | list[float], values: torch.Tensor) -> torch.Tensor:
    """Area under deletion/insertion curves: trapezoids over ``fractions`` (last axis of ``values``), divided by
    the span of ``fractions`` (so it is the plain area when they run from 0 to 1, and a mean value otherwise)."""
    if not isinstance(values, torch.Tensor) or not (values.is_floating_point() or values.dtype == torch.bool):
        raise TypeError(f"values must be a float tensor with the curve on its last axis, got {type(values).__name__}")
    try:
        x = torch.as_tensor(fractions, dtype=torch.float64, device=values.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"fractions must be numbers, got {fractions!r}") from exc
    if x.dim() != 1 or len(x) < 2 or not bool((x[1:] > x[:-1]).all()) or not bool(torch.isfinite(x).all()):
        raise ValueError(f"fractions must be at least two increasing finite numbers, got {fractions!r}")
    if values.shape[-1] != len(x):
        raise ValueError(f"values have {values.shape[-1]} points on their last axis for {len(x)} fractions")
    return torch.trapezoid(values.double(), x, dim=-1) / float(x[-1] - x[0])


def bootstrap_ci(values: torch.Tensor, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
    """Mean of per-image ``values`` and its percentile bootstrap confidence interval ``(mean, low, high)``.

    Images are resampled with replacement ``n_boot`` times (a seeded generator: the same inputs give the same
    interval). NaN values are dropped first; with no value left all three are NaN. For a paired comparison of
    two methods on the same images, pass the per-image differences.
    """
    n_boot = arguments.integer("n_boot", n_boot, 1)
    level = arguments.number("level", level, 0, 1, low_open=True, high_open=True)
    seed = arguments.integer("seed", seed)
    try:
        v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"values must be numbers, one per image; got {type(values).__name__}") from exc
    if bool(v.isinf().any()):
        raise ValueError("values hold infinite numbers: their mean is not defined")
    v = v[~v.isnan()]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(v), (n_boot, len(v)), generator=gen)
    means = v[idx].mean(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return float(v.mean()), low, high


def positive_share_inside(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per example: share of the positive part of the map that falls inside the ground-truth mask.

    The map is resized to the mask's grid first. NaN where the map has no positive value.
    """
    maps = as_maps(maps)
    masks = as_masks(masks, maps.shape[0])
    pos = to_image_grid(maps, masks.shape[-2:]).clamp_min(0)
    total = pos.flatten(1).sum(1)
    inside = (pos * masks.to(pos.dtype)).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, math.nan))


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per example: True where the map's maximum (on the mask's grid; the first in raster order on a tie) lies
    inside the mask."""
    maps = as_maps(maps)
    masks = as_masks(masks, maps.shape[0])
    grid = to_image_grid(maps, masks.shape[-2:]).flatten(1)
    if bool(grid.isnan().any()):
        raise ValueError("a map holds NaN values: it has no maximum")
    hit = masks.flatten(1).gather(1, grid.argmax(1, keepdim=True))
    return hit.squeeze(1)


def bias_ratios(decomposition: Decomposition, positive_only: bool = True) -> dict[str, torch.Tensor]:
    """``bias / score`` per layer and example (the paper's Fig. 3).

    A ratio has a meaning only for a positive score: with ``positive_only`` (default) examples whose score is
    not positive get NaN, and ``nan``-aware means (``torch.nanmean``) skip them; say how many were skipped.
    """
    if not isinstance(decomposition, Decomposition):
        raise TypeError(f"decomposition must be a Decomposition (from pwawidgets.decompose), got "
                        f"{type(decomposition).__name__}")
    arguments.flag("positive_only", positive_only)
    ratios = {}
    for name in decomposition.layers:
        ratio = decomposition.bias_ratio(name)
        if positive_only:
            ratio = torch.where(decomposition.score > 0, ratio, torch.full_like(ratio, math.nan))
        ratios[name] = ratio
    return ratios
