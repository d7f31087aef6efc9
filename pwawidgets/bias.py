"""Where the bias comes from: the bias at a layer split exactly into the constants the network adds after it.

Inside the input's linear region every operation after a layer tensor ``h`` is affine, ``out = A(in) + c``.
Chaining them gives, for the score ``S`` of one class,

    S = w . h + sum_m <dS/d out_m, c_m> + sum_v <dS/d v, v>,

where ``m`` runs over the operations after ``h`` that add a constant ``c_m`` (convolution and linear biases,
BatchNorm shifts ``beta - gamma mu / sigma``, ReLU6/Hardtanh caps on saturated units, Hardsigmoid's 0.5, a
custom affine module's ``m(0)``...) and ``v`` over values that reach the score without passing through ``h``
(a residual shortcut taken before ``h``, a tensor made inside ``forward``). So the bias ``b = S - w . h`` splits
exactly into these parts: :func:`bias_sources` (one layer), :func:`bias_sources_at` (several). One forward pass
and one backward pass per class serve every source, at every layer asked for.

What no rule covers (a constant added by functional code the rules do not know) is never hidden: it is the
entry :data:`REMAINDER`, ``b - sum(parts)``, with an :class:`~pwawidgets.ExactnessWarning` when it is not ~0.

Where the constants are found: first by reading the autograd graph of a plain forward pass
(:mod:`pwawidgets.bias_graph`: biases, BatchNorm shifts, ReLU6/Hardtanh caps, zero padding; residual shortcuts
around the layer from a forward pass that keeps module outputs), so that the forward pass costs about what
:func:`~pwawidgets.decompose`'s does; where the graph holds anything else (a constant added in functional code, a
custom module), by tracing the forward pass (:mod:`pwawidgets.bias_trace`), which knows every rule. Which route a
model and layer set needs is learnt on the first call and remembered.

How the parts are read: a hook on the autograd node of the output a constant is added to reduces that output's
gradient once it is computed, so nothing is kept for later. With one example, a BatchNorm's or a linear layer's part
comes from autograd's own gradient of its beta or bias, and a cap between two BatchNorms from theirs; these rest on
the network's structure, so the parts are checked to sum to the bias and, when they do not, the call runs again
(traced) reading every part from hooks. A value read in the backward pass that was changed in place after its use
makes the call run again with copies.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .audit import require_piecewise_affine
from .bias_graph import CAPTURE as CAPTURED
from .bias_graph import READ, GraphForward, read_graph
from .bias_rules import (
    BIAS,
    BN_SHIFT,
    CAP,
    CONSTANT,
    KIND_LABELS,
    MODULE_OFFSETS,
    NORM,
    OFFSET,
    PADDING,
    SHORTCUT,
    UNATTRIBUTED,
)
from .bias_trace import Recorder, Source, Tracer
from .calls import (
    Normalization,
    Target,
    check_after_passes,
    input_normalization,
    left_as_found,
    logits_of,
    prepare_inputs,
    select_scores,
)
from .layers import INPUT, LayerSpec, check_model, resolve_layers, resolve_one
from .placement import model_dtype
from .precision import ExactnessWarning, check_precision, exact_math

REMAINDER = "other (not attributed)"
NORMALIZATION = "input normalisation"
GRAPH, CAPTURE, TRACE, COPY = "graph", "graph with values", "trace", "trace with copies"  # routes, in this order
_ROUTES: dict[int, tuple[weakref.ref, dict]] = {}  # id(model) -> (the model, {layer names: first route to take})


def _route(model: nn.Module, key: tuple[str, ...]) -> str:
    """The route to take first for this model and these layers: the graph route until it has given up on them."""
    entry = _ROUTES.get(id(model))
    return entry[1].get(key, GRAPH) if entry is not None and entry[0]() is model else GRAPH


def _remember(model: nn.Module, key: tuple[str, ...], route: str) -> None:
    """Take ``route`` first for this model and these layers from now on (forgotten with the model)."""
    ident = id(model)
    entry = _ROUTES.get(ident)
    if entry is None or entry[0]() is not model:
        try:
            ref = weakref.ref(model, lambda _: _ROUTES.pop(ident, None))
        except TypeError:  # not weakly referable: nothing remembered
            return
        entry = _ROUTES[ident] = (ref, {})
    entry[1][key] = route


__all__ = ["BiasSources", "KIND_LABELS", "MODULE_OFFSETS", "NORMALIZATION", "REMAINDER", "bias_sources",
           "bias_sources_at", "BIAS", "BN_SHIFT", "CAP", "CONSTANT", "NORM", "OFFSET", "PADDING", "SHORTCUT",
           "UNATTRIBUTED"]

# -------------------------------------------------------------------------------------------- the result


@dataclass(repr=False, eq=False)
class BiasSources(Mapping):
    """The bias at one layer, split into the constants that make it: ``{source name: (B,) or (B, k)}``.

    Sources are named after modules (``"features.3"``, ``"classifier.0"``), parameters (``"pos_embed"``),
    ``"<module> (shortcut)"`` for values that reach the score around the layer, :data:`NORMALIZATION` for the
    input normalisation (``reference="raw"``) and :data:`REMAINDER` (always last) for what no rule covers, so
    ``sum(values) == bias`` always. Entries come in the order the network adds them. ``kinds[name]`` is one of
    :data:`KIND_LABELS`; ``maps[name]`` the per-location map (with ``maps=True``).
    """

    layer: str
    parts: dict[str, torch.Tensor]
    kinds: dict[str, str]
    maps: dict[str, torch.Tensor]
    bias: torch.Tensor
    score: torch.Tensor
    target: torch.Tensor
    per_class: bool
    unmodelled: list[str] = field(default_factory=list)

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

    def total(self) -> torch.Tensor:
        """Sum of all parts (equals :attr:`bias`)."""
        return torch.stack(list(self.parts.values())).sum(0)

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
        more = "..." if len(self) > 6 else ""
        return f"BiasSources(layer={self.layer!r}, {len(self)} sources: {list(self)[:6]}{more})"


def bias_sources(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    layer: str = INPUT,
    *,
    reference: str = "normalized",
    normalization: Normalization | None = None,
    maps: bool = False,
    allow_non_affine: bool = False,
    strict: bool = False,
) -> BiasSources:
    """Split the bias at ``layer`` exactly into the parts due to each constant the network adds after it.

    Args:
        model, inputs, target, reference, normalization, allow_non_affine, strict: as for
            :func:`pwawidgets.decompose` (``target``: an int, one per example, ``(B, k)``, ``"top5"`` or None).
        layer: one layer name (``"input"``, a module name, ``"conv1"``...), not a preset.
        maps: also keep, in ``.maps[name]``, the per-location map ``(B, [k,] H, W)`` of every constant added to a
            4-D tensor (convolution biases, BatchNorm shifts, caps, shortcuts): the part summed over channels.

    Returns:
        :class:`BiasSources`, a mapping ``{source: (B,) or (B, k)}`` whose values sum to
        ``decompose(model, inputs, target, [layer]).bias[layer]``; ``.bias``, ``.score`` and ``.remainder``.
    """
    model = check_model(model)
    modules = dict(model.named_modules())
    spec = resolve_one(model, layer, modules)
    return _trace(model, modules, inputs, target, [spec], reference, normalization, maps, allow_non_affine,
                  strict)[spec.name]


def bias_sources_at(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    layers: str | Sequence[str] = ("input", "blocks"),
    *,
    reference: str = "normalized",
    normalization: Normalization | None = None,
    maps: bool = False,
) -> dict[str, BiasSources]:
    """:func:`bias_sources` at several layers (names or presets, not ``"all"``) from the same single forward pass
    and one backward pass per class: ``{layer: BiasSources}``. A constant's part does not depend on the layer;
    which constants (and shortcuts) make up each layer's bias does."""
    model = check_model(model)
    modules = dict(model.named_modules())
    specs, wants_all = resolve_layers(model, layers, modules)
    if wants_all or not specs:
        raise ValueError("name the layers (or 'blocks'); 'all' is not supported here")
    return _trace(model, modules, inputs, target, specs, reference, normalization, maps, False, False)


