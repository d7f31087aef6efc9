"""Where the bias comes from: the bias at a layer split exactly into the constants the network adds after it.

With the activation pattern frozen at the input, every operation after a layer tensor ``h`` is affine,
``out = D[in] + c`` (ReLU becomes a product by its mask, a cap a constant, a max-pool a fixed selection). Chaining
them gives, for the score ``S`` of one class, ``S = w . h + sum_ops <dS/d out_op, c_op>`` over the operations that
depend on ``h``: so the bias ``b = S - w . h`` splits exactly into these parts. ``c`` is, per operation kind
(:mod:`pwawidgets.kinds` says which): a convolution's or linear layer's bias, a BatchNorm's shift
``beta - gamma mu / sigma``, a cap's value where it holds (ReLU6, Hardtanh, clamp...), a fill value
(``torch.where``, ``masked_fill``, ``F.pad``), an added tensor that does not depend on ``h`` (a residual shortcut
around the layer). ReLU, max-pooling and products by constants add nothing.

How: the forward pass of the one pass template (:func:`pwawidgets.core.run_passes`) runs under a
``TorchFunctionMode`` that follows which values depend on which layer; for each operation that adds a constant it
computes ``c`` and keeps the output's gradient edge (taken at once, so that later in-place operations do not move
it); each class's backward pass also returns the gradient there, reduced at once to ``<dS/d out, c>``, ``(B,)``.
Module hooks name each constant after the module that adds it.

What no rule covers is never hidden: it is the entry :data:`REMAINDER`, ``b - sum(parts)``, with an
:class:`~pwawidgets.ExactnessWarning` when it is not ~0.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from . import kinds
from .calls import LayerPass, Normalization, Scores, Target
from .core import Reader, Request, run_passes
from .layers import INPUT, LayerSpec, check_model, resolve_layers, resolve_one
from .precision import ExactnessWarning
from .region_constants import CONSTANT_LABELS

REMAINDER = "other (not attributed)"
NORMALIZATION = "input normalisation"  # the source, and its kind
UNATTRIBUTED = "not attributed"
KIND_LABELS: tuple[str, ...] = (NORMALIZATION, *CONSTANT_LABELS, UNATTRIBUTED)
"""The kinds of source, in the order :meth:`BiasSources.by_kind` lists them."""

__all__ = ["BiasSources", "KIND_LABELS", "NORMALIZATION", "REMAINDER", "bias_sources", "bias_sources_at"]


# -------------------------------------------------------------------------------------------- the result


@dataclass(repr=False, eq=False)
class BiasSources(Mapping):
    """The bias at one layer, split into the constants that make it: ``{source name: (B,) or (B, k)}``.

    Sources are named after the module that adds them (``"features.3"``; ``"layer1.0.relu@1"`` for a module that
    runs several times; ``"model"`` for code in the model's own ``forward``), :data:`NORMALIZATION` for the input
    normalisation (``reference="raw"``) and :data:`REMAINDER` (always last) for what no rule covers. Entries come
    in the order the network adds them; ``kinds[name]`` is one of :data:`KIND_LABELS`.
    """

    layer: str
    parts: dict[str, torch.Tensor]
    kinds: dict[str, str]
    bias: torch.Tensor
    score: torch.Tensor
    target: torch.Tensor
    per_class: bool
    unmodelled: list[str] = field(default_factory=list)
    cells: dict[str, torch.Tensor] | None = None  # per-location maps, with pixel_maps=True

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.parts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def remainder(self) -> torch.Tensor:
        """What no rule attributed: ``bias - sum(other parts)``; ~0 when every constant was found."""
        return self.parts[REMAINDER]

    def parts_sum(self) -> torch.Tensor:
        """Sum of all parts, the remainder included (so it equals :attr:`bias`)."""
        return torch.stack(list(self.parts.values())).sum(0)

    def pixel_map(self, name: str) -> torch.Tensor:
        """Per location, one part summed over channels, ``(B, [k,] H, W)`` (needs ``pixel_maps=True``): as
        :meth:`pwawidgets.Decomposition.pixel_map` for a layer. Only constants added to 4-D tensors have one."""
        if self.cells is None:
            raise ValueError("maps were not kept: bias_sources(..., pixel_maps=True)")
        if name not in self.cells:
            raise KeyError(f"no pixel map for {name!r}; sources with one: {list(self.cells)}")
        return self.cells[name]

    def by_kind(self) -> dict[str, torch.Tensor]:
        """Parts summed by kind of source (conv/linear bias, BatchNorm shift, activation cap, shortcut...)."""
        out: dict[str, torch.Tensor] = {}
        for name, value in self.parts.items():
            kind = self.kinds[name]
            out[kind] = out[kind] + value if kind in out else value.clone()
        return {k: out[k] for k in KIND_LABELS if k in out}

    def top(self, n: int = 5, example: int = 0, column: int = 0) -> list[tuple[str, float]]:
        """The ``n`` largest parts (by magnitude) of one example (and, with a class axis, one column)."""
        def value(t: torch.Tensor) -> float:
            return float(t[example, column] if self.per_class else t[example])

        ranked = sorted(((name, value(t)) for name, t in self.parts.items()), key=lambda p: -abs(p[1]))
        return ranked[:n]

    def __repr__(self) -> str:
        top = ", ".join(f"{name!r}: {value:.4g}" for name, value in self.top(5) if name != REMAINDER)
        rest = float(self.remainder[0, 0] if self.per_class else self.remainder[0])
        return (f"BiasSources(layer={self.layer!r}, {len(self) - 1} sources; example 0, largest: {top}; "
                f"remainder: {rest:.2g})")


# -------------------------------------------------------------------------------------------- the calls


def bias_sources(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    layer: str | None = INPUT,
    *,
    reference: str = "normalized",
    normalization: Normalization | None = None,
    pixel_maps: bool = False,
    allow_non_affine: bool = False,
    strict: bool = False,
) -> BiasSources:
    """Split the bias at ``layer`` exactly into the parts due to each constant the network adds after it.

    Args:
        model, inputs, target, reference, normalization, allow_non_affine, strict: as for
            :func:`pwawidgets.decompose` (``target``: an int, one per example, ``(B, k)``, ``"top5"`` or None).
        layer: one layer name (``"input"`` or None, a module name, ``"conv1"``...), not a preset.
        pixel_maps: also keep each part per location (summed over channels), read with
            :meth:`BiasSources.pixel_map`, for every constant added to a 4-D tensor.

    Returns:
        :class:`BiasSources`, a mapping ``{source: (B,) or (B, k)}`` whose values sum to
        ``decompose(model, inputs, target, [layer]).bias[layer]``; ``.bias``, ``.score`` and ``.remainder``.
    """
    spec = resolve_one(check_model(model), layer)
    found = _sources(model, inputs, [spec.name], Request(target, [spec.name], reference, normalization,
                                                           allow_non_affine, strict), pixel_maps)
    return found[spec.name]


def bias_sources_at(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    layers: str | Sequence[str] | None = ("input", "blocks"),
    *,
    reference: str = "normalized",
    normalization: Normalization | None = None,
    pixel_maps: bool = False,
    allow_non_affine: bool = False,
    strict: bool = False,
) -> dict[str, BiasSources]:
    """:func:`bias_sources` at several layers (names or presets, not ``"all"``) from one forward pass and one
    backward pass per class: ``{layer: BiasSources}``. A constant's part does not depend on the layer; which
    constants make up each layer's bias does (a constant after layer A but before layer B counts for A only)."""
    specs, wants_all = resolve_layers(check_model(model), layers)
    if wants_all:
        raise ValueError("name the layers (or 'blocks'); 'all' is not supported by bias_sources_at")
    names = [s.name for s in specs]
    return _sources(model, inputs, names, Request(target, names, reference, normalization, allow_non_affine,
                                                    strict), pixel_maps)


def _sources(model, inputs, names: list[str], request: Request, pixel_maps: bool) -> dict[str, BiasSources]:
    reader = _SourceReader(pixel_maps)
    passes, result = run_passes(model, inputs, request, reader)
    return {p.name: reader.result(i, p, result) for i, p in enumerate(passes)}


# -------------------------------------------------------------------------------------------- the reader


@dataclass(eq=False)
class _Constant:
    """One constant ``c`` added to an output after the layers of ``layers`` (a bit per layer), and its parts
    ``<dS/d out, c>`` per class (read from the gradient at the output's edge)."""

    key: tuple[str, int, str]  # (module name, call of that module, label)
    c: torch.Tensor
    layers: int
    parts: dict[int, torch.Tensor] = field(default_factory=dict)  # class column -> (B,)
    cells: dict[int, torch.Tensor] = field(default_factory=dict)  # class column -> (B, H, W)


def _tensors(values) -> Iterator[torch.Tensor]:
    for v in values:
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from (u for u in v if isinstance(u, torch.Tensor))


class _Watch(TorchFunctionMode):
    """Follows which values depend on which layers, and registers the constants operations add to them."""

    def __init__(self, reader: _SourceReader):
        super().__init__()
        self.reader = reader

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reader = self.reader
        bits = 0
        for t in _tensors((*args, *kwargs.values())):
            bits |= reader.marks.get(t, 0)
        if not bits:
            return func(*args, **kwargs)
        kind = kinds.kind_of_call(func)
        c = None
        if kind is not None and kind.constant is not None:
            with torch.no_grad():  # read before the call: an in-place operation overwrites its input
                c = kind.constant(func, args, kwargs, reader.depends)
        out = func(*args, **kwargs)
        floats = [t for t in _tensors(out if isinstance(out, (tuple, list)) else (out,)) if t.is_floating_point()]
        if (floats or out is None) and (kind is None or kind.category == kinds.SMOOTH):  # None: in place (setitem)
            reader.unmodelled.add(getattr(func, "__name__", repr(func)))
        for t in floats:
            reader.marks[t] = reader.marks.get(t, 0) | bits
        if c is not None and isinstance(out, torch.Tensor) and out.requires_grad:
            reader.add(kind.adds, out, c, bits)
        return out


class _SourceReader(Reader):
    """The reader of :func:`bias_sources`: watches the forward pass, reads each constant's part in the backward
    passes (at gradient edges), the input normalisation's from the input's gradient."""

    def __init__(self, pixel_maps: bool):
        self.pixel_maps = pixel_maps
        self.marks: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.constants: list[_Constant] = []
        self.edge_list: list = []  # the gradient edge of each constant's output
        self.unmodelled: set[str] = set()
        self.stack: list[tuple[str, int]] = []  # modules running now: (name, call)
        self.calls: dict[str, int] = {}
        self.norm: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor | None]]] = {}  # layer -> class -> part

    def depends(self, value) -> bool:
        return isinstance(value, torch.Tensor) and bool(self.marks.get(value, 0))

    @contextlib.contextmanager
    def watch(self, model: nn.Module, modules: dict[str, nn.Module], specs: list[LayerSpec], x: torch.Tensor):
        layer_bits: dict[str, list[tuple[int | None, int]]] = {}
        for i, spec in enumerate(specs):
            if spec.module is None:
                self.marks[x] = self.marks.get(x, 0) | 1 << i
            else:
                layer_bits.setdefault(spec.module, []).append((spec.call, 1 << i))

        def enter(name):
            def hook(module, args):
                self.stack.append((name, self.calls.get(name, 0)))
                self.calls[name] = self.calls.get(name, 0) + 1
            return hook

        def leave(name):
            wanted = layer_bits.get(name, ())

            def hook(module, args, output):
                _, call = self.stack.pop()
                for want, bit in wanted:  # after the layer capture's hook: ``output`` is what the network goes on with
                    if isinstance(output, torch.Tensor) and (want is None or want == call):
                        self.marks[output] = self.marks.get(output, 0) | bit
            return hook

        handles = []
        try:
            for name, module in modules.items():
                handles.append(module.register_forward_pre_hook(enter(name)))
                handles.append(module.register_forward_hook(leave(name), always_call=True))
            with _Watch(self):
                yield
        finally:
            for handle in handles:
                handle.remove()
            self.marks = WeakIdKeyDictionary()

    def add(self, label: str, out: torch.Tensor, c: torch.Tensor, bits: int) -> None:
        name, call = self.stack[-1] if self.stack else ("", 0)
        self.constants.append(_Constant((name, call, label), c.detach(), bits))
        self.edge_list.append(get_gradient_edge(out))  # taken now: later in-place operations do not move it

    def edges(self) -> list:
        return self.edge_list

    def read_edges(self, j: int, grads) -> None:
        for constant, g in zip(self.constants, grads, strict=True):
            if g is not None:  # None: the score does not reach this output
                constant.parts[j], cells = _inner(g, constant.c, self.pixel_maps)
                if cells is not None:
                    constant.cells[j] = cells

    def read(self, j: int, layer: LayerPass, w: torch.Tensor) -> None:
        super().read(j, layer, w)
        if layer.mean is not None:  # raw pixels: b_raw = b_normalised - sum w_raw * mean
            shift = -(w * layer.mean)
            cells = shift.sum(1) if self.pixel_maps and w.dim() == 4 else None
            self.norm.setdefault(id(layer), {})[j] = (shift.flatten(1).sum(1), cells)

    def _names(self) -> dict[tuple[str, int, str], str]:
        """Source names: the module (``@call`` when it ran several times), with the label when it adds several
        kinds of constant."""
        labels: dict[str, set[str]] = {}
        for c in self.constants:
            labels.setdefault(c.key[0], set()).add(c.key[2])
        names = {}
        for key in dict.fromkeys(c.key for c in self.constants):
            module, call, label = key
            name = (module or "model") + (f"@{call}" if self.calls.get(module, 0) > 1 else "")
            names[key] = name + (f" ({label})" if len(labels[module]) > 1 else "")
        return names

    def result(self, i: int, layer: LayerPass, result: Scores) -> BiasSources:
        k = result.scores.shape[1]
        score = result.scores.detach()
        bias = score - layer.totals

        def column(table: dict[int, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
            return torch.stack([table.get(j, torch.zeros_like(like)) for j in range(k)], 1)

        parts: dict[str, torch.Tensor] = {}
        labels: dict[str, str] = {}
        cells: dict[str, torch.Tensor | None] = {}
        zero = score.new_zeros(score.shape[0])
        if layer.mean is not None:
            found = self.norm[id(layer)]
            parts[NORMALIZATION] = column({j: p for j, (p, _) in found.items()}, zero)
            labels[NORMALIZATION] = NORMALIZATION
            if self.pixel_maps:
                cells[NORMALIZATION] = column({j: m for j, (_, m) in found.items()}, found[0][1])
        names = self._names()
        for c in self.constants:
            if not c.layers >> i & 1:
                continue
            name = names[c.key]
            part = column(c.parts, zero)
            parts[name] = parts[name] + part if name in parts else part
            labels[name] = c.key[2]
            if self.pixel_maps and c.cells:
                grid = column(c.cells, next(iter(c.cells.values())))
                old = cells.get(name, grid)
                cells[name] = None if old is None or old.shape != grid.shape else (grid if old is grid else old + grid)
        attributed = torch.stack(list(parts.values())).sum(0) if parts else torch.zeros_like(bias)
        parts[REMAINDER], labels[REMAINDER] = bias - attributed, UNATTRIBUTED
        squeeze = result.squeeze
        worst = _unattributed(parts, bias, score)
        if worst:
            _warn_remainder(worst, self.unmodelled, layer.name)
        kept = {n: squeeze(m) for n, m in cells.items() if m is not None} if self.pixel_maps else None
        return BiasSources(layer.name, {n: squeeze(p) for n, p in parts.items()}, labels, squeeze(bias),
                           squeeze(score), squeeze(result.targets), result.per_class, sorted(self.unmodelled), kept)


def _inner(g: torch.Tensor, c: torch.Tensor, maps: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``<g, c>`` per example ``(B,)`` for ``c`` broadcastable to ``g`` (the gradient is summed over the axes ``c``
    is broadcast along first: one pass, no temporary of ``g``'s size), and with ``maps`` its per-location map."""
    c = c.reshape((1,) * (g.dim() - c.dim()) + tuple(c.shape))
    c = c if c.dtype == g.dtype else c.to(g.dtype)
    if maps and g.dim() == 4:
        cells = (g * c).sum(1)
        return cells.flatten(1).sum(1), cells
    axes = [d for d in range(1, g.dim()) if c.shape[d] == 1 < g.shape[d]]
    reduced = g.sum(axes, keepdim=True) if axes else g
    return (reduced * c).reshape(g.shape[0], -1).sum(1), None


def _unattributed(parts: dict, bias: torch.Tensor, score: torch.Tensor) -> float:
    """The largest remainder relative to the score's scale, where it is beyond rounding (else 0)."""
    scale = score.abs() + (score - bias).abs() + torch.stack(list(parts.values())).abs().sum(0)
    rest = parts[REMAINDER].abs()
    if not bool((rest > torch.finfo(bias.dtype).eps ** 0.5 * scale).any()):
        return 0.0
    return float((rest / scale.clamp_min(torch.finfo(bias.dtype).tiny)).max())


def _warn_remainder(worst: float, unmodelled: set[str], layer: str) -> None:
    seen = f"; operations on values after the layer that no rule covers: {sorted(unmodelled)}" if unmodelled else ""
    warnings.warn(f"part of the bias at {layer!r} is not attributed to any source (up to {worst:.2g} of the "
                  f"score's scale): it is reported as {REMAINDER!r}{seen}", ExactnessWarning, 5)
