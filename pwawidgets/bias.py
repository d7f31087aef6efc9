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
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.autograd.graph import get_gradient_edge
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from . import kinds
from .audit import require_piecewise_affine
from .bias_rules import (
    ADD,
    BIAS,
    BIASED,
    BN_SHIFT,
    CAP,
    CAPS,
    CAT,
    CONSTANT,
    IN_PLACE,
    KIND_LABELS,
    MODULE_OFFSETS,
    NEEDS_INPUT,
    NO_CONSTANT,
    NORM,
    OFFSET,
    PADDING,
    RSUB,
    SHORTCUT,
    SUB,
    UNATTRIBUTED,
    Terms,
    additive_terms,
    batch_norm_shifts,
    capped_node,
    capped_part,
    caps,
    channel_part,
    channel_view,
    contribution,
    hardsigmoid_offset,
    is_number,
)
from .calls import (
    Normalization,
    Target,
    check_after_passes,
    input_normalization,
    logits_of,
    prepare_inputs,
    select_scores,
)
from .layers import INPUT, LayerSpec, resolve_layers, resolve_one
from .placement import model_dtype
from .precision import ExactnessWarning, check_precision, exact_math

REMAINDER = "other (not attributed)"
NORMALIZATION = "input normalisation"
_CONTAINER = object()  # the "kind" of a module with children

__all__ = ["BiasSources", "KIND_LABELS", "MODULE_OFFSETS", "NORMALIZATION", "REMAINDER", "bias_sources",
           "bias_sources_at", "BIAS", "BN_SHIFT", "CAP", "CONSTANT", "NORM", "OFFSET", "PADDING", "SHORTCUT",
           "UNATTRIBUTED"]

# ---------------------------------------------------------------------------------------- the one forward


@dataclass
class _Source:
    """One constant: the constant itself and the layers it lies after (a bit per layer). Its part is computed in
    the backward pass, by a hook on the node of the output it is added to, once per class."""

    name: str
    kind: str
    terms: Terms
    layers: int  # bit i set: the constant is added after layer i (it is part of that layer's bias)
    view: Callable[[torch.Tensor], torch.Tensor] | None = None  # the part of that output's gradient it meets
    capped: torch.Tensor | None = None  # a clamp's output: its part is <g_out - g_in, out> (see capped_part)
    param: torch.Tensor | None = None  # one example: the parameter that moves a per-channel constant (see add_channel)
    channel: tuple = ()  # a per-channel constant: (vector (C,), channel axis of the output it is added to)
    output: torch.Tensor | None = None  # that output, until a hook on its autograd node is registered
    found: list = field(default_factory=list)  # (class index, part (B,), map or None), one per backward pass


def _tensors_in(args, kwargs) -> Iterator[torch.Tensor]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