def _trace(model, modules, inputs, target, specs: list[LayerSpec], reference, normalization, maps, allow_non_affine,
           strict) -> dict[str, BiasSources]:
    if torch.is_inference_mode_enabled():
        raise RuntimeError("bias_sources needs autograd: call it outside torch.inference_mode()")
    wants_input = any(spec.module is None for spec in specs)
    norm = input_normalization(model, normalization, reference, wants_input)
    require_piecewise_affine(model, allow_non_affine, strict, modules)
    x = prepare_inputs(model, inputs, wants_input)
    check_precision(model_dtype(model, x.dtype), strict)
    with left_as_found(model, modules, x.device):  # a model in training mode keeps its statistics and random state
        return _run_routes(model, modules, specs, x, target, norm, maps)


def _run_routes(model, modules, specs: list[LayerSpec], x: torch.Tensor, target, norm, maps: bool
            ) -> dict[str, BiasSources]:
    """The forward pass (graph route first, as remembered), the backward passes and the checks; run again on the
    next route when a route gives up or its parts do not sum to the bias."""
    key = tuple(spec.name for spec in specs)
    route = _route(model, key)
    while True:
        if route in (GRAPH, CAPTURE):
            tracer, logits, said = _forward_graph(model, modules, specs, x, maps, route == CAPTURE)
            if tracer is None:  # a shortcut needs the values a capturing pass keeps; or the tracer is needed
                route = CAPTURE if said == CAPTURED and route == GRAPH else TRACE
                _remember(model, key, route)
                continue
        else:
            tracer, logits = _forward(model, modules, specs, x, route == COPY, maps)
        try:
            if route == TRACE and tracer.changed():  # a value read in the backward pass was changed in place later on
                route = COPY
                continue
            result, in_range = select_scores(target, logits)
            flat = not result.per_class  # one class per example: (B,) parts straight away
            with exact_math(x.device):
                tables = _passes(tracer, specs, result.scores, norm, maps, flat)
            score = result.squeeze(result.scores.detach())
            worst = [_unattributed(parts, bias, score) for parts, _, _, bias in tables]
            fast = route in (GRAPH, CAPTURE) or bool(tracer.by_param)
        finally:
            tracer.release()
        if route == COPY or not fast or not any(worst):
            break
        if route in (GRAPH, CAPTURE):  # the graph route missed a constant: it is not used on this model again
            _remember(model, key, TRACE)
        route = COPY  # else a parameter's gradient may have mixed in a use no rule saw: again, with hooks only
    check_after_passes(x, result, in_range)
    out = {}
    for spec, (parts, kinds_, grids, bias), rest in zip(specs, tables, worst, strict=True):
        if rest:
            _warn_remainder(rest, tracer.unmodelled, spec.name)
        out[spec.name] = BiasSources(spec.name, parts, kinds_, grids, bias, score, result.squeeze(result.targets),
                                     result.per_class, sorted(tracer.unmodelled))
    return out


