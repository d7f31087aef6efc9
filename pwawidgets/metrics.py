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

import torch
from torch import nn

from .core import Decomposition, resize_maps


def as_maps(maps, batch: int | None = None) -> torch.Tensor:
    """Maps as a ``(B, H, W)`` float tensor: numpy arrays converted, a ``(B, 1, H, W)`` channel axis dropped; a
    clear error for any other shape, or a batch size other than ``batch``."""
    maps = torch.as_tensor(maps)
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
    masks = torch.as_tensor(masks)
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
    return resize_maps(as_maps(maps).double(), tuple(size))


def cells_kept(fraction: float, cells: int) -> int:
    """How many of ``cells`` the ``fraction`` most relevant ones are: ``round(fraction * cells)``, at least 1 when
    ``fraction > 0``, 0 when ``fraction == 0``."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    return 0 if fraction == 0 else max(1, round(fraction * cells))


def relevance_ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every cell of each map, 0 = most relevant: ``(B, H, W)`` int64 (ties in raster order).

    Raises ``ValueError`` for a map holding NaN (it has no order)."""
    flat = maps.flatten(1)
    if flat.is_floating_point() and bool(flat.isnan().any()):
        raise ValueError("a map holds NaN values: it cannot be ranked")
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks.view(maps.shape)


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean ``(B, H, W)``: the ``fraction`` of cells with the largest values of each map (ties in raster order)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    ranks = relevance_ranks(maps)
    return ranks < cells_kept(fraction, ranks[0].numel())


def _fill(fill: float | torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    fill = torch.as_tensor(fill, dtype=inputs.dtype, device=inputs.device)
    return fill.view(1, -1, 1, 1) if fill.dim() else fill


def keep_top(inputs: torch.Tensor, maps: torch.Tensor, fraction: float = 0.3, fill: float | torch.Tensor = 0.0
             ) -> torch.Tensor:
    """The paper's masking: keep the ``fraction`` most relevant pixels of each image, set the rest to ``fill``.

    ``maps`` are resized to the image and ranked there. ``fill=0`` on a normalised image means the dataset
    mean colour; pass the normalised value of black (``-mean / std`` per channel) to zero raw pixels instead.
    """
    keep = top_fraction_mask(to_image_grid(as_maps(maps, inputs.shape[0]), inputs.shape[-2:]), fraction).unsqueeze(1)
    return torch.where(keep, inputs, _fill(fill, inputs))


def remove_top(inputs: torch.Tensor, maps: torch.Tensor, fraction: float, fill: float | torch.Tensor = 0.0
               ) -> torch.Tensor:
    """Deletion: set the ``fraction`` most relevant pixels to ``fill``, keep the rest (``fraction`` in [0, 1])."""
    ranks = relevance_ranks(to_image_grid(as_maps(maps, inputs.shape[0]), inputs.shape[-2:]))
    removed = (ranks < cells_kept(fraction, ranks[0].numel())).unsqueeze(1)
    return torch.where(removed, _fill(fill, inputs), inputs)


def topk_intersection(full: torch.Tensor, masked: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Per example: ``|top-k(full) ∩ top-k(masked)| / k`` from two ``(B, classes)`` logit tensors (float64)."""
    if not 0 < k <= full.shape[1]:
        raise ValueError(f"k must lie in [1, {full.shape[1]}] (the number of classes), got {k}")
    if not (bool(torch.isfinite(full).all()) and bool(torch.isfinite(masked).all())):
        raise ValueError("logits hold NaN or infinite values: their top-k classes are not defined")
    a = full.topk(k, dim=1).indices
    b = masked.topk(k, dim=1).indices
    shared = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum(1)
    return shared.double() / k


@torch.no_grad()
def topk_overlap(model: nn.Module, inputs: torch.Tensor, masked: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Per example: |top-k(full) ∩ top-k(masked)| / k (two forward passes)."""
    return topk_intersection(model(inputs.clone()), model(masked), k)  # a copy: a model may edit its input


def fidelity(model: nn.Module, inputs: torch.Tensor, maps: torch.Tensor, fraction: float = 0.3, k: int = 5,
             fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """The paper's fidelity test (Sec. 3.1): top-k overlap between the input and its top-``fraction`` part.

    For many inputs, methods, layers and fractions at once, see :func:`pwawidgets.fidelity.evaluate`.
    """
    return topk_overlap(model, inputs, keep_top(inputs, maps, fraction, fill), k)


def curve_area(fractions: torch.Tensor | list[float], values: torch.Tensor) -> torch.Tensor:
    """Area under deletion/insertion curves: trapezoids over ``fractions`` (last axis of ``values``), divided by
    the span of ``fractions`` (so it is the plain area when they run from 0 to 1, and a mean value otherwise)."""
    x = torch.as_tensor(fractions, dtype=torch.float64, device=values.device)
    if x.dim() != 1 or len(x) < 2 or not bool((x[1:] > x[:-1]).all()):
        raise ValueError("fractions must be at least two increasing numbers")
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
    v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    v = v[~v.isnan()]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be at least 1 (e.g. 2000 resamples), got {n_boot}")
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
    ratios = {}
    for name in decomposition.layers:
        ratio = decomposition.bias_ratio(name)
        if positive_only:
            ratio = torch.where(decomposition.score > 0, ratio, torch.full_like(ratio, math.nan))
        ratios[name] = ratio
    return ratios
