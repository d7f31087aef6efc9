"""The graph route of :func:`pwawidgets.bias.bias_sources`: the constants after each layer read off the autograd
graph of a plain forward pass, so that the forward pass costs what :func:`pwawidgets.decompose`'s does.

The forward pass runs with hooks on the layers asked for and on the ReLU6/Hardtanh modules only (to name their
caps). One walk over the finished graph, from the logits down, marks every node with the layers it depends on (a bit
per layer) and reads the constant each node after a layer adds from the node itself: a convolution's or a linear
layer's bias (the parameter behind its gradient edge), a BatchNorm's shift (its module's running statistics), a
clamp's cap (its saved input), a zero padding (checked on the convolution's saved input).

A value that reaches the score around a layer (a residual shortcut taken before it) is not in the graph: the first
call meets it and asks for one more forward pass with two global module hooks that keep every module's output and
where each value was made (:class:`GraphForward` with ``capture``); that model and layer set then runs that way.

The walk gives up (:func:`read_graph` returns :data:`REFUSED`; the caller then traces the forward pass with
:class:`pwawidgets.bias_trace.Tracer`, which knows more rules) at any node it does not know, at a constant it cannot
read (a bias that does not require grad, a non-zero padding value, an addition of a tensor made in functional code,
a shortcut no module returned) and at a concatenation of pieces that come from different layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from . import kinds
from .bias_rules import BIAS, BN_SHIFT, batch_norm_shifts, convolution_adds_bias
from .bias_trace import Recorder

# nodes whose output depends on one input (the others: indices, weights that do not depend on any layer) and that
# add no constant inside a linear region
PASS_THROUGH = {
    "ViewBackward0", "ReshapeAliasBackward0", "UnsafeViewBackward0", "TBackward0", "PermuteBackward0",
    "TransposeBackward0", "TransposeBackward1", "CloneBackward0", "ExpandBackward0", "SqueezeBackward0",
    "SqueezeBackward1", "SqueezeBackward2", "SqueezeBackward3", "UnsqueezeBackward0", "SelectBackward0",
    "SliceBackward0", "NegBackward0", "ToCopyBackward0", "AliasBackward0", "ReluBackward0", "ReluBackward1",
    "LeakyReluBackward0", "LeakyReluBackward1", "MaxPool2DWithIndicesBackward0", "MaxPool3DWithIndicesBackward0",
    "AvgPool2DBackward0", "AvgPool3DBackward0", "AdaptiveAvgPool2DBackward0", "AdaptiveAvgPool3DBackward0",
    "AdaptiveMaxPool2DBackward0", "AdaptiveMaxPool3DBackward0", "MeanBackward0", "MeanBackward1", "SumBackward0",
    "SumBackward1", "UpsampleNearest2DBackward0", "UpsampleBilinear2DBackward0", "ReflectionPad2DBackward0",
    "ReplicationPad2DBackward0", "FlipBackward0", "RollBackward0", "PixelShuffleBackward0",
    "PixelUnshuffleBackward0", "MulBackward0", "MulBackward1", "MmBackward0", "BmmBackward0", "DivBackward0",
    "DivBackward1",
}
SUMS = {"AddBackward0", "SubBackward0", "CatBackward0", "StackBackward0"}  # every input must depend on the same layers
BATCH_NORMS = {"NativeBatchNormBackward0", "CudnnBatchNormBackward0"}
CLAMPS = {"HardtanhBackward0": "_saved_self", "HardtanhBackward1": "_saved_result"}
PAD, CONVOLUTION, ADDMM, LEAF = "ConstantPadNdBackward0", "ConvolutionBackward0", "AddmmBackward0", "AccumulateGrad"


class GraphForward:
    """Forward hooks for the graph route on the layers asked for (their outputs go to the recorder) and on the
    ReLU6/Hardtanh modules (``clamps``: ``{autograd node: module name}``); removed on exit.

    With ``capture`` (for a network where a value reaches the score around a layer: a residual shortcut), two
    global module hooks also keep every module's output (``values``: ``{(node, slot): (tensor, version)}``) and
    where each value was computed (``context``: ``{node: name of the module whose forward made it}``), so that a
    shortcut's value and name can be read at the addition that takes it in."""

    def __init__(self, recorder: Recorder, capture: bool = False):
        self.recorder, self.capture = recorder, capture
        self.clamps: dict[object, str] = {}
        self.values: dict[tuple, tuple[torch.Tensor, int]] = {}
        self.context: dict[object, str] = {}
        self.parents: dict | None = None  # a consumer of each node (filled by the graph walk)
        self.uses: dict = {}  # how many times each node is an input (filled by the graph walk)
        self._stack: list[str] = []
        self._names: dict[int, str] = {}
        self._handles: list = []

    def __enter__(self) -> GraphForward:
        layers = {spec.module for spec in self.recorder.specs if spec.module is not None}
        try:
            for name, module in self.recorder.modules.items():
                clamp = type(module).forward is nn.Hardtanh.forward
                if clamp or name in layers:
                    self._handles.append(module.register_forward_hook(self._hook(name, name in layers, clamp)))
            if self.capture:
                self._names = {id(m): name for name, m in self.recorder.modules.items()}
                self._handles += [register_module_forward_pre_hook(self._pre), register_module_forward_hook(self._post)]
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str, layer: bool, clamp: bool) -> Callable:
        recorder, clamps = self.recorder, self.clamps

        def hook(module: nn.Module, args: tuple, output) -> None:
            if layer:
                recorder.layer_output(name, output)
            if clamp and isinstance(output, torch.Tensor) and output.grad_fn is not None:
                clamps[output.grad_fn] = name

        return hook

    def _pre(self, module: nn.Module, args: tuple) -> None:
        name = self._names.get(id(module))
        if name is None:
            return
        where = self._stack[-1] if self._stack else ""
        for a in args:  # a value made inline by the forward that calls this module
            if isinstance(a, torch.Tensor) and a.grad_fn is not None:
                self.context.setdefault(a.grad_fn, where)
        self._stack.append(name)

    def _post(self, module: nn.Module, args: tuple, output) -> None:
        name = self._names.get(id(module))
        if name is None:
            return
        self._stack.pop()
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            self.context.setdefault(output.grad_fn, name)  # the innermost module that returns it
            self.values.setdefault((output.grad_fn, output.output_nr), (output, output._version))