def _forward(model, modules, specs: list[LayerSpec], x: torch.Tensor, copy: bool, maps: bool = False
             ) -> tuple[Tracer, torch.Tensor]:
    with exact_math(x.device), torch.enable_grad(), Tracer(model, modules, specs, x.shape[0]) as tracer:
        tracer.copy, tracer.want_maps = copy, maps
        fed = x.clone() if x.requires_grad else x
        for i, spec in enumerate(specs):
            if spec.module is None:
                tracer.h[i] = (x.detach(), x)
                tracer.mark(fed, 1 << i)
        try:
            logits = logits_of(model(fed))
        except BaseException:
            tracer.release()
            raise
    tracer.finish(logits.grad_fn)
    _check_layers_ran(tracer, specs)
    return tracer, logits


def _forward_graph(model, modules, specs: list[LayerSpec], x: torch.Tensor, maps: bool, capture: bool
                   ) -> tuple[Recorder | None, torch.Tensor, str]:
    """A plain forward pass whose sources are read off the autograd graph (:mod:`pwawidgets.bias_graph`); no
    recorder where the graph holds something only the tracer reads, or (without ``capture``) a shortcut."""
    recorder = Recorder(model, modules, specs, x.shape[0])
    recorder.want_maps = maps
    with exact_math(x.device), torch.enable_grad(), GraphForward(recorder, capture) as hooks:
        fed = x.clone() if x.requires_grad else x
        for i, spec in enumerate(specs):
            if spec.module is None:
                recorder.h[i] = (x.detach(), x)
        logits = logits_of(model(fed))
    _check_layers_ran(recorder, specs)
    said = read_graph(recorder, logits, hooks)
    if said != READ:
        return None, logits, said
    recorder.finish(uses=hooks.uses)
    return recorder, logits, said


