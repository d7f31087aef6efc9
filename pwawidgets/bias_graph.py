"""The graph route of :func:`pwawidgets.bias.bias_sources`: the constants after each layer read off the autograd
graph of a plain forward pass, so that the forward pass costs what :func:`pwawidgets.decompose`'s does.

The forward pass runs with hooks on the layers asked for and on the ReLU6/Hardtanh modules only (to name their
caps). One walk over the finished graph, from the logits down, marks every node with the layers it depends on (a bit
per layer) and reads the constant each node after a layer adds from the node itself: a convolution's or a linear
layer's bias (the parameter behind its gradient edge), a BatchNorm's shift (its module's running statistics), a
clamp's cap (its saved input), a zero padding (checked on the convolution's saved input).

The walk gives up (:func:`read_graph` returns False; the caller then traces the forward pass with
:class:`pwawidgets.bias_trace.Tracer`, which knows more rules) at any node it does not know, at a constant it cannot
read (a bias that does not require grad, a non-zero padding value, an addition of a tensor that is no layer output)
and at a value that reaches the score around a layer (a residual shortcut taken before it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge

from . import kinds
from .bias_rules import BIAS, BN_SHIFT, cached_batch_norm_shifts
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
    ReLU6/Hardtanh modules (``clamps``: ``{autograd node: module name}``); removed on exit."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.clamps: dict[object, str] = {}
        self._handles: list = []

    def __enter__(self) -> GraphForward:
        layers = {spec.module for spec in self.recorder.specs if spec.module is not None}
        try:
            for name, module in self.recorder.modules.items():
                clamp = type(module).forward is nn.Hardtanh.forward
                if clamp or name in layers:
                    self._handles.append(module.register_forward_hook(self._hook(name, name in layers, clamp)))
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


class _GiveUp(Exception):
    """The graph holds something the graph route does not read: trace the forward pass instead."""


def read_graph(recorder: Recorder, logits: torch.Tensor, clamps: dict[object, str]) -> bool:
    """Fill ``recorder`` with the sources after its layers, read off the autograd graph below ``logits``. False
    (and the recorder left empty) where the graph holds something this route does not read."""
    if logits.grad_fn is None:
        return False
    layer_edges: dict[tuple, int] = {}
    for i, (_, edge) in recorder.h.items():
        if isinstance(edge, torch.Tensor):
            edge = get_gradient_edge(edge)
        key = (edge.node, edge.output_nr)
        layer_edges[key] = layer_edges.get(key, 0) | 1 << i
    try:
        after, consumers = _walk(logits.grad_fn, layer_edges)
        _read(recorder, after, consumers, clamps)
    except (_GiveUp, AttributeError, RuntimeError):  # RuntimeError: a saved value changed in place, or freed
        recorder.release()
        return False
    return True


def _walk(root, layer_edges: dict[tuple, int]) -> tuple[list, dict]:
    """Every node that depends on a layer: ``[(node, type name, [mask of each input])]``, and the nodes that read a
    constant padding's output ``{pad node: [(node, type name, slot)]}``. One pass, children before parents, no
    recursion."""
    layer_nodes = {node for node, _ in layer_edges}
    mask: dict[object, int] = {}
    edges_of: dict[object, tuple] = {}
    pads: set = set()
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
            if name == PAD:
                pads.add(node)
            for slot, (child, _) in enumerate(edges):
                if child in pads:
                    consumers.setdefault(child, []).append((node, name, slot))
    return after, consumers


def _parameter(edge: tuple) -> torch.Tensor:
    node = edge[0]
    if node is None or type(node).__name__ != LEAF:
        raise _GiveUp  # a constant that is no parameter (or does not require grad): its value is not in the graph
    return node.variable


def _owner(param: torch.Tensor, recorder: Recorder, owners: dict, kind: str) -> str:
    """The module whose ``bias`` is ``param``, of the given kind (else give up: the tracer names it)."""
    if not owners:
        owners.update({id(m._parameters["bias"]): name for name, m in recorder.modules.items()
                       if m._parameters.get("bias") is not None})
    name = owners.get(id(param))
    module = recorder.modules.get(name) if name is not None else None
    found = kinds.kind_of_module(module) if module is not None else None
    if found is None or found.name != kind:
        raise _GiveUp
    return name


def _read(recorder: Recorder, after: list, consumers: dict, clamps: dict[object, str]) -> None:
    """Check every node after a layer, then record its constant, in the order the forward pass made them (a cap
    between two BatchNorms is linked to both as they come)."""
    owners: dict[int, str] = {}
    steps, norms, pads = [], [], []
    after.sort(key=lambda entry: entry[0]._sequence_nr())
    for node, name, masks in after:
        edges = node.next_functions
        if name in PASS_THROUGH:
            if sum(1 for bits in masks if bits) != 1 or (name == "DivBackward0" and (masks[0] == 0 or masks[1])):
                raise _GiveUp  # a product of two values that depend on layers
        elif name in SUMS:
            if any(child is None for child, _ in edges) or len(set(masks)) != 1:
                raise _GiveUp  # a constant or a shortcut added: the tracer reads those
        elif name == CONVOLUTION:
            if masks[0] == 0 or any(masks[1:]):
                raise _GiveUp
            sizes = node._saved_bias_sym_sizes_opt
            if sizes is not None and tuple(sizes) != (0,):
                bias = _parameter(edges[2])
                module = _owner(bias, recorder, owners, "bilinear")
                if recorder.modules[module]._parameters.get("weight") is not _parameter(edges[1]):
                    raise _GiveUp
                # a convolution's bias gradient costs its weight gradient on the CPU (oneDNN): always a hook
                steps.append((recorder.channel, (module, BIAS, (node, 0), bias, 1, masks[0], None)))
        elif name == ADDMM:
            if masks[1] == 0 or masks[0] or masks[2] or node._saved_beta != 1 \
                    or node._saved_mat1_sym_sizes[0] != recorder.batch:
                raise _GiveUp
            bias = _parameter(edges[0])
            module = _owner(bias, recorder, owners, "bilinear")
            steps.append((recorder.channel, (module, BIAS, (node, 0), bias, 1, masks[1], bias)))
        elif name in BATCH_NORMS:
            if masks[0] == 0 or any(masks[1:]) or node._saved_training:
                raise _GiveUp
            beta, gamma = _parameter(edges[2]), _parameter(edges[1])
            module = _owner(beta, recorder, owners, "batch_norm")
            if recorder.modules[module]._parameters.get("weight") is not gamma:
                raise _GiveUp
            norms.append(recorder.modules[module])
            steps.append((None, (module, BN_SHIFT, (node, 0), id(norms[-1]), 1, masks[0], beta, gamma)))
        elif name in CLAMPS:
            if node not in clamps or len(masks) != 1:
                raise _GiveUp  # a functional clamp: the tracer names it after the code that calls it
            saved = getattr(node, CLAMPS[name]).detach()
            capped = saved if name.endswith("1") else _clamped(saved, node._saved_min_val, node._saved_max_val)
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
    shifts = cached_batch_norm_shifts(norms) if norms else {}  # all at once
    for record, args in steps:
        if record is None:  # a BatchNorm: its shift
            recorder.channel(*args[:3], shifts[args[3]], *args[4:])
        else:
            record(*args)


def _clamped(saved: torch.Tensor, low: float, high: float) -> Callable[[], torch.Tensor]:
    """A clamp's output, made from its saved input only if a hook reads it."""
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