class _GiveUp(Exception):
    """The graph holds something the graph route does not read: trace the forward pass instead."""


class _NeedsValues(_GiveUp):
    """A value reaches the score around a layer: read the graph again after a forward pass that keeps values."""


READ, CAPTURE, REFUSED = "read", "capture values", "refused"  # what read_graph says


def read_graph(recorder: Recorder, logits: torch.Tensor, hooks: GraphForward) -> str:
    """Fill ``recorder`` with the sources after its layers, read off the autograd graph below ``logits``:
    :data:`READ`; :data:`CAPTURE` where a shortcut around a layer needs the values a capturing forward pass keeps;
    :data:`REFUSED` where the graph holds something this route does not read (the recorder is then left empty)."""
    if logits.grad_fn is None:
        return REFUSED
    layer_edges: dict[tuple, int] = {}
    for i, (_, edge) in recorder.h.items():
        if isinstance(edge, torch.Tensor):
            edge = get_gradient_edge(edge)
        key = (edge.node, edge.output_nr)
        layer_edges[key] = layer_edges.get(key, 0) | 1 << i
    try:
        hooks.parents = {} if hooks.capture else None
        after, consumers = _walk(logits.grad_fn, layer_edges, hooks.uses, hooks.parents)
        _read(recorder, after, consumers, hooks)
    except _NeedsValues:
        recorder.release()
        return CAPTURE
    except (_GiveUp, AttributeError, RuntimeError):  # RuntimeError: a saved value changed in place, or freed
        recorder.release()
        return REFUSED
    return READ