def _check_layers_ran(recorder: Recorder, specs: list[LayerSpec]) -> None:
    for i, spec in enumerate(specs):
        if i not in recorder.h:
            raise RuntimeError(f"layer {spec.name!r} (module {spec.module!r}) did not run in the forward pass"
                               + (f" {spec.call + 1} times" if spec.call is not None else ""))


def _passes(tracer: Recorder, specs: list[LayerSpec], scores: torch.Tensor, norm, want_maps: bool, flat: bool
            ) -> list[tuple]:
    """One backward pass per class: the gradient at every layer; the hooks of the sources' nodes compute their
    parts on the way. Returns per layer ``(parts, kinds, maps, bias)``, with a class axis unless ``flat``."""
    batch, k = scores.shape
    layers = []
    for i, spec in enumerate(specs):
        value, node = tracer.h[i]
        scale = mean = None
        if spec.module is None and norm is not None:
            mean = torch.as_tensor(norm[0], dtype=value.dtype, device=value.device).view(1, -1, 1, 1)
            scale = torch.as_tensor(norm[1], dtype=value.dtype, device=value.device).view(1, -1, 1, 1)
            value = value * scale + mean
        layers.append((spec, node, value, mean, scale, {}, {}, [None] * k))
    by_param = [s for s in tracer.sources if s.param is not None]
    derived = [s for s in tracer.sources if s.between]
    norms = list({id(n): n for s in derived for n in s.between}.values())  # BatchNorms the caps are read from
    inputs = [layer[1] for layer in layers] + [s.param for s in by_param] + [s.gamma for s in norms]
    read_parameters = _ParameterParts(by_param, norms, derived) if by_param else None
    for j in range(k):
        tracer.klass = j
        grads = torch.autograd.grad(scores[:, j].sum(), inputs, retain_graph=j < k - 1, allow_unused=True)
        if read_parameters is not None:
            read_parameters(j, grads[len(layers):])
        for (spec, _, value, mean, scale, parts, grids, totals), g in zip(layers, grads, strict=False):
            if g is None:
                raise ValueError(f"the score does not depend on layer {spec.name!r} through autograd: forward() cuts "
                                 "it off (detach(), .data, torch.no_grad()). Remove the cut, or choose a later layer.")
            if scale is not None:
                shift = g * (mean / scale)
                _put(parts, NORMALIZATION, -shift.reshape(batch, -1).sum(1), j, k)
                if want_maps:
                    _put(grids, NORMALIZATION, -shift.sum(1), j, k)
                g = g / scale
            totals[j] = (g * value).flatten(1).sum(-1)
    out = []
    for i, (_, _, _, _, scale, parts, grids, totals) in enumerate(layers):
        kinds_ = {NORMALIZATION: NORM} if scale is not None else {}
        for s in tracer.sources:
            if s.layers >> i & 1:
                kinds_.setdefault(s.name, s.kind)
                parts.setdefault(s.name, [None] * k)
                for j, part, grid in s.found:
                    _put(parts, s.name, part, j, k)
                    if grid is not None:
                        _put(grids, s.name, grid, j, k)
        zeros = scores.new_zeros(batch)
        if flat:  # k == 1
            parts = {n: zeros if columns[0] is None else columns[0] for n, columns in parts.items()}
            bias = scores.detach()[:, 0] - totals[0]
        else:
            parts = {n: torch.stack([zeros if c is None else c for c in columns], 1) for n, columns in parts.items()}
            bias = scores.detach() - torch.stack(totals, 1)
        attributed = torch.stack(list(parts.values())).sum(0) if parts else torch.zeros_like(bias)
        parts[REMAINDER], kinds_[REMAINDER] = bias - attributed, UNATTRIBUTED
        maps = {}
        for n, columns in grids.items():
            if columns is not None:
                shape = next(c for c in columns if c is not None)
                maps[n] = columns[0] if flat else torch.stack([shape.new_zeros(shape.shape) if c is None else c
                                                               for c in columns], 1)
        out.append((parts, kinds_, maps, bias))
    return out


