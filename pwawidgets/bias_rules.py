"""The constants each operation adds inside a linear region, and how a constant's part is read from gradients.

An operation ``out = A(in) + c`` adds ``c``; its part of a bias is ``<dS/d out, c>``. Modules are matched by their
kind in :mod:`pwawidgets.kinds` (:data:`MODULE_OFFSETS`), functional calls by name; :mod:`pwawidgets.bias` runs
the forward pass that finds them and the backward pass that reads them with the reductions below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

BIAS, BN_SHIFT, CAP, PADDING, OFFSET = "conv/linear bias", "BatchNorm shift", "activation cap", "padding value", \
    "custom module offset"
SHORTCUT, CONSTANT, NORM, UNATTRIBUTED = "shortcut (bypasses the layer)", "constant", "input normalisation", \
    "not attributed"
KIND_LABELS: tuple[str, ...] = (NORM, BIAS, BN_SHIFT, CAP, PADDING, OFFSET, SHORTCUT, CONSTANT, UNATTRIBUTED)
"""The kinds of source, in the order :meth:`BiasSources.by_kind` lists them."""

Terms = list[tuple[torch.Tensor, float]]  # offset = sum(scale * tensor), each broadcastable against the output


# ------------------------------------------------------------------------------- offsets of modules, by kind


def no_offset(module: nn.Module, inputs: tuple, output: torch.Tensor) -> Terms:
    return []


def channel_view(vector: torch.Tensor, output: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * output.dim()
    shape[dim] = -1
    if vector.requires_grad:
        vector = vector.detach()
    return (vector if vector.dtype == output.dtype else vector.to(output.dtype)).view(shape)


def row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b)`` summed over every axis but the first: one BLAS dot per example on the CPU (no temporary of a's
    size; a batched matrix product of this shape is slow there), a product and a sum on a GPU (the batched matrix
    product becomes a slow matrix-vector kernel there)."""
    if a.device.type != "cpu":
        return (a * b).flatten(1).sum(1)
    if a.shape[0] == 1:
        return torch.dot(a.reshape(-1), b.reshape(-1)).reshape(1)
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return torch.stack([torch.dot(u, v) for u, v in zip(a, b, strict=True)])


def bias_offset(module: nn.Module, inputs: tuple, output: torch.Tensor) -> Terms:
    bias = getattr(module, "bias", None)
    if not isinstance(bias, torch.Tensor):
        return []
    return [(channel_view(bias, output, -1 if isinstance(module, nn.Linear) else 1), 1.0)]


def batch_norm_shifts(modules: Sequence[nn.Module]) -> dict[int, torch.Tensor]:
    """``beta - gamma mu / sqrt(var + eps)`` of every BatchNorm with running statistics, ``{id(module): (C,)}``,
    computed for all of them at once (a few operations, not a few per module)."""
    groups: dict[tuple, list[tuple]] = {}
    for m in modules:
        mean, var = m._buffers.get("running_mean"), m._buffers.get("running_var")  # no Module.__getattr__
        if mean is not None and var is not None:
            groups.setdefault((mean.dtype, mean.device), []).append(
                (m, mean, var, m._parameters.get("weight"), m._parameters.get("bias")))
    shifts: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for group in groups.values():
            sizes = [mean.numel() for _, mean, _, _, _ in group]
            mean = torch.cat([entry[1] for entry in group])
            var = torch.cat([entry[2] for entry in group])
            epsilons = {m.eps for m, *_ in group}
            eps = epsilons.pop() if len(epsilons) == 1 else torch.cat([torch.full_like(v, m.eps)
                                                                       for m, _, v, _, _ in group])
            gamma = torch.cat([torch.ones_like(v) if w is None else w for _, _, v, w, _ in group])
            beta = torch.cat([torch.zeros_like(v) if b is None else b for _, _, v, _, b in group])
            shift = beta - gamma * mean / (var + eps).sqrt()
            shifts.update(zip((id(m) for m, *_ in group), shift.split(sizes), strict=True))
    return shifts


def caps(output: torch.Tensor, low: float | None, high: float | None) -> Terms:
    """Offset of a clamp to ``[low, high]``: the cap value on saturated units, 0 in the linear part."""
    out = output.detach()  # masks in the output's dtype, ready for the backward's batched dot products
    terms = [((out <= low).to(out.dtype), float(low))] if low is not None and low != 0 else []
    return terms + ([((out >= high).to(out.dtype), float(high))] if high is not None and high != 0 else [])


