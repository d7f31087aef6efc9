"""What a network may contain to be piece-wise affine, and where its piece-wise parts switch.

One registry, read by layer capture (which modules are activations: the ``"all"`` preset), by the audit (is
every operation piece-wise affine in the input?) and by the region radius (how far along a direction until some
operation switches to another affine piece). Adding an activation is one entry here.

Categories of an operation, judged by what it does to values that depend on the input:

- ``affine``: linear maps plus constants (convolutions, sums, reshapes, padding, average pooling...);
- ``bilinear``: affine in each operand (products, matrix products, convolutions by a computed kernel): piece-wise
  affine only while at most one operand depends on the input;
- ``division``: affine in the numerator, not in the denominator;
- ``piecewise``: piece-wise affine with switch points (ReLU and kin, max-pooling, clamp, abs, max/min; sort, topk,
  kthvalue and median values: they switch where two entries meet);
- ``step``: piece-wise constant (comparisons, sign, floor, argmax, argsort): fine as masks or indices (a gather
  by them switches where the index does);
- ``smooth``: not piece-wise affine when applied to input-dependent values (exp, sigmoid, GELU, LayerNorm...);
- ``mode``: depends on the training flag (BatchNorm, Dropout, RReLU): affine in eval mode only;
- ``lookup``: an embedding: its output is a new continuous tensor (decompose after it, not at its integer input);
- ``shape``: reads metadata (``x.shape``, ``x.dim()``): a constant;
- ``detach``: cuts the gradient, so ``w`` misses that path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from .region_constants import (
    ADDED,
    BIAS,
    BN_SHIFT,
    CAP,
    FILL,
    PADDING,
    Constant,
    argument,
    batch_norm_shift,
    capped,
    clamp_caps,
    hardsigmoid_offset,
    larger_operand,
    layer_bias,
    operands,
    padding_value,
    softshrink_offset,
    threshold_value,
)

AFFINE, BILINEAR, DIVISION, PIECEWISE, STEP, SMOOTH = "affine", "bilinear", "division", "piecewise", "step", "smooth"
MODE, LOOKUP, SHAPE, DETACH = "mode", "lookup", "shape", "detach"

Switches = Callable[[tuple, dict], list[torch.Tensor]]


@dataclass(frozen=True)
class Kind:
    """One kind of operation: its category, the modules, functions and Tensor methods that perform it, and (for
    piece-wise and step kinds) how to find the smallest step ``t >= 0`` at which it switches."""

    name: str
    category: str
    modules: tuple[type[nn.Module], ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    switches: Switches | None = None
    activation: bool = False  # its module's output is an activation (the "all" preset)
    constant: Constant | None = None  # the constant it adds inside a linear region (see "constants" below)
    adds: str = ""  # what that constant is, for people (one of CONSTANT_LABELS)


# ------------------------------------------------------------------------------------------ switch steps


def _dual(value) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(primal, tangent) of a tensor under forward-mode AD; (value, None) for constants and numbers."""
    if not isinstance(value, torch.Tensor):
        return (None if value is None else torch.as_tensor(value)), None
    primal, tangent = fwAD.unpack_dual(value)
    return primal.detach(), (None if tangent is None else tangent.detach())


