"""The traced forward pass of :func:`pwawidgets.bias.bias_sources`: which constants lie after which layers.

One forward pass marks every value with the layers it is computed from (a bit per layer; two global module hooks,
a ``TorchFunctionMode`` outside leaf modules) and registers, for each constant added to a marked value, how its
part is read in the backward pass: a hook on the autograd node of the output it is added to, or with one example
the gradient of the parameter that moves it (BatchNorm's beta, a linear bias; a cap between two BatchNorms from
theirs).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.autograd.graph import get_gradient_edge
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from . import kinds
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
    MODULE_OFFSETS,
    NEEDS_INPUT,
    NO_CONSTANT,
    OFFSET,
    PADDING,
    RSUB,
    SHORTCUT,
    SUB,
    Terms,
    additive_terms,
    batch_norm_shifts,
    capped_node,
    capped_part,
    caps,
    channel_part,
    channel_view,
    contribution,
    convolution_adds_bias,
    hardsigmoid_offset,
    is_number,
    no_offset,
    padding_offset,
)
from .layers import LayerSpec

_CONTAINER = object()  # the "kind" of a module with children
_SILENT = {k for k in kinds.KINDS
           if MODULE_OFFSETS.get(k.name, (None, None))[1] is no_offset and k.name != "batch_norm"}
"""Kinds of module that never add a constant (ReLU, max-pool, dropout...): their outputs are only marked."""


# ---------------------------------------------------------------------------------------- the one forward


@dataclass(eq=False)
class Source:
    """One constant: the constant itself and the layers it lies after (a bit per layer). Its part is computed in
    the backward pass, by a hook on the node of the output it is added to, once per class."""

    name: str
    kind: str
    terms: Terms
    layers: int  # bit i set: the constant is added after layer i (it is part of that layer's bias)
    view: Callable[[torch.Tensor], torch.Tensor] | None = None  # the part of that output's gradient it meets
    capped: object = None  # a clamp's output (or what makes it): its part is <g_out - g_in, out> (capped_part)
    param: torch.Tensor | None = None  # one example: the parameter that moves a per-channel constant (see channel)
    channel: tuple = ()  # a per-channel constant: (vector (C,), channel axis of the output it is added to)
    edge: tuple | None = None  # (autograd node, output slot) of that output, until a hook on the node is registered
    gamma: torch.Tensor | None = None  # BatchNorm on the parameter route: its weight (for <dS/d out, out>)
    node: object = None  # a BatchNorm's or a cap's autograd node (kept alive while ids index them)
    between: tuple = ()  # a cap read from parameter gradients: (BatchNorm before it, BatchNorm after it)
    chain: tuple = ()  # the bias-free convolutions and paddings from that cap to the BatchNorm after it
    found: list = field(default_factory=list)  # (class index, part (B,), map or None), one per backward pass


def _tensors_in(args, kwargs) -> Iterator[torch.Tensor]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def use_counts(root) -> dict:
    """How many times each autograd node below ``root`` is an input of another: ``{node: count}``."""
    uses: dict = {}
    stack = [] if root is None else [root]
    seen = set(stack)
    while stack:
        for child, _ in stack.pop().next_functions:
            if child is not None:
                uses[child] = uses.get(child, 0) + 1
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
    return uses


class Recorder:
    """The sources found in one forward pass and how each part is read in the backward pass: a hook on the autograd
    node of the output the constant is added to, or with one example the gradient of the parameter that moves it.
    Filled by :class:`Tracer` (which watches the forward pass) or by :func:`pwawidgets.bias_graph.read_graph`
    (which reads the finished autograd graph)."""

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module], specs: list[LayerSpec], batch: int):
        self.model, self.modules, self.specs, self.batch = model, modules, specs, batch
        self.sources: list[Source] = []
        self.calls: dict[str, int] = {}
        self.h: dict[int, tuple[torch.Tensor, object]] = {}  # layer index -> (value, gradient edge)
        self.unmodelled: set[str] = set()
        self.watched: list[tuple[torch.Tensor, int]] = []  # values kept without a copy, with their versions
        self.copy = False  # copy kept values (a rerun after an in-place change of a watched value)
        self.klass = 0  # the class column the backward pass under way computes
        self.want_maps = False
        self.by_param: dict[int, Source] = {}
        self.norm_nodes: dict[int, Source] = {}  # BatchNorms on the parameter route, by their autograd node
        self.cap_nodes: dict[int, Source] = {}  # caps right after one of them, waiting for the BatchNorm after

    def keep(self, value: torch.Tensor) -> torch.Tensor:
        """A value read again in the backward pass (where autograd records nothing): a copy after an in-place change
        was seen, else the tensor itself, watched (a change in place before the backward pass makes
        :func:`pwawidgets.bias.bias_sources` run again with copies)."""
        if self.copy:
            return value.detach().clone()
        self.watched.append((value, value._version))
        return value

    def changed(self) -> bool:
        return any(value._version != version for value, version in self.watched)

    def edge_of(self, name: str, result: torch.Tensor) -> tuple | None:
        """``(node, slot)`` of an output a constant is added to; None (and noted) for one without a batch axis."""
        if not result.requires_grad or result.dim() == 0 or result.shape[0] != self.batch:
            self.unmodelled.add(f"{name} (output without a batch axis)")
            return None
        if result.grad_fn is not None:
            return result.grad_fn, result.output_nr
        edge = get_gradient_edge(result)
        return edge.node, edge.output_nr

    def add(self, name: str, kind: str, result: torch.Tensor, terms: Terms, layers: int, view=None,
            capped: torch.Tensor | None = None) -> None:
        if not (terms or capped is not None) or not layers:
            return
        edge = self.edge_of(name, result)
        if edge is not None:
            source = Source(name or "model", kind, terms, layers, view, capped, edge=edge)
            self._hook(source)
            self.sources.append(source)

    def inflow(self, name: str, edge: tuple, terms: Terms, layers: int) -> None:
        """A value that reaches the output at ``edge`` around ``layers`` (a residual shortcut): part of their biases."""
        source = Source(name, SHORTCUT, terms, layers, edge=edge)
        self._hook(source)
        self.sources.append(source)

    def channel(self, name: str, kind: str, edge: tuple, vector: torch.Tensor, dim: int, layers: int,
                param: torch.Tensor | None, gamma: torch.Tensor | None = None) -> None:
        """A constant per channel (a bias, a BatchNorm shift) added along axis ``dim`` of the output at ``edge``.
        With one example and a parameter that moves it alone (a linear layer's bias, BatchNorm's beta), its part
        is ``<dS/d param, constant>``: the backward pass computes that parameter gradient at no extra cost. A
        parameter used twice, several examples or maps: a hook."""
        vector = vector.detach() if vector.requires_grad else vector
        source = Source(name or "model", kind, [], layers, channel=(vector, dim), edge=edge)
        self.sources.append(source)
        if self.batch == 1 and not (self.copy or self.want_maps) and param is not None and param.requires_grad:
            first = self.by_param.setdefault(id(param), source)
            if first is source:
                source.param = param
                if gamma is not None and gamma.requires_grad and id(gamma) not in self.by_param:
                    self.by_param[id(gamma)] = source
                    source.gamma, source.node = gamma, edge[0]
                    self.norm_nodes[id(source.node)] = source
                    self._link_cap_before(source)
                return
            if first.param is not None:  # a parameter used twice: its gradient would mix both uses
                first.param = None
                self._hook(first)
        self._hook(source)

    def add_channel(self, name: str, kind: str, result: torch.Tensor, vector: torch.Tensor, dim: int, layers: int,
                    param: torch.Tensor | None, gamma: torch.Tensor | None = None) -> None:
        if layers and (edge := self.edge_of(name, result)) is not None:
            self.channel(name, kind, edge, vector, dim % result.dim(), layers, param, gamma)

    def cap(self, name: str, node, capped: torch.Tensor, layers: int) -> None:
        """A clamp's offset (``capped``: its output). Right after a BatchNorm on the parameter route and, through
        bias-free convolutions and zero padding, right before another, it is read from their parameter gradients
        (:func:`pwawidgets.bias._passes`): ``<dS/d out, out> - <dS/d in, in>``, both from the BatchNorms'
        gradients. Else from a hook on the clamp's node."""
        before = self.norm_nodes.get(id(node.next_functions[0][0])) if self.norm_nodes else None
        if before is None or before.gamma is None:
            source = Source(name or "model", CAP, [], layers, capped=capped, edge=(node, 0))
            self._hook(source)
            self.sources.append(source)
            return
        source = Source(name or "model", CAP, [], layers, capped=capped, node=node, between=(before, None))
        self.sources.append(source)
        self.cap_nodes[id(node)] = source

    def add_cap(self, name: str, output: torch.Tensor, layers: int) -> None:
        if not layers:
            return
        if not output.requires_grad or output.shape[0] != self.batch:
            self.add(name, CAP, output, [], layers, capped=self.keep(output))
        else:
            self.cap(name, output.grad_fn, self.keep(output), layers)

    def _link_cap_before(self, norm: Source) -> None:
        """Link a BatchNorm to the cap whose output reaches its input through linear bias-free steps only."""
        node, chain = norm.node.next_functions[0][0], []
        while node is not None:
            name = type(node).__name__
            bias_free = name == "ConvolutionBackward0" and not convolution_adds_bias(node)
            if bias_free or name == "ConstantPadNdBackward0":
                chain.append(node)
                node = node.next_functions[0][0]
            else:
                break
        cap = self.cap_nodes.pop(id(node), None)
        if cap is not None:
            cap.between, cap.chain = (cap.between[0], norm), tuple(chain)

    def finish(self, root=None, uses: dict | None = None) -> None:
        """After the forward pass: caps not linked on both sides, whose BatchNorms left the parameter route (a
        parameter used twice), or where a value on the way has a second use (the cap's output, the first
        BatchNorm's, a step between: then the parameter gradients mix in that use), are read from hooks.
        ``uses``: how many times each autograd node is an input (counted below ``root`` if not given)."""
        derived = [s for s in self.sources if s.between]
        if derived and uses is None:
            uses = use_counts(root)
        for source in derived:
            linked = all(n is not None and n.param is not None for n in source.between)
            if linked:
                linked = all(uses.get(n, 0) == 1 for n in (source.node, source.between[0].node, *source.chain))
            if not linked:
                source.between, source.chain = (), ()
                source.edge, source.node = (source.node, 0), None
                self._hook(source)
        self.cap_nodes.clear()

    def release(self) -> None:
        """Drop every reference into the autograd graph and its tensors: the hooks on its nodes refer back to the
        recorder, so without this the graph and its activations would wait for Python's cycle collector."""
        for source in self.sources:
            source.edge = source.node = source.capped = source.param = source.gamma = None
            source.terms, source.channel, source.between, source.found, source.view = [], (), (), [], None
            source.chain = ()
        self.sources, self.h, self.watched = [], {}, []
        self.norm_nodes, self.cap_nodes, self.by_param = {}, {}, {}

    def _hook(self, source: Source) -> None:
        """Read the source's part in the backward pass, from the node of the output it is added to."""
        node, slot = source.edge
        node.register_hook(self._on_backward(source, slot))
        source.edge = None

    def _on_backward(self, source: Source, slot: int):
        def hook(grad_inputs, grad_outputs):
            g = grad_outputs[slot]
            if g is None:
                return
            if source.capped is not None:
                if grad_inputs[0] is None:
                    self.unmodelled.add(f"{source.name} (a cap whose input has no gradient)")
                    return
                out = source.capped() if callable(source.capped) else source.capped
                part, grid = capped_part(g, grad_inputs[0], out, self.want_maps)
            elif source.channel:
                part, grid = channel_part(g, *source.channel, self.want_maps)
            else:
                part, grid = contribution(g, source.terms, source.view, self.want_maps)
            source.found.append((self.klass, part, grid))

        return hook

    def layer_output(self, name: str, output) -> int:
        """Keep the value and gradient edge of a layer's output; the layers it is (a bit each, 0: none asked for)."""
        call = self.calls.get(name, 0)
        self.calls[name] = call + 1
        found = 0
        for i, spec in enumerate(self.specs):
            if spec.module == name and (spec.call is None or spec.call == call):
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"layer {spec.name!r} returns {type(output).__name__}, not a tensor")
                if i in self.h and spec.call is None:
                    raise ValueError(f"module {name!r} ran several times in one forward pass; name one call: "
                                     f"'{name}@0', '{name}@1'...")
                self.h[i] = (output.detach().clone(), get_gradient_edge(output))
                found |= 1 << i
        return found