class _Tracer(TorchFunctionMode):
    """One forward pass that marks every value with the layers it is computed from (a bit per layer) and records,
    at each operation on marked values, the constant it adds (modules by kind; additions, concatenations,
    functional convolutions and clamps by name) and the layers it lies after."""

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module], specs: list[LayerSpec], batch: int):
        super().__init__()
        self.model, self.modules, self.specs, self.batch = model, modules, specs, batch
        self.token = object()
        self.sources: list[_Source] = []
        self.stack: list[str] = []
        self.depth = 0  # > 0: inside our hooks or a leaf module, where the mode is off (popped: by us)
        self.popped = False
        self.calls: dict[str, int] = {}
        self.h: dict[int, tuple[torch.Tensor, object]] = {}  # layer index -> (value, gradient edge)
        self.unmodelled: set[str] = set()
        self.saved: dict[int, tuple] = {}
        self._names: dict[int, str] | None = None
        self.where: dict[int, tuple] = {}  # id(module) -> (name, kind or _CONTAINER, rule reads (input, mask) pairs)
        self._handles: list = []
        self.shifts: dict[int, torch.Tensor] | None = None  # BatchNorm shifts, computed at the first BatchNorm
        self.watched: list[tuple[torch.Tensor, int]] = []  # values kept without a copy, with their versions
        self.copy = False  # copy kept values (a rerun after an in-place change of a watched value)
        self.klass = 0  # the class column the backward pass under way computes
        self.want_maps = False
        self.by_param: dict[int, _Source] = {}

    # marks ---------------------------------------------------------------------------------------------
    def mask(self, t: object) -> int:
        """The layers ``t`` is computed from (0: none)."""
        tag = getattr(t, "_pwa_bias_taint", None) if isinstance(t, torch.Tensor) else None
        return tag[1] if tag is not None and tag[0] is self.token else 0

    def mark(self, out: object, mask: int) -> None:
        if isinstance(out, torch.Tensor):
            out._pwa_bias_taint = (self.token, self.mask(out) | mask)
        elif isinstance(out, (list, tuple)):
            for t in out:
                self.mark(t, mask)

    def context(self) -> str:
        return (self.stack[-1] or "model") if self.stack else "model"

    def keep(self, value: torch.Tensor) -> torch.Tensor:
        """A value read again in the backward pass (where autograd records nothing): a copy after an in-place change
        was seen, else the tensor itself, watched (a change in place before the backward pass makes :func:`_trace`
        run again with copies)."""
        if self.copy:
            return value.detach().clone()
        self.watched.append((value, value._version))
        return value

    def changed(self) -> bool:
        return any(value._version != version for value, version in self.watched)

    def add(self, name: str, kind: str, result: torch.Tensor, terms: Terms, layers: int, view=None,
            capped: torch.Tensor | None = None) -> None:
        if not (terms or capped is not None) or not layers:
            return
        if not result.requires_grad or result.dim() == 0 or result.shape[0] != self.batch:
            self.unmodelled.add(f"{name} (output without a batch axis)")
            return
        source = _Source(name or "model", kind, terms, layers, view, capped, output=result)
        self._hook(source)
        self.sources.append(source)

    def add_channel(self, name: str, kind: str, result: torch.Tensor, vector: torch.Tensor, dim: int, layers: int,
                    param: torch.Tensor | None) -> None:
        """A constant per channel (a bias, a BatchNorm shift). With one example and a parameter that moves it alone
        (a linear layer's bias, BatchNorm's beta), its part is ``<dS/d param, constant>``: the backward pass computes
        that parameter gradient at no extra cost. A parameter used twice, several examples or maps: a hook."""
        if not layers:
            return
        if not result.requires_grad or result.dim() == 0 or result.shape[0] != self.batch:
            self.unmodelled.add(f"{name} (output without a batch axis)")
            return
        vector = vector.detach() if vector.requires_grad else vector
        source = _Source(name or "model", kind, [], layers, channel=(vector, dim % result.dim()), output=result)
        self.sources.append(source)
        if self.batch == 1 and not (self.copy or self.want_maps) and param is not None and param.requires_grad:
            first = self.by_param.setdefault(id(param), source)
            if first is source:
                source.param = param
                return
            if first.param is not None:  # a parameter used twice: its gradient would mix both uses
                first.param = None
                self._hook(first)
        self._hook(source)

    def _hook(self, source: _Source) -> None:
        """Read the source's part in the backward pass, from the node of the output it is added to."""
        node, slot = source.output.grad_fn, source.output.output_nr
        if node is None:
            edge = get_gradient_edge(source.output)
            node, slot = edge.node, edge.output_nr
        node.register_hook(self._on_backward(source, slot))
        source.output = None

    def _on_backward(self, source: _Source, slot: int):
        def hook(grad_inputs, grad_outputs):
            g = grad_outputs[slot]
            if g is None:
                return
            if source.capped is not None:
                if grad_inputs[0] is None:
                    self.unmodelled.add(f"{source.name} (a cap whose input has no gradient)")
                    return
                part, grid = capped_part(g, grad_inputs[0], source.capped, self.want_maps)
            elif source.channel:
                part, grid = channel_part(g, *source.channel, self.want_maps)
            else:
                part, grid = contribution(g, source.terms, source.view, self.want_maps)
            source.found.append((self.klass, part, grid))

        return hook

    @property
    def names(self) -> dict[int, str]:
        """``{id(tensor): name}`` of the model's parameters and buffers (for constants used in functional code)."""
        if self._names is None:
            model = self.model
            self._names = {id(t): n for n, t in (*model.named_parameters(), *model.named_buffers())}
        return self._names

    # hooks: two global module hooks (cheaper than two per module); the mode is off inside leaf modules ---
    def __enter__(self) -> _Tracer:
        self.where = {}
        for name, m in self.modules.items():
            kind = kinds.kind_of_module(m) if next(m.children(), None) is None else _CONTAINER
            self.where[id(m)] = (name, kind, kind is None or (kind is not _CONTAINER and kind.name in NEEDS_INPUT))
        self.layer_modules = {spec.module for spec in self.specs}
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, with_kwargs=True)]
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.popped:  # a forward pass that raised inside a leaf module
            torch._C._push_on_torch_function_stack(self)
            self.popped, self.depth = False, 0
        return super().__exit__(*exc)

    def _suspend(self) -> None:
        if self.depth == 0:
            top = torch._C._len_torch_function_stack() - 1
            self.popped = top >= 0 and torch._C._get_function_stack_at(top) is self
            if self.popped:
                torch._C._pop_torch_function_stack()
        self.depth += 1

    def _resume(self) -> None:
        self.depth -= 1
        if self.depth == 0 and self.popped:
            torch._C._push_on_torch_function_stack(self)
            self.popped = False

    def _pre(self, module: nn.Module, args: tuple) -> None:
        known = self.where.get(id(module))
        if known is None:  # not a module of this model
            return
        name, kind, pairs = known
        self.stack.append(name)
        if kind is _CONTAINER:
            return
        self._suspend()  # off until the leaf's forward hook
        if pairs:  # rules that read the inputs: kept before any in-place operation
            masks = [self.mask(a) for a in args]
            if any(masks):
                self.saved[id(module)] = tuple((a.detach().clone(), m) if isinstance(a, torch.Tensor) else (a, 0)
                                               for a, m in zip(args, masks, strict=True))

    def _post(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        known = self.where.get(id(module))
        if known is None:
            return
        name, kind, pairs = known
        self.stack.pop()
        if kind is _CONTAINER:
            if name in self.layer_modules:
                self._suspend()
                try:
                    self._layer_output(name, output)
                finally:
                    self._resume()
            return
        try:
            mask = self.mask(args[0]) if len(args) == 1 and not kwargs else 0
            if not mask:
                for t in _tensors_in(args, kwargs):
                    mask |= self.mask(t)
            inputs = self.saved.pop(id(module), None)
            if inputs is None:
                inputs = tuple((a, self.mask(a)) for a in args) if pairs else args
            if mask and isinstance(output, torch.Tensor):
                self.mark(output, mask)
                self._module_offset(name, module, kind, inputs, output, mask)
            if name in self.layer_modules:
                self._layer_output(name, output)
        finally:
            self._resume()

    def _layer_output(self, name: str, output) -> None:
        call = self.calls.get(name, 0)
        self.calls[name] = call + 1
        for i, spec in enumerate(self.specs):
            if spec.module == name and (spec.call is None or spec.call == call):
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"layer {spec.name!r} returns {type(output).__name__}, not a tensor")
                if i in self.h and spec.call is None:
                    raise ValueError(f"module {name!r} ran several times in one forward pass; name one call: "
                                     f"'{name}@0', '{name}@1'...")
                self.h[i] = (output.detach().clone(), get_gradient_edge(output))
                self.mark(output, 1 << i)

    def _module_offset(self, name: str, module: nn.Module, kind, inputs: tuple, output: torch.Tensor, mask: int
                       ) -> None:  # rules of NEEDS_INPUT and kind-less modules get (clone, mask) pairs
        if kind is None:
            self.add(name, OFFSET, output, [(self._jvp_offset(module, inputs, output), 1.0)], mask)
        elif kind.name == "batch_norm":
            if self.shifts is None:
                self.shifts = batch_norm_shifts([m for m in self.modules.values()
                                                 if self.where[id(m)][1] is kind])
            if id(module) in self.shifts:
                self.add_channel(name, BN_SHIFT, output, self.shifts[id(module)], 1, mask, module.bias)
            else:
                self.unmodelled.add(f"{name} (BatchNorm without running statistics)")
        elif kind.name == "bilinear" and isinstance(getattr(module, "bias", None), torch.Tensor):
            linear = isinstance(module, nn.Linear)  # a convolution's bias gradient costs its weight gradient on
            self.add_channel(name, BIAS, output, module.bias, -1 if linear else 1, mask,  # the CPU (oneDNN)
                             module.bias if linear else None)
        elif kind.name in ("relu6", "hardtanh") and capped_node(output, type(module).forward is nn.Hardtanh.forward):
            self.add(name, CAP, output, [], mask, capped=self.keep(output))
        elif kind.name in MODULE_OFFSETS:
            label, rule = MODULE_OFFSETS[kind.name]
            self.add(name, label, output, rule(module, inputs, output), mask)
        else:
            self.unmodelled.add(f"{name} ({type(module).__name__})")

    def _jvp_offset(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """``m(x) - J_m x`` for a leaf module of no known kind: its constant, if it is affine around x."""
        with torch.no_grad(), fwAD.dual_level(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            duals = [fwAD.make_dual(a, a) if moving else a for a, moving in inputs]
            tangent = fwAD.unpack_dual(module.forward(*duals)).tangent
        return output.detach() - (torch.zeros_like(output) if tangent is None else tangent)

    # functional calls ----------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth:
            return func(*args, **kwargs)
        mask = 0
        for t in _tensors_in(args, kwargs):
            mask |= self.mask(t)
        if not mask:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        kind = kinds.kind_of_function(func) or kinds.kind_of_method(name)
        if kind is not None and kind.category == kinds.SHAPE:  # zeros_like, new_full...: constants
            return func(*args, **kwargs)
        before = None
        if name in IN_PLACE and self.mask(args[0]) != mask:
            before = args[0].detach().clone()  # an in-place op on a tensor that lacks some layers: keep its value
        first = self.mask(args[0]) if args else 0
        out = func(*args, **kwargs)
        self.mark(out, mask)
        if isinstance(out, torch.Tensor):
            self._functional_offset(name, args, kwargs, out, mask, before, first)
        elif name not in NO_CONSTANT:
            self.unmodelled.add(name)
        return out

    def _functional_offset(self, name: str, args: tuple, kwargs: dict, out: torch.Tensor, mask: int, before,
                           first: int) -> None:
        where = self.context()
        if name in ADD | SUB | RSUB:
            for k, (operand, coef) in enumerate(additive_terms(name, args, kwargs)):
                if is_number(operand) and operand != 0:
                    self.add(f"{where} (constant)", CONSTANT, out, [(out.new_ones(()), float(coef) * operand)], mask)
                elif isinstance(operand, torch.Tensor):
                    own = first if k == 0 else self.mask(operand)  # an in-place op has marked args[0] already
                    if mask & ~own:
                        value = before if k == 0 and before is not None else self.keep(operand)
                        self._inflow(where, operand, out, [(value, float(coef))], mask & ~own)
        elif name in CAT or name == "stack":
            self._pieces(name, where, args, kwargs, out, mask)
        elif name in BIASED:
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if isinstance(bias, torch.Tensor):
                label = self.names.get(id(bias), f"{where} ({name} bias)")
                self.add(label, BIAS, out, [(channel_view(bias, out, BIASED[name]), 1.0)], mask)
        elif name in CAPS:
            low, high = CAPS[name]
            if name != "relu6":  # clamp(x, min, max), hardtanh(x, min_val, max_val)
                low = args[1] if len(args) > 1 else kwargs.get("min", kwargs.get("min_val", low))
                high = args[2] if len(args) > 2 else kwargs.get("max", kwargs.get("max_val", high))
            if (low is None or is_number(low)) and (high is None or is_number(high)):
                if capped_node(out, True):
                    self.add(f"{where} ({name})", CAP, out, [], mask, capped=self.keep(out))
                else:
                    self.add(f"{where} ({name})", CAP, out, caps(out, low, high), mask)
            else:
                self.unmodelled.add(f"{name} with tensor bounds")
        elif name == "hardsigmoid":
            self.add(f"{where} (hardsigmoid)", CAP, out, hardsigmoid_offset(out), mask)
        elif name not in NO_CONSTANT:
            self.unmodelled.add(name)

    def _inflow(self, where: str, operand: torch.Tensor, out: torch.Tensor, terms: Terms, layers: int,
                view=None) -> None:
        """A value that reaches the output without passing through ``layers``: part of their biases."""
        if id(operand) in self.names:
            self.add(self.names[id(operand)], CONSTANT, out, terms, layers, view)
        elif operand.requires_grad:
            self.add(f"{where} (shortcut)", SHORTCUT, out, terms, layers, view)
        else:
            self.add(f"{where} (constant)", CONSTANT, out, terms, layers, view)

    def _pieces(self, name: str, where: str, args: tuple, kwargs: dict, out: torch.Tensor, mask: int) -> None:
        pieces = args[0]
        dim = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % out.dim()
        start = 0
        for piece in pieces:
            size = 1 if name == "stack" else piece.shape[dim]
            missing = mask & ~self.mask(piece)
            if missing:
                view = ((lambda g, d=dim, i=start: g.select(d, i)) if name == "stack"
                        else (lambda g, d=dim, s=start, n=size: g.narrow(d, s, n)))
                self._inflow(where, piece, out, [(self.keep(piece), 1.0)], missing, view)
            start += size


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
    spec = resolve_one(model, layer)
    return _trace(model, inputs, target, [spec], reference, normalization, maps, allow_non_affine, strict)[spec.name]


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
    specs, wants_all = resolve_layers(model, layers)
    if wants_all or not specs:
        raise ValueError("name the layers (or 'blocks'); 'all' is not supported here")
    return _trace(model, inputs, target, specs, reference, normalization, maps, False, False)


def _trace(model, inputs, target, specs: list[LayerSpec], reference, normalization, maps, allow_non_affine,
           strict) -> dict[str, BiasSources]:
    if torch.is_inference_mode_enabled():
        raise RuntimeError("bias_sources needs autograd: call it outside torch.inference_mode()")
    modules = dict(model.named_modules())
    wants_input = any(spec.module is None for spec in specs)
    norm = input_normalization(model, normalization, reference, wants_input)
    require_piecewise_affine(model, allow_non_affine, strict, modules)
    x = prepare_inputs(model, inputs, wants_input)
    check_precision(model_dtype(model, x.dtype), strict)
    for copy in (False, True):
        tracer, logits = _forward(model, modules, specs, x, copy, maps)
        if not copy and tracer.changed():  # a value read in the backward pass was changed in place later on
            continue
        result, in_range = select_scores(target, logits)
        flat = not result.per_class  # one class per example: (B,) parts straight away
        with exact_math(x.device):
            tables = _passes(tracer, specs, result.scores, norm, maps, flat)
        score = result.squeeze(result.scores.detach())
        worst = [_unattributed(parts, bias, score) for parts, _, _, bias in tables]
        if copy or not tracer.by_param or not any(worst):
            break  # else a parameter's gradient may have mixed in a use no rule saw: again, with hooks only
    check_after_passes(x, result, in_range)
    out = {}
    for spec, (parts, kinds_, grids, bias), rest in zip(specs, tables, worst, strict=True):
        if rest:
            _warn_remainder(rest, tracer.unmodelled, spec.name)
        out[spec.name] = BiasSources(spec.name, parts, kinds_, grids, bias, score, result.squeeze(result.targets),
                                     result.per_class, sorted(tracer.unmodelled))
    return out


def _forward(model, modules, specs: list[LayerSpec], x: torch.Tensor, copy: bool, maps: bool = False
             ) -> tuple[_Tracer, torch.Tensor]:
    with exact_math(x.device), torch.enable_grad(), _Tracer(model, modules, specs, x.shape[0]) as tracer:
        tracer.copy, tracer.want_maps = copy, maps
        fed = x.clone() if x.requires_grad else x
        for i, spec in enumerate(specs):
            if spec.module is None:
                tracer.h[i] = (x.detach(), x)
                tracer.mark(fed, 1 << i)
        logits = logits_of(model(fed))
    for i, spec in enumerate(specs):
        if i not in tracer.h:
            raise RuntimeError(f"layer {spec.name!r} (module {spec.module!r}) did not run in the forward pass"
                               + (f" {spec.call + 1} times" if spec.call is not None else ""))
    return tracer, logits


def _passes(tracer: _Tracer, specs: list[LayerSpec], scores: torch.Tensor, norm, want_maps: bool, flat: bool
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
    tracer.want_maps = want_maps
    by_param = [s for s in tracer.sources if s.param is not None]
    inputs = [layer[1] for layer in layers] + [s.param for s in by_param]
    for j in range(k):
        tracer.klass = j
        grads = torch.autograd.grad(scores[:, j].sum(), inputs, retain_graph=j < k - 1, allow_unused=True)
        for s, g in zip(by_param, grads[len(layers):], strict=True):
            if g is not None:
                s.found.append((j, torch.dot(g.reshape(-1), s.channel[0].to(g.dtype).reshape(-1)).reshape(1), None))
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