_LAYOUTS: dict[tuple, tuple[torch.Tensor, ...]] = {}  # index tensors of _ParameterParts, by layout and device


class _ParameterParts:
    """One example: the parts read from parameter gradients, all at once (a few operations, not a few per source).
    A per-channel constant's part is ``<dS/d param, constant>``; a BatchNorm's ``<dS/d out, out>`` is
    ``<gamma, dS/d gamma> + <beta, dS/d beta>``; a cap between two BatchNorms (only bias-free linear steps after it)
    is ``<dS/d out, out> - <dS/d in, in>``, read from the BatchNorm before it and the one after (whose input is the
    cap's output carried on, less that BatchNorm's own part). The index tensors depend only on the layout (sizes
    and links), so they are made once per layout and device: no host-to-device copy, no wait, on later calls."""

    def __init__(self, by_param: list[Source], norms: list[Source], derived: list[Source]):
        self.by_param, self.norms, self.derived = by_param, norms, derived
        first = by_param[0].param
        position = {id(s): i for i, s in enumerate(by_param)}
        norm_index = {id(s): i for i, s in enumerate(norms)}
        sizes = tuple(s.param.numel() for s in by_param)
        widths = tuple(s.gamma.numel() for s in norms)
        links = tuple((norm_index[id(s.between[0])], norm_index[id(s.between[1])], position[id(s.between[1])])
                      for s in derived)
        key = (sizes, widths, tuple(position[id(s)] for s in norms), links, first.device)
        if key not in _LAYOUTS:
            if len(_LAYOUTS) > 64:
                _LAYOUTS.clear()
            long = {"dtype": torch.long, "device": first.device}
            _LAYOUTS[key] = (
                torch.repeat_interleave(torch.arange(len(sizes), **long), torch.tensor(sizes, **long)),
                torch.repeat_interleave(torch.arange(len(widths), **long), torch.tensor(widths, **long)),
                torch.tensor(key[2], **long),
                *(torch.tensor([link[i] for link in links], **long) for i in range(3)))
        self.segments, self.norm_segments, self.norm_at, *self.caps = _LAYOUTS[key]
        self.constants = torch.cat([s.channel[0].reshape(-1).to(first.dtype) for s in by_param])
        self.betas = torch.cat([s.param.detach().reshape(-1) for s in by_param])  # read at BatchNorms only
        if norms:
            self.gammas = torch.cat([s.gamma.detach().reshape(-1) for s in norms])

    def __call__(self, j: int, grads: Sequence[torch.Tensor | None]) -> None:
        def flat(gs: Sequence[torch.Tensor | None], params: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(gs, params,
                                                                                                   strict=True)])

        n = len(self.by_param)
        beta_grads = flat(grads[:n], [s.param for s in self.by_param])
        parts = torch.zeros(n, dtype=beta_grads.dtype, device=beta_grads.device).index_add_(
            0, self.segments, beta_grads * self.constants)
        for s, part in zip(self.by_param, parts.view(-1, 1).unbind(), strict=True):
            s.found.append((j, part, None))
        if not self.derived:
            return
        gamma_grads = flat(grads[n:], [s.gamma for s in self.norms])
        totals = torch.zeros(len(self.norms), dtype=parts.dtype, device=parts.device).index_add_(
            0, self.norm_segments, gamma_grads * self.gammas)
        totals += torch.zeros(n, dtype=parts.dtype, device=parts.device).index_add_(
            0, self.segments, beta_grads * self.betas)[self.norm_at]
        before, after, after_part = self.caps
        caps = totals[after] - parts[after_part] - totals[before]
        for s, part in zip(self.derived, caps.view(-1, 1).unbind(), strict=True):
            s.found.append((j, part, None))


def _put(table: dict, name: str, value: torch.Tensor, j: int, k: int) -> None:
    """Add ``value`` to column ``j`` of ``table[name]`` (a list of k columns, None where nothing was added). A map
    that comes at two resolutions (a module that runs at several) has no single grid: it becomes None."""
    columns = table.setdefault(name, [None] * k)
    if columns is None:
        return
    old = columns[j]
    if old is not None and old.shape != value.shape:
        table[name] = None
        return
    columns[j] = value if old is None else old + value


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
                  f"score's scale): it is reported as {REMAINDER!r}{seen}", ExactnessWarning, 4)