class Tracer(Recorder, TorchFunctionMode):
    """One forward pass that marks every value with the layers it is computed from (a bit per layer) and records,
    at each operation on marked values, the constant it adds (modules by kind; additions, concatenations,
    functional convolutions and clamps by name) and the layers it lies after."""

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module], specs: list[LayerSpec], batch: int):
        TorchFunctionMode.__init__(self)
        Recorder.__init__(self, model, modules, specs, batch)
        self.token = object()
        self.stack: list[str] = []
        self.depth = 0  # > 0: inside our hooks or a leaf module, where the mode is off (popped: by us)
        self.popped = False
        self.saved: dict[int, tuple] = {}
        self._names: dict[int, str] | None = None
        self.where: dict[int, tuple] = {}  # id(module) -> (name, kind or _CONTAINER, rule reads (input, mask) pairs)
        self._handles: list = []
        self.shifts: dict[int, torch.Tensor] | None = None  # BatchNorm shifts, computed at the first BatchNorm

    def release(self) -> None:
        super().release()
        self.saved, self.shifts = {}, None

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

    @property
    def names(self) -> dict[int, str]:
        """``{id(tensor): name}`` of the model's parameters and buffers (for constants used in functional code)."""
        if self._names is None:
            model = self.model
            self._names = {id(t): n for n, t in (*model.named_parameters(), *model.named_buffers())}
        return self._names

    # hooks: two global module hooks (cheaper than two per module); the mode is off inside leaf modules ---
    def __enter__(self) -> Tracer:
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
                if kind not in _SILENT:
                    self._module_offset(name, module, kind, inputs, output, mask)
            if name in self.layer_modules:
                self._layer_output(name, output)
        finally:
            self._resume()

    def _layer_output(self, name: str, output) -> None:
        bits = self.layer_output(name, output)
        if bits:
            self.mark(output, bits)

    def _module_offset(self, name: str, module: nn.Module, kind, inputs: tuple, output: torch.Tensor, mask: int
                       ) -> None:  # rules of NEEDS_INPUT and kind-less modules get (clone, mask) pairs
        if kind is None:
            self.add(name, OFFSET, output, [(self._jvp_offset(module, inputs, output), 1.0)], mask)
        elif kind.name == "batch_norm":
            if self.shifts is None:
                self.shifts = batch_norm_shifts([m for m in self.modules.values()
                                                 if self.where[id(m)][1] is kind])
            if id(module) in self.shifts:
                self.add_channel(name, BN_SHIFT, output, self.shifts[id(module)], 1, mask, module.bias,
                                 module.weight)
            else:
                self.unmodelled.add(f"{name} (BatchNorm without running statistics)")
        elif kind.name == "bilinear" and isinstance(getattr(module, "bias", None), torch.Tensor):
            linear = isinstance(module, nn.Linear)  # a convolution's bias gradient costs its weight gradient on
            self.add_channel(name, BIAS, output, module.bias, -1 if linear else 1, mask,  # the CPU (oneDNN)
                             module.bias if linear else None)
        elif kind.name in ("relu6", "hardtanh") and capped_node(output, type(module).forward is nn.Hardtanh.forward):
            self.add_cap(name, output, mask)
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
                    self.add_cap(f"{where} ({name})", out, mask)
                else:
                    self.add(f"{where} ({name})", CAP, out, caps(out, low, high), mask)
            else:
                self.unmodelled.add(f"{name} with tensor bounds")
        elif name == "hardsigmoid":
            self.add(f"{where} (hardsigmoid)", CAP, out, hardsigmoid_offset(out), mask)
        elif name == "pad":
            self.add(f"{where} (padding)", PADDING, out, padding_offset(args, kwargs), mask)
        elif name not in NO_CONSTANT:
            self.unmodelled.add(name)

    def _inflow(self, where: str, operand: torch.Tensor, out: torch.Tensor, terms: Terms, layers: int,
                view=None) -> None:
        """A value that reaches the output without passing through ``layers``: part of their biases."""
        if operand.grad_fn is not None:  # computed in this pass (a shortcut): no need to look up parameter names
            self.add(f"{where} (shortcut)", SHORTCUT, out, terms, layers, view)
        elif id(operand) in self.names:
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