def _walk(root, layer_edges: dict[tuple, int], uses: dict, parents: dict | None = None) -> tuple[list, dict]:
    """Every node that depends on a layer: ``[(node, type name, [mask of each input])]``, and the nodes that read a
    constant padding's or a clamp's output ``{node: [(reader, type name, slot)]}``. One pass, children before
    parents, no recursion. ``uses`` gets how many times each node that depends on a layer is an input; ``parents``, if
    given, one consumer of each."""
    layer_nodes = {node for node, _ in layer_edges}
    mask: dict[object, int] = {}
    edges_of: dict[object, tuple] = {}
    watched: set = set()  # nodes whose readers are kept: constant paddings and clamps
    after, consumers = [], {}
    stack = [root]
    while stack:
        node = stack[-1]
        if node in mask:
            stack.pop()
            continue
        edges = edges_of.get(node)
        if edges is None:  # first visit: children first (a parameter's leaf at once: it depends on no layer)
            edges = edges_of[node] = node.next_functions
            waiting = []
            for child, _ in edges:
                if child is not None and child not in mask:
                    if type(child).__name__ == LEAF:
                        mask[child] = 0
                    else:
                        waiting.append(child)
            if waiting:
                stack.extend(waiting)
                continue
        stack.pop()
        total, masks = 0, []
        for child, slot in edges:
            bits = 0 if child is None else mask[child]
            if child in layer_nodes:
                bits |= layer_edges.get((child, slot), 0)
            masks.append(bits)
            total |= bits
        mask[node] = total
        if total:
            name = type(node).__name__
            after.append((node, name, masks))
            if name == PAD or name in CLAMPS:  # their readers: a padding's value, a clamp's output
                watched.add(node)
            for slot, (child, _) in enumerate(edges):
                if child in watched:
                    consumers.setdefault(child, []).append((node, name, slot))
                if child is not None:
                    uses[child] = uses.get(child, 0) + 1
                    if parents is not None:
                        parents.setdefault(child, node)
    return after, consumers


def _parameter(edge: tuple) -> torch.Tensor:
    node = edge[0]
    if node is None or type(node).__name__ != LEAF:
        raise _GiveUp  # a constant that is no parameter (or does not require grad): its value is not in the graph
    return node.variable


def _owner(bias: torch.Tensor, weight: torch.Tensor, recorder: Recorder, owners: dict, kind: str) -> str:
    """The one module, of the given kind, whose ``bias`` and ``weight`` these are. Give up (the tracer names it) for a
    parameter several modules hold, a weight that is not the module's, or a bias met twice in one graph: the same
    parameters used again in functional code, or a shared module called twice."""
    if not owners:
        for name, m in recorder.modules.items():
            if m._parameters.get("bias") is not None:
                owners.setdefault(id(m._parameters["bias"]), []).append(name)
        owners["seen"] = set()
    names = owners.get(id(bias), [])
    if len(names) != 1 or id(bias) in owners["seen"]:
        raise _GiveUp
    owners["seen"].add(id(bias))
    module = recorder.modules[names[0]]
    found = kinds.kind_of_module(module)
    if found is None or found.name != kind or module._parameters.get("weight") is not weight:
        raise _GiveUp
    return names[0]


def _weight_of_linear(edge: tuple) -> torch.Tensor:
    """A linear layer's weight behind the transpose ``addmm`` reads it through."""
    node = edge[0]
    if node is None or type(node).__name__ != "TBackward0":
        raise _GiveUp
    return _parameter(node.next_functions[0])