def _per_example(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Smallest step per example ``(batch,)`` of a tensor of steps whose first axis is the batch."""
    if t.dim() == 0 or t.shape[0] != batch:
        return t.reshape(-1).amin().expand(batch) if t.numel() else torch.full((batch,), float("inf"))
    return t.flatten(1).amin(1) if t.dim() > 1 else t


def crossing(z: torch.Tensor, dz: torch.Tensor, level: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Per entry, the smallest ``t >= 0`` with ``z + t dz == level`` (inf where never)."""
    level = torch.as_tensor(level, dtype=z.dtype, device=z.device)
    t = (level - z) / dz
    return torch.where((dz != 0) & (t >= 0), t, torch.full_like(t, float("inf")))


def _levels(levels: Sequence) -> Switches:
    """Switches of an elementwise function of its first argument at fixed levels read from the call."""

    def switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
        z, dz = _dual(args[0])
        if dz is None:
            return []
        values = levels(args, kwargs) if callable(levels) else levels
        return [_per_example(crossing(z, dz, v), z.shape[0]) for v in values if v is not None]

    return switches


def _difference(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """Switches of a two-operand comparison, max or min: where ``a - b`` crosses 0."""
    a, da = _dual(args[0])
    b_value = argument(args, kwargs, 1, "other")
    if b_value is None or isinstance(b_value, (int, float)) and not isinstance(b_value, bool):
        b_value = 0.0 if b_value is None else b_value
    b, db = _dual(b_value)
    if da is None and db is None:
        return []
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    diff = a - b.to(a.device, a.dtype)
    rate = (da if da is not None else zero) - (db.to(a.device) if db is not None else zero)
    batch = max(a.shape[0] if a.dim() else 1, 1)
    return [_per_example(crossing(diff, rate.expand_as(diff)), batch)]


def _max_or_min(minimum: bool) -> Switches:
    """``torch.max(x, other)`` switches like a comparison; ``torch.max(x, dim)`` like a window over ``dim`` (a
    minimum is the maximum of the negated values)."""

    def switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
        other = argument(args, kwargs, 1, "other")
        if isinstance(other, torch.Tensor):
            return _difference(args, kwargs)
        return _reduction_switches(args[0], argument(args, kwargs, 1, "dim"), minimum)

    return switches


def _reduction(minimum: bool) -> Switches:
    return lambda args, kwargs: _reduction_switches(args[0], argument(args, kwargs, 1, "dim"), minimum)


def _arg_extreme(minimum: bool) -> Switches:
    """Switches of argmax/argmin: the index changes where another entry overtakes the extreme one; without
    ``dim``, over the whole tensor (batch included)."""

    def switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
        dim = argument(args, kwargs, 1, "dim")
        if dim is None:
            v, dv = _dual(args[0])
            if dv is None or v.dim() == 0:
                return []
            batch = v.shape[0]
            steps = _reduction_switches(args[0].reshape(1, -1), 1, minimum)
            return [s.expand(batch) for s in steps]
        return _reduction_switches(args[0], dim, minimum)

    return switches


def _reduction_switches(x, dims, minimum: bool = False) -> list[torch.Tensor]:
    v, dv = _dual(x)
    if dv is None or v.dim() == 0:
        return []
    if minimum:
        v, dv = -v, -dv
    if dims is None:
        dims = tuple(range(1, v.dim()))
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    dims = tuple(d % v.dim() for d in dims)
    if 0 in dims:  # across the batch: every example sees the first switch
        steps = _window_steps(v.reshape(1, -1, 1), dv.reshape(1, -1, 1), axis=-2)
        return [steps.amin().expand(v.shape[0])]
    keep = [d for d in range(v.dim()) if d not in dims]
    values = v.permute(*keep, *dims).flatten(len(keep))
    rates = dv.permute(*keep, *dims).flatten(len(keep))
    return [_per_example(_window_steps(values.unsqueeze(-1), rates.unsqueeze(-1), axis=-2), v.shape[0])]


def _order_steps(x, dim: int, kept: Callable[[int], tuple[int, int]] | None = None) -> list[torch.Tensor]:
    """Steps at which entries along ``dim`` change places. ``kept(n)`` is the range ``[a, b)`` of ascending sorted
    positions whose values are read (the top k, the k-th, the median): they switch when two of them meet or one of
    them meets any other entry. None: every position (sort, argsort), where the first change of order is always
    between neighbours in sorted order."""
    v, dv = _dual(x)
    if dv is None or v.dim() == 0:
        return []
    batch = v.shape[0]
    v, dv = v.movedim(dim, -1), dv.expand_as(v).movedim(dim, -1)
    if dim % x.dim() == 0:  # across the batch: every example sees the first switch
        v, dv = v.reshape(1, -1), dv.reshape(1, -1)
    n = v.shape[-1]
    ordered, idx = torch.sort(v, dim=-1, stable=True)
    rates = dv.gather(-1, idx)
    a, b = (0, n) if kept is None else kept(n)
    a, b = max(a, 0), min(b, n)
    # neighbours among the kept positions
    steps = crossing(ordered[..., a + 1:b] - ordered[..., a:b - 1], rates[..., a + 1:b] - rates[..., a:b - 1])
    steps = steps.flatten(1).amin(1) if steps.numel() else torch.full((v.shape[0],), float("inf"), dtype=v.dtype,
                                                                      device=v.device)
    if kept is not None and 0 < b - a < n:  # a kept entry meets one left out
        out = torch.cat([ordered[..., :a], ordered[..., b:]], -1)
        out_rates = torch.cat([rates[..., :a], rates[..., b:]], -1)
        meet = crossing(ordered[..., a:b, None] - out[..., None, :], rates[..., a:b, None] - out_rates[..., None, :])
        steps = torch.minimum(steps, meet.flatten(1).amin(1))
    steps = torch.where(steps.isnan(), torch.full_like(steps, float("inf")), steps)
    return [steps if steps.shape[0] == batch else steps.amin().expand(batch)]


def _sort_switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """sort and argsort: any two neighbours meet."""
    return _order_steps(args[0], argument(args, kwargs, 1, "dim", -1))


def _topk_switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """topk: two of the k kept entries meet (their order), or one of them meets an entry left out (the set)."""
    k = int(argument(args, kwargs, 1, "k"))
    largest = argument(args, kwargs, 3, "largest", True)
    return _order_steps(args[0], argument(args, kwargs, 2, "dim", -1),
                        (lambda n: (n - k, n)) if largest else (lambda n: (0, k)))


def _kthvalue_switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """kthvalue: the k-th smallest entry meets another."""
    k = int(argument(args, kwargs, 1, "k"))
    return _order_steps(args[0], argument(args, kwargs, 2, "dim", -1), lambda n: (k - 1, k))


def _median_switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """median (the lower one, as torch returns it) meets another entry; without ``dim``, over the whole tensor."""
    dim = argument(args, kwargs, 1, "dim")
    x = args[0]
    if dim is None:
        v, dv = _dual(x)
        if dv is None or v.dim() == 0:
            return []
        x, dim = x.reshape(1, -1), 1
        steps = _order_steps(x, dim, _lower_median)
        return [s.expand(v.shape[0]) for s in steps]
    return _order_steps(x, dim, _lower_median)


def _lower_median(n: int) -> tuple[int, int]:
    return (n - 1) // 2, (n - 1) // 2 + 1


def _window_steps(values: torch.Tensor, rates: torch.Tensor, axis: int) -> torch.Tensor:
    """Per window (entries along ``axis``), the smallest step before another entry overtakes the maximum.

    A minimum is the maximum of the negated values, so callers negate for min."""
    top, idx = values.max(dim=axis, keepdim=True)
    gap, closing = top - values, rates - rates.gather(axis, idx)
    t = gap / closing
    valid = (closing > 0) & torch.isfinite(gap)
    return torch.where(valid, t, torch.full_like(t, float("inf")))


def _pool_switches(dims: int, adaptive: bool) -> Switches:
    """Switches of a max-pool: another entry of a window overtakes its maximum."""

    def switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
        v, dv = _dual(args[0])
        if dv is None:
            return []
        windows = _pool_windows(v, dv, args, kwargs, dims, adaptive)
        if windows is None:
            raise NotImplementedError("max-pool with ceil_mode, an uneven adaptive grid or 3-D windows")
        vals, rates = windows
        return [_per_example(_window_steps(vals, rates, axis=2), v.shape[0])]

    return switches


def _pair(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _pool_windows(v, dv, args, kwargs, dims, adaptive):
    """Max-pool windows of ``v`` and ``dv`` as ``(B, C, window, positions)``; None where not modelled."""
    if dims == 3 or v.dim() < dims + 1:
        return None
    if dims == 1:  # a 1-D pool is a 2-D pool over a height of 1
        v, dv = v.unsqueeze(-2), dv.unsqueeze(-2)
    if v.dim() == 3:  # unbatched (C, H, W)
        v, dv = v.unsqueeze(0), dv.unsqueeze(0)
    h, w = v.shape[-2:]
    if adaptive:
        out = _pair(argument(args, kwargs, 1, "output_size"), dims)
        out = (1, *out) if dims == 1 else out
        oh, ow = (h if out[0] is None else out[0]), (w if out[1] is None else out[1])
        if h % oh or w % ow:
            return None
        kernel, stride, padding, dilation = (h // oh, w // ow), (h // oh, w // ow), (0, 0), (1, 1)
    else:
        if argument(args, kwargs, 5, "ceil_mode", False):
            return None
        kernel = _pair(argument(args, kwargs, 1, "kernel_size"), dims)
        stride = argument(args, kwargs, 2, "stride") or kernel
        stride = _pair(stride, dims)
        padding = _pair(argument(args, kwargs, 3, "padding", 0), dims)
        dilation = _pair(argument(args, kwargs, 4, "dilation", 1), dims)
        if dims == 1:
            kernel, stride, padding, dilation = (1, *kernel), (1, *stride), (0, *padding), (1, *dilation)
    pads = (padding[1], padding[1], padding[0], padding[0])
    vp = F.pad(v, pads, value=float("-inf"))
    dvp = F.pad(dv, pads, value=0.0)
    return _windows(vp, kernel, stride, dilation), _windows(dvp, kernel, stride, dilation)


def _windows(x: torch.Tensor, kernel, stride, dilation) -> torch.Tensor:
    """Pooling windows of a ``(B, C, H, W)`` tensor as ``(B, C, window, positions)``, from strided views (no
    ``F.unfold``, which is slow on a busy CPU)."""
    for axis, (k, s, d) in enumerate(zip(kernel, stride, dilation, strict=True), start=2):
        x = x.unfold(axis, d * (k - 1) + 1, s)[..., ::d]  # appends one window axis per spatial axis
    b, c, oh, ow, kh, kw = x.shape
    return x.reshape(b, c, oh * ow, kh * kw).transpose(2, 3)


def _integer_steps(offset: float) -> Switches:
    """Switches of floor/ceil/round: the value crosses the next boundary ``k + offset``."""

    def switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
        z, dz = _dual(args[0])
        if dz is None:
            return []
        up = torch.floor(z - offset) + 1 + offset
        down = torch.ceil(z - offset) - 1 + offset
        level = torch.where(dz > 0, up, down)
        return [_per_example(crossing(z, dz, level), z.shape[0])]

    return switches


def _clamp_levels(args: tuple, kwargs: dict) -> list:
    return [argument(args, kwargs, 1, "min"), argument(args, kwargs, 2, "max")]


def _hardtanh_levels(args: tuple, kwargs: dict) -> list:
    return [argument(args, kwargs, 1, "min_val", -1.0), argument(args, kwargs, 2, "max_val", 1.0)]


def _shrink_levels(args: tuple, kwargs: dict) -> list:
    lam = argument(args, kwargs, 1, "lambd", 0.5)
    return [-lam, lam]


def _threshold_levels(args: tuple, kwargs: dict) -> list:
    return [argument(args, kwargs, 1, "threshold")]


def _pool_dispatch(adaptive: bool) -> Switches:
    """Switches of a max-pool called through any of its functions (1-D and 2-D windows are modelled)."""

    def switches(args: tuple, kwargs: dict) -> list[torch.Tensor]:
        v, _ = _dual(args[0])
        dims = 3 if v is not None and v.dim() == 5 else 2
        if v is not None and v.dim() == 3 and _is_1d_pool(args, kwargs, adaptive):
            dims = 1
        return _pool_switches(dims, adaptive)(args, kwargs)

    return switches


def _is_1d_pool(args: tuple, kwargs: dict, adaptive: bool) -> bool:
    size = argument(args, kwargs, 1, "output_size" if adaptive else "kernel_size")
    return isinstance(size, int) or (isinstance(size, (tuple, list)) and len(size) == 1)



# ----------------------------------------------------------------------------------------- the registry


def _fns(*names: str, module=F) -> tuple[Callable, ...]:
    """The functions of ``module`` with these names that exist in this PyTorch."""
    return tuple(getattr(module, n) for n in names if hasattr(module, n))


def _tensor_methods(*names: str) -> tuple[Callable, ...]:
    """Tensor methods (and their in-place forms) as ``__torch_function__`` sees them."""
    out = []
    for n in names:
        for variant in (n, n + "_", f"__{n}__", f"__i{n}__", f"__r{n}__"):
            if hasattr(torch.Tensor, variant):
                out.append(getattr(torch.Tensor, variant))
    return tuple(out)


_ZERO = (0.0,)

KINDS: tuple[Kind, ...] = (
    # piece-wise affine activations
    Kind("relu", PIECEWISE, (nn.ReLU,), _fns("relu", "relu_") + _fns("relu", "relu_", module=torch)
         + _tensor_methods("relu"), ("relu",), _levels(_ZERO), activation=True),
    Kind("leaky_relu", PIECEWISE, (nn.LeakyReLU,), _fns("leaky_relu", "leaky_relu_"), ("leaky_relu",),
         _levels(_ZERO), activation=True),
    Kind("prelu", PIECEWISE, (nn.PReLU,), _fns("prelu") + _fns("prelu", module=torch), ("prelu",), _levels(_ZERO),
         activation=True),
    Kind("relu6", PIECEWISE, (nn.ReLU6,), _fns("relu6"), (), _levels((0.0, 6.0)), activation=True,
         constant=capped(lambda f, a, k: (0.0, 6.0), strict=False), adds=CAP),
    Kind("hardtanh", PIECEWISE, (nn.Hardtanh,), _fns("hardtanh", "hardtanh_"), (), _levels(_hardtanh_levels),
         activation=True, constant=capped(lambda f, a, k: tuple(_hardtanh_levels(a, k)), strict=False), adds=CAP),
    Kind("rrelu", MODE, (nn.RReLU,), _fns("rrelu", "rrelu_"), (), _levels(_ZERO), activation=True),
    Kind("threshold", PIECEWISE, (nn.Threshold,), _fns("threshold", "threshold_", "threshold_value"), (),
         _levels(_threshold_levels), activation=True, constant=threshold_value, adds=CAP),
    Kind("hardsigmoid", PIECEWISE, (nn.Hardsigmoid,), _fns("hardsigmoid"), (), _levels((-3.0, 3.0)),
         activation=True, constant=hardsigmoid_offset, adds=CAP),
    Kind("shrink", PIECEWISE, (nn.Softshrink, nn.Hardshrink), _fns("softshrink", "hardshrink")
         + _tensor_methods("hardshrink"), ("hardshrink",), _levels(_shrink_levels), activation=True,
         constant=softshrink_offset, adds=CAP),
    Kind("clamp", PIECEWISE, (), _fns("clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_max", module=torch)
         + _tensor_methods("clamp", "clip", "clamp_min", "clamp_max"), ("clamp", "clip", "clamp_min", "clamp_max"),
         _levels(_clamp_levels), constant=capped(clamp_caps, strict=True), adds=CAP),
    Kind("abs", PIECEWISE, (), _fns("abs", "absolute", module=torch) + _tensor_methods("abs", "absolute")
         + (operator.abs,), ("abs", "absolute"), _levels(_ZERO)),
    Kind("maximum", PIECEWISE, (), _fns("maximum", "minimum", "fmax", "fmin", module=torch)
         + _tensor_methods("maximum", "minimum", "fmax", "fmin"), ("maximum", "minimum", "fmax", "fmin"),
         _difference, constant=larger_operand, adds=CAP),
    Kind("max", PIECEWISE, (), _fns("max", module=torch) + _tensor_methods("max"), ("max",), _max_or_min(False),
         constant=larger_operand, adds=CAP),
    Kind("min", PIECEWISE, (), _fns("min", module=torch) + _tensor_methods("min"), ("min",), _max_or_min(True),
         constant=larger_operand, adds=CAP),
    Kind("amax", PIECEWISE, (), _fns("amax", module=torch) + _tensor_methods("amax"), ("amax",), _reduction(False)),
    Kind("amin", PIECEWISE, (), _fns("amin", module=torch) + _tensor_methods("amin"), ("amin",), _reduction(True)),
    Kind("sort", PIECEWISE, (), _fns("sort", module=torch) + _tensor_methods("sort"), ("sort",), _sort_switches),
    Kind("topk", PIECEWISE, (), _fns("topk", module=torch) + _tensor_methods("topk"), ("topk",), _topk_switches),
    Kind("kthvalue", PIECEWISE, (), _fns("kthvalue", module=torch) + _tensor_methods("kthvalue"), ("kthvalue",),
         _kthvalue_switches),
    Kind("median", PIECEWISE, (), _fns("median", "nanmedian", module=torch) + _tensor_methods("median", "nanmedian"),
         ("median", "nanmedian"), _median_switches),
    Kind("max_pool", PIECEWISE, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d),
         _fns("max_pool1d", "max_pool2d", "max_pool3d", "_max_pool1d", "_max_pool2d", "_max_pool3d",
              "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices")
         + _fns("max_pool1d", "max_pool2d", "max_pool3d", module=torch), (), _pool_dispatch(adaptive=False)),
    Kind("adaptive_max_pool", PIECEWISE, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
         _fns("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "_adaptive_max_pool1d",
              "_adaptive_max_pool2d", "_adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
              "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices"), (),
         _pool_dispatch(adaptive=True)),
    Kind("select", PIECEWISE, (), _fns("where", "masked_fill", module=torch) + _tensor_methods("where", "masked_fill"),
         ("where", "masked_fill"), lambda args, kwargs: [], constant=operands(1, 2, names=("input", "other", "value")),
         adds=FILL),
    # piece-wise constant
    Kind("compare", STEP, (), _fns("gt", "ge", "lt", "le", "eq", "ne", "greater", "less", module=torch)
         + _tensor_methods("gt", "ge", "lt", "le", "eq", "ne")
         + (operator.gt, operator.ge, operator.lt, operator.le, operator.eq, operator.ne),
         ("gt", "ge", "lt", "le", "eq", "ne"), _difference),
    Kind("sign", STEP, (), _fns("sign", "heaviside", "signbit", module=torch) + _tensor_methods("sign", "heaviside"),
         ("sign", "heaviside", "signbit"), _levels(_ZERO)),
    Kind("floor", STEP, (), _fns("floor", "trunc", "floor_divide", module=torch) + _tensor_methods("floor", "trunc")
         + (operator.floordiv,), ("floor", "trunc", "floor_divide"), _integer_steps(0.0)),
    Kind("ceil", STEP, (), _fns("ceil", module=torch) + _tensor_methods("ceil"), ("ceil",), _integer_steps(0.0)),
    Kind("round", STEP, (), _fns("round", module=torch) + _tensor_methods("round"), ("round",), _integer_steps(0.5)),
    Kind("argmax", STEP, (), _fns("argmax", module=torch) + _tensor_methods("argmax"), ("argmax",),
         _arg_extreme(False)),
    Kind("argmin", STEP, (), _fns("argmin", module=torch) + _tensor_methods("argmin"), ("argmin",),
         _arg_extreme(True)),
    Kind("argsort", STEP, (), _fns("argsort", module=torch) + _tensor_methods("argsort"), ("argsort",),
         _sort_switches),
    Kind("logic", STEP, (), (operator.and_, operator.or_, operator.xor, operator.invert, operator.not_)
         + _fns("logical_and", "logical_or", "logical_not", module=torch), ("logical_and", "logical_or",
         "logical_not", "bool", "long", "int"), lambda args, kwargs: []),
    # affine
    Kind("sum", AFFINE, (), (operator.add, operator.iadd, operator.sub, operator.isub)
         + _fns("add", "sub", "subtract", "rsub", module=torch) + _tensor_methods("add", "sub", "subtract", "rsub"),
         ("add", "sub", "subtract", "rsub"), None, constant=operands(0, 1, names=("input", "other")), adds=ADDED),
    Kind("concat", AFFINE, (), _fns("cat", "concat", "concatenate", "stack", "hstack", "vstack", module=torch), (),
         None, constant=operands(0, names=("tensors",)), adds=FILL),
    Kind("pad", AFFINE, (
        nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
        nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d, nn.ReplicationPad2d,
        nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d), _fns("pad"), (), None,
        constant=padding_value, adds=PADDING),
    Kind("affine", AFFINE, (
        nn.Identity, nn.Flatten, nn.Unflatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
        nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle, nn.Fold, nn.Unfold),
        (operator.neg, operator.pos, operator.getitem) + _tensor_methods("getitem", "neg")
        + _fns("neg", "negative", "flatten", "reshape", "transpose", "permute", "squeeze", "unsqueeze", "mean",
               "sum", "chunk", "split", "narrow", "select", "index_select", "gather", "roll", "flip", "cumsum", "diff",
               "movedim", "swapaxes", "tile", "repeat_interleave", "t", "diagonal", "unbind", "nansum",
               module=torch)
        + _fns("interpolate", "upsample", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
               "adaptive_avg_pool2d", "adaptive_avg_pool3d", "pixel_shuffle", "pixel_unshuffle", "unfold", "fold",
               "channel_shuffle", "native_channel_shuffle"),
        ("view", "reshape", "flatten", "unflatten", "permute", "transpose", "contiguous",
         "mean", "sum", "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "chunk", "split", "clone", "neg",
         "view_as", "reshape_as", "narrow", "select", "index_select", "gather", "roll", "flip", "cumsum", "t",
         "movedim", "unbind", "float", "double", "half", "bfloat16", "to", "type", "type_as", "cpu", "cuda",
         "diagonal", "squeeze_", "unsqueeze_", "nansum", "requires_grad_"), None),
    Kind("linear", BILINEAR, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                              nn.ConvTranspose3d, nn.Linear, nn.LazyLinear, nn.LazyConv1d, nn.LazyConv2d,
                              nn.LazyConv3d),
         _fns("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
         (), None, constant=layer_bias, adds=BIAS),
    Kind("addmm", BILINEAR, (), _fns("addmm", "baddbmm", module=torch) + _tensor_methods("addmm", "baddbmm"),
         ("addmm", "baddbmm"), None, constant=operands(0, names=("input",)), adds=BIAS),
    Kind("bilinear", BILINEAR, (), (operator.mul, operator.imul, operator.matmul, operator.imatmul)
         + _fns("mul", "multiply", "matmul", "mm", "bmm", "einsum", "outer", "dot", "mv", "tensordot", "kron",
                module=torch) + _tensor_methods("mul", "multiply", "matmul", "mm", "bmm"),
         ("mul", "multiply", "matmul", "mm", "bmm", "outer", "dot", "mv"), None),
    Kind("division", DIVISION, (), (operator.truediv, operator.itruediv) + _fns("div", "divide", "true_divide",
                                                                                  module=torch),
         ("div", "divide", "true_divide"), None),
    Kind("batch_norm", MODE, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                              nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d), _fns("batch_norm"), (),
         None, constant=batch_norm_shift, adds=BN_SHIFT),
    Kind("dropout", MODE, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                           nn.FeatureAlphaDropout), _fns("dropout", "dropout1d", "dropout2d", "dropout3d",
                                                         "alpha_dropout", "feature_alpha_dropout"), (), None),
    Kind("embedding", LOOKUP, (nn.Embedding, nn.EmbeddingBag), _fns("embedding", "embedding_bag"), (), None),
    Kind("shape", SHAPE, (), _fns("zeros_like", "ones_like", "full_like", "empty_like", "zeros", "ones", "full",
                                  "arange", "numel", "tensor", "as_tensor", module=torch)
         + (len,), ("size", "dim", "numel", "ndimension", "nelement", "new_zeros", "new_ones", "new_full",
                             "new_empty", "new_tensor", "zero_"), None),
    Kind("detach", DETACH, (), _fns("detach", module=torch), ("detach", "detach_", "data"), None),
    # smooth: not piece-wise affine
    Kind("smooth", SMOOTH, (
        nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.Softmax2d, nn.LogSoftmax, nn.Softmin, nn.Softplus,
        nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Hardswish, nn.LogSigmoid, nn.Tanhshrink, nn.Softsign, nn.GLU,
        nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm,
        nn.CrossMapLRN2d, nn.RMSNorm, nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase, nn.Bilinear, nn.LPPool1d,
        nn.LPPool2d, nn.Transformer, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.CosineSimilarity,
        nn.PairwiseDistance),
        _fns("gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax", "softmin", "softplus", "elu", "elu_",
             "selu", "celu", "mish", "hardswish", "logsigmoid", "tanhshrink", "softsign", "glu", "layer_norm",
             "group_norm", "instance_norm", "local_response_norm", "rms_norm", "normalize",
             "scaled_dot_product_attention", "lp_pool1d", "lp_pool2d", "cosine_similarity", "pairwise_distance")
        + _fns("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "sigmoid", "tanh", "erf",
               "erfc", "sin", "cos", "tan", "atan", "asin", "acos", "sinh", "cosh", "asinh", "atanh", "pow",
               "square", "reciprocal", "softmax", "log_softmax", "logsumexp", "norm", "std", "var", "var_mean",
               "std_mean", "prod", "cumprod", "special_erf", "atan2", "hypot", "lgamma", "digamma", module=torch)
        + (operator.pow, operator.ipow),
        ("sigmoid", "tanh", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "softmax",
         "log_softmax", "pow", "square", "reciprocal", "erf", "erfc", "sin", "cos", "tan", "atan", "norm", "std",
         "var", "prod", "cumprod", "logsumexp", "sinh", "cosh"), None),
)


for _kind in KINDS:  # the region radius reads where every piece-wise or step kind switches
    if _kind.category in (PIECEWISE, STEP) and _kind.switches is None:
        raise AssertionError(f"kind {_kind.name!r} has no switch function")

# lookups -------------------------------------------------------------------------------------------------

_BY_MODULE: dict[type, Kind] = {m: k for k in KINDS for m in k.modules}
_BY_FUNCTION: dict[Callable, Kind] = {}
for _kind in KINDS:
    for _fn in _kind.functions:
        _BY_FUNCTION.setdefault(_fn, _kind)
_BY_METHOD: dict[str, Kind] = {m: k for k in KINDS for m in k.methods}

ACTIVATION_MODULES: tuple[type[nn.Module], ...] = tuple(m for k in KINDS if k.activation for m in k.modules)
"""Module types whose outputs are activations: the ``"all"`` preset captures every call of these."""


def kind_of_module(module: nn.Module) -> Kind | None:
    """The kind of a leaf module (by type, most derived registered class first); None when unknown."""
    for cls in type(module).__mro__:
        kind = _BY_MODULE.get(cls)
        if kind is not None:
            return kind
    if type(module).__module__.startswith("torch.nn.modules.activation"):
        return _SMOOTH_ACTIVATION
    return None


def kind_of_function(fn: Callable) -> Kind | None:
    """The kind of a function or Tensor method as torch.fx or ``__torch_function__`` records it."""
    try:
        return _BY_FUNCTION.get(fn)
    except TypeError:  # unhashable
        return None


def kind_of_method(name: str) -> Kind | None:
    """The kind of a Tensor method called by name (torch.fx ``call_method``); in-place forms count as theirs."""
    kind = _BY_METHOD.get(name)
    if kind is None and name.endswith("_") and not name.endswith("__"):
        kind = _BY_METHOD.get(name[:-1])
    return kind


_KIND_OF_CALL: dict = {}  # fn -> its kind: every forward pass asks this for each of its operations


def kind_of_call(fn: Callable) -> Kind | None:
    """The kind of a call as ``__torch_function__`` sees it: a function, or a Tensor method by its name."""
    try:
        return _KIND_OF_CALL[fn]
    except KeyError:
        kind = _KIND_OF_CALL[fn] = _kind_of_call(fn)
        return kind
    except TypeError:  # unhashable
        return _kind_of_call(fn)


def _kind_of_call(fn: Callable) -> Kind | None:
    kind = kind_of_function(fn)
    name = getattr(fn, "__name__", "")
    if kind is None and name and getattr(torch.Tensor, name, None) is fn:
        core = name[2:-2] if name.startswith("__") and name.endswith("__") else name
        kind = kind_of_method(core) or (kind_of_method(core[1:]) if core[:1] in ("i", "r") else None)
    return kind


_SMOOTH_ACTIVATION = Kind("activation", SMOOTH)


def is_activation(module: nn.Module) -> bool:
    """True for modules whose output is an activation (ReLU and its piece-wise kin)."""
    return isinstance(module, ACTIVATION_MODULES)


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LazyBatchNorm1d,
               nn.LazyBatchNorm2d, nn.LazyBatchNorm3d)


def training_finding(module: nn.Module) -> str | None:
    """Why a mode-dependent module is not affine now (None when it is, i.e. in eval mode)."""
    if isinstance(module, BATCH_NORMS):
        if not module.track_running_stats or module.running_mean is None:
            return "uses batch statistics (track_running_stats=False): not a fixed affine map"
        if module.training:
            return "in training mode (normalises by batch statistics): call model.eval() first"
        return None
    if isinstance(module, nn.RReLU) and module.training:
        return "in training mode (random negative slopes): call model.eval() first"
    if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                           nn.FeatureAlphaDropout)) and module.training and module.p > 0:
        return "in training mode (random masks): call model.eval() first"
    return None