def convolution_adds_bias(node) -> bool:
    """Whether a convolution's autograd node adds a bias: read from the bias size it keeps, which says so also for a
    bias that does not require grad (whose gradient edge is empty, like a missing bias's)."""
    sizes = node._saved_bias_sym_sizes_opt
    return sizes is not None and tuple(sizes) != (0,)


CLAMP_NODES = {"HardtanhBackward0", "HardtanhBackward1", "ClampBackward1", "ClampMinBackward0", "ClampMaxBackward0"}


def capped_node(output: torch.Tensor, one_op: bool) -> bool:
    """Whether ``output`` comes straight from one clamp (its autograd node, one input): then its cap part is read
    in the backward pass from that node's gradients (:func:`capped_part`), with no mask made in the forward pass."""
    node = output.grad_fn
    return one_op and node is not None and type(node).__name__ in CLAMP_NODES and len(node.next_functions) == 1


def capped_part(g_out: torch.Tensor, g_in: torch.Tensor, out: torch.Tensor, maps: bool
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The part of a clamp ``out = clamp(in)``: ``<g_out - g_in, out>``. The clamp passes the gradient through
    exactly where it is linear (there ``g_out - g_in`` is 0) and blocks it where it saturates (there ``out`` is the
    cap), so this is the sum of cap x gradient over saturated units, the same units autograd treats as flat."""
    if maps and out.dim() == 4:
        cells = (g_out - g_in) * out
        return cells.flatten(1).sum(1), cells.sum(1)
    if out.device.type == "cpu":  # two dot products read less memory than a difference and one
        return row_dots(g_out, out) - row_dots(g_in, out), None
    return row_dots(g_out - g_in, out), None


def hardsigmoid_offset(output: torch.Tensor) -> Terms:
    """``x / 6 + 0.5`` inside (-3, 3), 0 below, 1 above."""
    out = output.detach()
    return [((out > 0) & (out < 1), 0.5), (out >= 1, 1.0)]


def threshold_offset(module: nn.Module, inputs: tuple, output: torch.Tensor) -> Terms:
    return [(inputs[0][0] <= module.threshold, float(module.value))] if module.value != 0 else []


def shrink_offset(module: nn.Module, inputs: tuple, output: torch.Tensor) -> Terms:
    if not isinstance(module, nn.Softshrink):  # Hardshrink: x or 0
        return []
    out = output.detach()
    return [(out > 0, -float(module.lambd)), (out < 0, float(module.lambd))]


def affine_offset(module: nn.Module, inputs: tuple, output: torch.Tensor) -> Terms:
    if isinstance(module, (nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)) and module.value != 0:
        return [(module.forward(torch.zeros_like(inputs[0])), 1.0)]  # the padding value where it pads, else 0
    return []  # identity, reshapes, average pooling, zero/reflection/replication padding, upsampling...


def padding_offset(args: tuple, kwargs: dict) -> Terms:
    """``F.pad``: the fill value where it pads in ``"constant"`` mode (0 adds nothing); the other modes copy."""
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    value = args[3] if len(args) > 3 else kwargs.get("value", None)
    if mode != "constant" or not value:
        return []
    pad = args[1] if len(args) > 1 else kwargs["pad"]
    return [(torch.nn.functional.pad(torch.zeros_like(args[0]).detach(), pad, value=float(value)), 1.0)]


MODULE_OFFSETS: dict[str, tuple[str, Callable[[nn.Module, tuple, torch.Tensor], Terms]]] = {
    "relu": (CAP, no_offset), "leaky_relu": (CAP, no_offset), "prelu": (CAP, no_offset), "rrelu": (CAP, no_offset),
    "relu6": (CAP, lambda m, i, out: caps(out, 0.0, 6.0)),
    "hardtanh": (CAP, lambda m, i, out: caps(out, m.min_val, m.max_val)),
    "hardsigmoid": (CAP, lambda m, i, out: hardsigmoid_offset(out)),
    "threshold": (CAP, threshold_offset), "shrink": (CAP, shrink_offset),
    "max_pool": (CAP, no_offset), "adaptive_max_pool": (CAP, no_offset), "dropout": (CAP, no_offset),
    "affine": (PADDING, affine_offset), "bilinear": (BIAS, bias_offset), "batch_norm": (BN_SHIFT, no_offset),
    "embedding": (CONSTANT, no_offset),
}
"""The constant each module kind of :mod:`pwawidgets.kinds` adds inside a linear region (kind name -> (label,
rule)). A leaf module of no kind (a custom affine layer) gets ``m(x) - J_m x`` by forward-mode AD; BatchNorm's
shift comes from :func:`batch_norm_shifts`, and ReLU6/Hardtanh caps are read in the backward pass
(:func:`capped_part`)."""

NEEDS_INPUT = {"threshold"}  # rules that read the module's input, which an in-place module overwrites


# ------------------------------------------------------------------------------ offsets of functional calls

ADD = {"add", "add_", "__add__", "__radd__", "__iadd__"}
SUB = {"sub", "sub_", "__sub__", "__isub__", "subtract", "subtract_"}
RSUB = {"__rsub__", "rsub"}
CAT = {"cat", "concat", "concatenate"}
IN_PLACE = {"add_", "sub_", "subtract_", "__iadd__", "__isub__"}
BIASED = {"linear": -1, "conv1d": 1, "conv2d": 1, "conv3d": 1, "conv_transpose1d": 1, "conv_transpose2d": 1,
           "conv_transpose3d": 1}
CAPS = {"relu6": (0.0, 6.0), "hardtanh": (-1.0, 1.0), "hardtanh_": (-1.0, 1.0), "clamp": (None, None),
         "clamp_": (None, None), "clip": (None, None), "clip_": (None, None)}
NO_CONSTANT = {
    "relu", "relu_", "leaky_relu", "leaky_relu_", "prelu", "max_pool1d", "max_pool2d", "max_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "dropout", "mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_",
    "__truediv__", "__itruediv__", "neg", "__neg__", "__pos__", "mean", "sum", "flatten", "view", "reshape",
    "permute", "transpose", "contiguous", "clone", "squeeze", "unsqueeze", "expand", "expand_as", "__getitem__",
    "chunk", "split", "narrow", "select", "index_select", "gather", "roll", "flip", "matmul", "__matmul__", "mm",
    "bmm", "einsum", "interpolate", "max", "amax", "to", "float", "double", "type_as", "__get__", "size", "dim",
    "view_as", "reshape_as", "unflatten", "unbind", "movedim", "t", "detach", "repeat", "__len__", "numel",
    "requires_grad_", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
}


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def additive_terms(name: str, args: tuple, kwargs: dict) -> list[tuple[object, float]]:
    """``(operand, coefficient)`` of an addition or subtraction: the result is the sum of coefficient x operand."""
    other = args[1] if len(args) > 1 else kwargs.get("other")
    alpha = kwargs.get("alpha", 1)
    if name in ADD:
        return [(args[0], 1.0), (other, alpha)]
    if name in SUB:
        return [(args[0], 1.0), (other, -alpha)]
    if name == "__rsub__":  # other - self
        return [(args[0], -1.0), (other, 1.0)]
    return [(args[0], -alpha), (other, 1.0)]  # torch.rsub(input, other, alpha) = other - alpha * input


def channel_part(g: torch.Tensor, vector: torch.Tensor, dim: int, maps: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The part of a constant per channel added to an output of gradient ``g``: ``g`` summed over every other axis
    (one pass, no temporary), then a dot product with the constant."""
    vector = vector if vector.dtype == g.dtype else vector.to(g.dtype)
    if maps and g.dim() == 4:
        shape = [1] * 4
        shape[dim] = -1
        cells = (g * vector.view(shape)).sum(1)
        return cells.flatten(1).sum(1), cells
    others = [d for d in range(1, g.dim()) if d != dim]
    return (g.sum(others) if others else g) @ vector, None  # (B, C) @ (C,)


def contribution(g: torch.Tensor, terms: Terms, view: Callable[[torch.Tensor], torch.Tensor] | None, maps: bool
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The part of constants ``sum(scale * tensor)`` added to an output of gradient ``g`` (``view``: the part of
    that gradient they meet), and with ``maps`` its per-location map."""
    if view is not None:
        g = view(g)
    total, grid = None, None
    for tensor, scale in terms:
        if maps and g.dim() == 4:
            prod = g * tensor
            cells = prod.sum(1) * scale
            grid = cells if grid is None else grid + cells
        elif tensor.shape == g.shape:  # a full-size constant (caps, shortcuts): dot products
            prod = row_dots(g, tensor if tensor.dtype == g.dtype else tensor.to(g.dtype))
        else:  # sum the gradient over the axes the constant is broadcast along first: one pass, no temporary
            axes = [d for d in range(1, g.dim()) if tensor.dim() == g.dim() and tensor.shape[d] == 1 < g.shape[d]]
            prod = (g.sum(axes, keepdim=True) if axes else g) * tensor
        part = prod.reshape(prod.shape[0], -1).sum(1) * scale
        total = part if total is None else total + part
    return total, grid
