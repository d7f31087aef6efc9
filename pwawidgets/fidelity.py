"""The paper's fidelity experiment (Sec. 3.1), batched, with baselines, curves and confidence intervals.

The paper: 100 random Pascal VOC images, the conv4 map of VGG-19 for our contributions and for Grad-CAM; keep the
30 % most relevant pixels, zero the rest, run the network again, and count how many of the top-5 classes of the
full image are still in the top 5: 35 % for the contributions, 17 % for Grad-CAM. The choices the paper leaves
open are fixed here, and each one is a parameter:

- **class**: the map explains the predicted class, the top-1 of the full image;
- **ranking**: on the map resized to the input (bilinear, ``align_corners=False``, float64), by signed value
  (``sign="signed"``: the paper keeps the "most relevant" pixels and discards negative contributions) or by
  magnitude (``sign="abs"``); ties in raster order, ``round(keep * H * W)`` pixels kept
  (:mod:`pwawidgets.metrics`);
- **fill**: ``"zero"`` sets the other pixels to 0 in the tensor the model receives (the mean colour of an
  ImageNet-normalised model), ``"black"`` to the normalised value of a black pixel, ``-mean / std``; or given
  values (:data:`pwawidgets.metrics.Fill`, the same choices as :func:`pwawidgets.metrics.fidelity`);
- **score**: ``|top-k(full) ∩ top-k(masked)| / k`` per image, averaged over images, with a percentile bootstrap
  interval over images (:func:`pwawidgets.metrics.bootstrap_ci`).

Beyond the paper: a seeded random map (drawn on the layer's grid, then resized like the others), the gradient,
Grad-CAM with ReLU and the CAM variants of :mod:`pwawidgets.baselines`; any fractions and layers; top-1 agreement,
retained score (masked / full logit of the class) and the class probability; deletion curves (remove the most
relevant pixels first, Samek et al. 2017) and insertion curves (keep them first, Petsiuk et al. 2018) with their
areas; the pointing game where object masks are given. Gradient x input is the contributions themselves (``ours``;
Captum's ``gradient_x_input`` gives the same maps).

Batched: one decomposition pass per image batch serves every layer and the methods ``ours``, ``gradcam``,
``gradcam_relu`` and ``gradient`` (``decompose(..., keep_gradients=True)`` then
:func:`baselines.from_decomposition`); the
masked copies of every method, layer and fraction are stacked and go through the network ``chunk`` at a time.
An unmasked copy is never run again (its logits are the full image's), and the all-filled image is run once per
batch.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import arguments, metrics
from .baselines import FROM_DECOMPOSITION, METHODS, attribute, from_decomposition
from .core import decompose
from .layers import INPUT, LayerCapture, layer_presets, resolve_layers
from .placement import channels_last, model_device, model_dtype
from .precision import exact_math
from .preprocessing import normalization_of

RANDOM = "random"
DEFAULT_METHODS: tuple[str, ...] = ("ours", "gradcam", "gradient", RANDOM)
SIGNS: tuple[str, ...] = ("signed", "abs")
SCORES: tuple[str, ...] = ("topk", "top1", "retained", "prob")
MODES: tuple[str, ...] = ("keep", "delete")  # keep the top fraction (insertion) / remove it (deletion)
PAPER_KEEP, PAPER_K, PAPER_LAYER = 0.3, 5, "conv4"
PAPER_RESULT = {"ours": 0.35, "gradcam": 0.17}  # VGG-19, conv4, 100 Pascal VOC images, keep 30 %, top-5
KEEP_CURVE: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
CURVE_FRACTIONS: tuple[float, ...] = tuple(i / 10 for i in range(11))

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]
Key = tuple[str, str, str, float]  # method, layer, mode, fraction

__all__ = ["CURVE_FRACTIONS", "DEFAULT_METHODS", "KEEP_CURVE", "PAPER_RESULT", "RANDOM", "SIGNS",
           "FidelityResult", "batches", "evaluate", "layer_grids", "paper_layer", "random_map"]


# ------------------------------------------------------------------------------------------------ protocol


def layer_grids(model: nn.Module, size: int | tuple[int, int] = 224, layers: str | Sequence[str] = "blocks"
                ) -> dict[str, tuple[int, int]]:
    """``{layer: (h, w)}``: the grid of each layer for a ``size`` input (one forward pass of zeros)."""
    size = _size(size)
    specs, _ = resolve_layers(model, layers)
    x = torch.zeros(1, 3, *size, device=model_device(model), dtype=model_dtype(model))
    with torch.no_grad(), LayerCapture(model, specs) as capture:
        model(x)
        return {s.name: tuple((x if s.module is None else capture.tensor(s)).shape[-2:]) for s in specs}


def paper_layer(model: nn.Module, size: int | tuple[int, int] = 224) -> str:
    """The paper's layer, ``conv4``, when the model has that preset (VGG, the mini VGGs); else the preset block
    whose grid is closest to ``size / 8`` (the relative resolution of VGG-19's conv4: 28 cells for 224 pixels),
    the deepest one on a tie (EfficientNet-Lite0: ``stage3``, 28 x 28; ResNet: ``layer2``)."""
    size = _size(size)
    blocks = layer_presets(model).get("blocks", {})
    if PAPER_LAYER in blocks:
        return PAPER_LAYER
    if not blocks:
        raise ValueError("this model has no preset blocks: name the layer (a module from model.named_modules())")
    grids = layer_grids(model, size)
    side = min(size)
    return min(reversed(list(grids)), key=lambda name: abs(min(grids[name]) - side / 8))


def _size(size) -> tuple[int, int]:
    """An input size: one int or (height, width), each at least 1."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return (arguments.integer("size", size[0], 1), arguments.integer("size", size[1], 1))


def random_map(shape: tuple[int, int], seed: int, index: int, layer: str) -> torch.Tensor:
    """The random baseline's map of image ``index`` at ``layer``: uniform noise on the layer's grid, from a
    generator seeded by ``(seed, index, layer)`` so it does not depend on batching."""
    shape = _size(tuple(shape) if isinstance(shape, (list, torch.Size)) else shape)
    seed, index = arguments.integer("seed", seed, 0), arguments.integer("index", index, 0)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name, got {layer!r}")
    mixed = (seed * 1_000_003 + index) * 4_294_967_311 + zlib.crc32(layer.encode())
    gen = torch.Generator().manual_seed(mixed % (2**63))
    return torch.rand(shape, generator=gen, dtype=torch.float64)


def batches(inputs: torch.Tensor, batch_size: int, masks: torch.Tensor | None = None) -> Iterator[Batch]:
    """Split a stack of model inputs (and masks) into batches for :func:`evaluate`."""
    arguments.integer("batch_size", batch_size, 1)
    if masks is not None and len(masks) != len(inputs):
        raise ValueError(f"{len(masks)} masks for {len(inputs)} inputs: give one mask per input")
    return _batches(inputs, batch_size, masks)


def _batches(inputs: torch.Tensor, batch_size: int, masks: torch.Tensor | None) -> Iterator[Batch]:
    for start in range(0, len(inputs), batch_size):
        part = slice(start, start + batch_size)
        yield inputs[part], None if masks is None else masks[part]


# ------------------------------------------------------------------------------------------------- result


@dataclass(repr=False)
class FidelityResult:
    """Per-image scores of :func:`evaluate`; ``scores[(method, layer, mode, fraction)][score]`` is ``(N,)``.

    Scores: ``topk`` (|top-k(full) ∩ top-k(masked)| / k), ``top1`` (same top-1 class), ``retained`` (masked logit
    of the predicted class / its full logit; NaN where that logit is not positive) and ``prob`` (softmax
    probability of the predicted class on the masked image). ``localisation[(method, layer)]`` holds
    ``pointing`` and ``share_inside`` where object masks were given.
    """

    methods: list[str]
    layers: list[str]
    k: int
    fill: str | tuple[float, ...]
    sign: str
    seed: int
    predicted: torch.Tensor
    scores: dict[Key, dict[str, torch.Tensor]]
    localisation: dict[tuple[str, str], dict[str, torch.Tensor]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def images(self) -> int:
        return len(self.predicted)

    def fractions(self, mode: str = "keep") -> list[float]:
        return sorted({key[3] for key in self.scores if key[2] == mode})

    def values(self, method: str, layer: str, score: str = "topk", fraction: float = PAPER_KEEP,
               mode: str = "keep") -> torch.Tensor:
        """Per-image values of one score ``(N,)``."""
        arguments.choice("score", score, SCORES)
        arguments.choice("mode", mode, MODES)
        key = (method, layer, mode, arguments.number("fraction", fraction, 0, 1))
        if key not in self.scores:
            raise KeyError(f"no result for {key}; methods {self.methods}, layers {self.layers}, "
                           f"{mode} fractions {self.fractions(mode)}")
        return self.scores[key][score]

    def curve(self, method: str, layer: str, score: str = "prob", mode: str = "delete"
              ) -> tuple[list[float], torch.Tensor]:
        """Fractions and per-image values ``(N, F)`` of a deletion (``"delete"``) or insertion (``"keep"``) curve."""
        fractions = self.fractions(mode)
        return fractions, torch.stack([self.values(method, layer, score, f, mode) for f in fractions], 1)

    def area(self, method: str, layer: str, score: str = "prob", mode: str = "delete") -> torch.Tensor:
        """Per-image area under a deletion or insertion curve (:func:`pwawidgets.metrics.curve_area`)."""
        fractions, values = self.curve(method, layer, score, mode)
        return metrics.curve_area(fractions, values)

    def __repr__(self) -> str:
        keeps, deletes = self.fractions("keep"), self.fractions("delete")
        lines = [f"FidelityResult of {self.images} image(s): methods {self.methods}, layers {self.layers}",
                 f"  top-{self.k}, fill {self.fill!r}, sign {self.sign!r}, seed {self.seed}; keep fractions {keeps}"
                 + (f", deletion fractions {deletes}" if deletes else "")]
        if PAPER_KEEP in keeps:
            for method in self.methods:
                means = [f"{layer} {float(self.values(method, layer).nanmean()):.3f}" for layer in self.layers
                         if (method, layer, "keep", PAPER_KEEP) in self.scores]
                if means:
                    lines.append(f"  top-{self.k} kept at {PAPER_KEEP:g}, {method}: " + ", ".join(means))
        if self.localisation:
            lines.append(f"  localisation for {len(self.localisation)} (method, layer) pair(s)")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  .table(), .values(method, layer, score, fraction), .curve(...), .area(...)")
        return "\n".join(lines)

    def table(self, score: str = "topk", mode: str = "keep", fractions: Sequence[float] | None = None,
              n_boot: int = 2000, level: float = 0.95) -> list[dict]:
        """One row per method x layer x fraction: ``mean``, ``ci_low``, ``ci_high`` over images (bootstrap)."""
        wanted = self.fractions(mode) if fractions is None else [float(f) for f in fractions]
        rows = []
        for method in self.methods:
            for layer in self.layers:
                for f in wanted:
                    if (method, layer, mode, f) not in self.scores:
                        continue
                    v = self.values(method, layer, score, f, mode)
                    mean, low, high = metrics.bootstrap_ci(v, n_boot, level, seed=self.seed)
                    rows.append({"method": method, "layer": layer, "keep": f, "images": int((~v.isnan()).sum()),
                                 "mean": mean, "ci_low": low, "ci_high": high})
        return rows


# ----------------------------------------------------------------------------------------------- the run


def _scores(full: torch.Tensor, masked: torch.Tensor, predicted: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    rows = torch.arange(len(full), device=full.device)
    c_full, c_masked = full[rows, predicted].double(), masked[rows, predicted].double()
    nan = torch.full_like(c_full, math.nan)
    return {
        "topk": metrics.topk_intersection(full, masked, k),
        "top1": (masked.argmax(1) == predicted).double(),
        "retained": torch.where(c_full > 0, c_masked / c_full, nan),
        "prob": F.softmax(masked.double(), 1)[rows, predicted],
    }


class _Runner:
    """Masked copies of one batch, queued and run through the network ``chunk`` at a time."""

    def __init__(self, model: nn.Module, chunk: int):
        self.model, self.chunk = model, chunk
        self.queue: list[tuple[Key, torch.Tensor]] = []
        self.done: dict[Key, torch.Tensor] = {}

    def add(self, key: Key, inputs: torch.Tensor) -> None:
        self.queue.append((key, inputs))
        if sum(len(x) for _, x in self.queue) >= self.chunk:
            self.flush()

    def run(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), exact_math(inputs.device):  # logits only, read here: no autograd at all
            return torch.cat([self.model(channels_last(inputs[s:s + self.chunk]))
                              for s in range(0, len(inputs), self.chunk)])

    def flush(self) -> None:
        if not self.queue:
            return
        logits = self.run(torch.cat([x for _, x in self.queue]))
        for (key, _), part in zip(self.queue, logits.split([len(x) for _, x in self.queue]), strict=True):
            self.done[key] = part
        self.queue.clear()


def _method_maps(method: str, model: nn.Module, dec, x: torch.Tensor, layer: str, offset: int,
                 seed: int) -> torch.Tensor | None:
    if method in FROM_DECOMPOSITION:
        return from_decomposition(dec, method, layer)
    if method == RANDOM:
        shape = tuple(dec.activation(layer).shape[-2:])
        return torch.stack([random_map(shape, seed, offset + i, layer) for i in range(len(x))]).to(x.device)
    if layer == INPUT and not METHODS[method].accepts_input:
        return None
    return attribute(method, model, x, dec.target, layer)


def _check(methods, keeps, curves, layers, k, sign, seed, chunk, progress,
           total) -> tuple[list[str], list[float], list[float]]:
    """Every argument of :func:`evaluate` but the model, the data and the fill, before any work."""
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise TypeError(f"methods must be a non-empty list of method names, e.g. ['ours', 'gradcam'], got {methods!r}")
    unknown = [m for m in methods if m != RANDOM and m not in METHODS and m not in FROM_DECOMPOSITION]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {RANDOM}, {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods {list(methods)} name one method twice")
    keeps_ = arguments.numbers("keeps", keeps, 0, 1)
    curves_ = arguments.numbers("curves", curves, 0, 1)
    if not keeps_ and not curves_:
        raise ValueError("keeps and curves are both empty: give at least one fraction")
    if layers is not None and not isinstance(layers, (str, Sequence)):
        raise TypeError(f"layers must be a layer name, a preset or a list of them, got {layers!r}")
    arguments.integer("k", k, 1)
    arguments.choice("sign", sign, SIGNS)
    arguments.integer("seed", seed, 0)
    arguments.integer("chunk", chunk, 1)
    arguments.flag("progress", progress)
    arguments.integer("total", total, 0, optional=True)
    return list(methods), keeps_, curves_


def evaluate(
    model: nn.Module,
    inputs: torch.Tensor | Iterable[Batch],
    methods: Sequence[str] = DEFAULT_METHODS,
    layers: str | Sequence[str] | None = None,
    keeps: Sequence[float] = (PAPER_KEEP,),
    *,
    curves: Sequence[float] = (),
    k: int = PAPER_K,
    fill: metrics.Fill = "zero",
    sign: str = "signed",
    seed: int = 0,
    chunk: int = 16,
    normalization=None,
    progress: bool = True,
    total: int | None = None,
) -> FidelityResult:
    """Run the fidelity experiment on every batch of ``inputs``.

    Args:
        model: a classifier in eval mode, on the device the work should run on (inputs are moved there).
        inputs: batches ``(B, 3, H, W)`` as the model receives them, or ``(images, masks)`` pairs with ``(B, H, W)``
            boolean object masks (``None`` allowed) for the pointing game (see :func:`batches`); a single
            ``(N, 3, H, W)`` tensor is split into batches of 8.
        methods: ``ours``, ``gradcam``, ``gradcam_relu``, ``gradient`` (all from one decomposition pass),
            ``random``, or any other key of :data:`pwawidgets.baselines.METHODS` (one more pass each).
        layers: layer names or presets (``"blocks"``); None means ``"input"`` (the paper's layer for a model is
            :func:`paper_layer`).
        keeps: fractions kept (the paper: 0.3).
        curves: fractions for deletion and insertion curves (e.g. :data:`CURVE_FRACTIONS`); none by default.
        k: the top-k of the intersection (the paper: 5).
        fill, sign: the protocol choices (see the module docstring); ``fill`` as in
            :func:`pwawidgets.metrics.fidelity`.
        seed: seeds the random maps and the bootstrap.
        chunk: masked images per forward pass.
        normalization: ``(mean, std)`` for ``fill="black"`` when the model carries no preprocessing.
        progress, total: a progress bar (``tqdm.auto``) counting ``total`` images.
    """
    from tqdm.auto import tqdm

    methods, keeps, curves = _check(methods, keeps, curves, layers, k, sign, seed, chunk, progress, total)
    keeps = sorted(set(keeps) | set(curves))
    curves = sorted(curves)
    fill_v = metrics.fill_value(fill, normalization_of(model, normalization))
    if isinstance(inputs, torch.Tensor):  # one stack of images: batches of 8
        total = len(inputs) if total is None else total
        inputs = batches(inputs, 8)
    elif not hasattr(inputs, "__iter__"):
        raise TypeError(f"inputs must be a (N, C, H, W) tensor or an iterable of batches, got {type(inputs).__name__}")
    device, dtype = model_device(model), model_dtype(model)
    names: list[str] | None = None
    out: dict[Key, dict[str, list[torch.Tensor]]] = {}
    loc: dict[tuple[str, str], dict[str, list[torch.Tensor]]] = {}
    predicted, notes, offset = [], [], 0
    bar = tqdm(total=total, unit="img", desc="fidelity", disable=not progress)
    for batch in inputs:
        images, masks = batch if isinstance(batch, (tuple, list)) else (batch, None)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
            raise ValueError("inputs must give (B, C, H, W) float batches (or (images, masks) pairs), got "
                             f"{type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
        if fill_v.dim() and fill_v.numel() != images.shape[1]:
            raise ValueError(f"fill has {fill_v.numel()} values for images with {images.shape[1]} channels")
        x = images.to(device=device, dtype=dtype)
        if names is None:
            names = [s.name for s in resolve_layers(model, layers)[0]]
        dec = decompose(model, x, None, names, keep_gradients=True)
        full, pred = dec.logits, dec.target
        predicted.append(pred.cpu())
        runner = _Runner(model, chunk)
        fill_t = fill_v.to(device=device, dtype=dtype)
        fill_t = fill_t.view(1, -1, 1, 1) if fill_t.dim() else fill_t
        blank: torch.Tensor | None = None
        for layer in names:
            for method in methods:
                maps = _method_maps(method, model, dec, x, layer, offset, seed)
                if maps is None:
                    note = f"{method} skipped at {layer!r}: it needs a feature layer"
                    notes += [] if note in notes else [note]
                    continue
                view = maps.abs() if sign == "abs" and method != RANDOM else maps
                if masks is not None:
                    m = masks.to(device)
                    found = loc.setdefault((method, layer), {"pointing": [], "share_inside": []})
                    found["pointing"].append(metrics.pointing_game(view, m).double().cpu())
                    found["share_inside"].append(metrics.positive_share_inside(view, m).cpu())
                ranks = metrics.relevance_ranks(metrics.to_image_grid(view, x.shape[-2:])).unsqueeze(1)
                cells = ranks[0].numel()
                for mode, fractions in (("keep", keeps), ("delete", curves)):
                    for f in fractions:
                        n = metrics.cells_kept(f, cells)
                        kept = n if mode == "keep" else cells - n
                        key = (method, layer, mode, f)
                        if kept == cells:
                            runner.done[key] = full
                        elif kept == 0:
                            if blank is None:
                                blank = runner.run(fill_t.expand_as(x).contiguous())
                            runner.done[key] = blank
                        else:
                            mask = ranks < n if mode == "keep" else ranks >= n
                            runner.add(key, torch.where(mask, x, fill_t))
        runner.flush()
        for key, logits in runner.done.items():
            for name, v in _scores(full, logits, pred, k).items():
                out.setdefault(key, {s: [] for s in SCORES})[name].append(v.cpu())
        offset += len(x)
        bar.update(len(x))
    bar.close()
    if names is None:
        raise ValueError("no images: inputs gave no batch")
    return FidelityResult(
        methods=[m for m in methods if any(key[0] == m for key in out)], layers=names, k=k,
        fill=fill if isinstance(fill, str) else tuple(fill_v.flatten().tolist()), sign=sign,
        seed=seed, predicted=torch.cat(predicted),
        scores={key: {s: torch.cat(v) for s, v in d.items()} for key, d in out.items()},
        localisation={key: {s: torch.cat(v) for s, v in d.items()} for key, d in loc.items()}, notes=notes,
    )