def _read(recorder: Recorder, after: list, consumers: dict, hooks: GraphForward) -> None:
    """Check every node after a layer, then record its constant, in the order the forward pass made them (a cap
    between two BatchNorms is linked to both as they come)."""
    owners: dict = {}
    clamps = hooks.clamps
    steps, norms, pads = [], [], []
    after.sort(key=lambda entry: entry[0]._sequence_nr())
    for node, name, masks in after:
        edges = node.next_functions
        if name in PASS_THROUGH:
            if sum(1 for bits in masks if bits) != 1 or (name == "DivBackward0" and (masks[0] == 0 or masks[1])):
                raise _GiveUp  # a product of two values that depend on layers
        elif name in SUMS:
            if any(child is None for child, _ in edges):
                raise _GiveUp  # a constant added: the tracer reads it
            if len(set(masks)) != 1:  # a value that bypasses some layers: part of their biases
                steps += _shortcuts(node, name, edges, masks, hooks)
        elif name == CONVOLUTION:
            if masks[0] == 0 or any(masks[1:]):
                raise _GiveUp
            if convolution_adds_bias(node):
                bias = _parameter(edges[2])
                module = _owner(bias, _parameter(edges[1]), recorder, owners, "bilinear")
                # a convolution's bias gradient costs its weight gradient on the CPU (oneDNN): always a hook
                steps.append((recorder.channel, (module, BIAS, (node, 0), bias, 1, masks[0], None)))
        elif name == ADDMM:
            if masks[1] == 0 or masks[0] or masks[2] or node._saved_beta != 1 \
                    or node._saved_mat1_sym_sizes[0] != recorder.batch:
                raise _GiveUp
            bias = _parameter(edges[0])
            module = _owner(bias, _weight_of_linear(edges[2]), recorder, owners, "bilinear")
            steps.append((recorder.channel, (module, BIAS, (node, 0), bias, 1, masks[1], bias)))
        elif name in BATCH_NORMS:
            if masks[0] == 0 or any(masks[1:]) or node._saved_training:
                raise _GiveUp
            beta, gamma = _parameter(edges[2]), _parameter(edges[1])
            module = _owner(beta, gamma, recorder, owners, "batch_norm")
            norms.append(recorder.modules[module])
            steps.append((None, (module, BN_SHIFT, (node, 0), id(norms[-1]), 1, masks[0], beta, gamma)))
        elif name in CLAMPS:
            if node not in clamps or len(masks) != 1:
                raise _GiveUp  # a functional clamp: the tracer names it after the code that calls it
            saved = getattr(node, CLAMPS[name]).detach()
            capped = saved if name.endswith("1") else _clamped(saved, node._saved_min_val, node._saved_max_val,
                                                               consumers.get(node, ()))
            steps.append((recorder.cap, (clamps[node], node, capped, masks[0])))
        elif name == PAD:
            reading = consumers.get(node, [])
            if len(reading) != 1 or reading[0][1] != CONVOLUTION or reading[0][2] != 0:
                raise _GiveUp
            pads.append(_padded_value(node._saved_pad, reading[0][0]._saved_input))
        else:
            raise _GiveUp
    values = [v for v in pads if v is not None]
    if values and any(torch.stack(values).tolist()):  # one wait for the device, at most
        raise _GiveUp  # a non-zero padding value: the tracer reads it
    shifts = batch_norm_shifts(norms) if norms else {}  # all at once
    for record, args in steps:
        if record is None:  # a BatchNorm: its shift
            recorder.channel(*args[:3], shifts[args[3]], *args[4:])
        else:
            record(*args)


def _shortcuts(node, name: str, edges: tuple, masks: list[int], hooks: GraphForward) -> list:
    """The steps that record the values an addition takes in around some layers (a residual shortcut): their part
    is ``<dS/d sum, coefficient x value>``, named after the module whose forward adds them, as the tracer names
    them."""
    if not hooks.capture:
        raise _NeedsValues
    if name not in ("AddBackward0", "SubBackward0") or len(edges) != 2:
        raise _GiveUp  # a concatenation or stack of pieces from different layers: the tracer reads those
    where, seen = None, node
    while where is None and seen is not None:  # made inline: named after the forward its consumers run in
        where = hooks.context.get(seen)
        seen = hooks.parents.get(seen)
    if where is None:
        raise _GiveUp
    total = masks[0] | masks[1]
    alpha = float(node._saved_alpha)
    steps = []
    for k, (edge, bits) in enumerate(zip(edges, masks, strict=True)):
        missing = total & ~bits
        if not missing:
            continue
        kept = hooks.values.get(edge)
        if kept is None or type(edge[0]).__name__ == LEAF or kept[0]._version != kept[1]:
            raise _GiveUp  # a value no module returned, a parameter, or one changed in place since
        coefficient = 1.0 if k == 0 else (alpha if name == "AddBackward0" else -alpha)
        steps.append((hooks.recorder.inflow, (f"{where or 'model'} (shortcut)", (node, 0),
                                              [(kept[0].detach(), coefficient)], missing)))
    return steps


def _clamped(saved: torch.Tensor, low: float, high: float, readers) -> Callable[[], torch.Tensor]:
    """A clamp's output, made from its saved input only if a hook reads it; where a convolution reads the output
    as it is, that convolution's saved input (no new tensor)."""
    for reader, name, slot in readers:
        if name == CONVOLUTION and slot == 0:
            try:
                kept = reader._saved_input
            except RuntimeError:  # not saved (a frozen weight) or freed
                continue
            if kept is not None and kept.shape == saved.shape:
                kept = kept.detach()
                return lambda: kept
    return lambda: saved.clamp(low, high)


def _padded_value(pad: tuple, padded: torch.Tensor) -> torch.Tensor | None:
    """The value at one padded position of a constant padding's output (None: it pads nothing)."""
    for k in range(0, len(pad), 2):
        dim = padded.dim() - 1 - k // 2
        if pad[k] > 0:
            return padded.detach().select(dim, 0).reshape(-1)[0]
        if pad[k + 1] > 0:
            return padded.detach().select(dim, -1).reshape(-1)[0]
    return None
