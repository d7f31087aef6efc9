"""The constant an operation adds inside a linear region, for :mod:`pwawidgets.kinds` (the registry says which
operation adds which) and :mod:`pwawidgets.bias` (which reads each constant's part of the bias)."""

from __future__ import annotations

from collections.abc import Callable

import torch

Constant = Callable[[Callable, tuple, dict, Callable[[object], bool]], "torch.Tensor | None"]


def argument(args: tuple, kwargs: dict, index: int, name: str, default=None):
    """An operation's argument, given by position or by name."""
    return args[index] if len(args) > index else kwargs.get(name, default)


# ------------------------------------------------------------------------------ constants inside a region
# With the activation pattern frozen, an operation is affine in its inputs that depend on a layer tensor h:
# out = D[in] + c. ``constant(func, args, kwargs, depends)`` gives c (broadcastable to the output; None when it
# is 0), read before the operation runs (an in-place one overwrites its input); ``depends(v)`` says whether an
# argument depends on h. Positively homogeneous operations (ReLU, max-pool, products by a constant) add nothing.

BIAS, BN_SHIFT, CAP, PADDING, ADDED, FILL = ("conv/linear bias", "BatchNorm shift", "activation cap",
                                             "padding value", "added tensor (shortcut)", "constant (where, fill, cat)")
CONSTANT_LABELS: tuple[str, ...] = (BIAS, BN_SHIFT, CAP, PADDING, ADDED, FILL)


def is_free(value, depends) -> bool:
    """An operand that adds something: a float tensor that does not depend on h, or a non-zero number."""
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and not depends(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0


def zeroed(func: Callable, args: tuple, kwargs: dict, depends) -> torch.Tensor:
    """The call with every input that depends on h set to 0: c of an operation affine in those inputs."""
    def zero(v):
        if isinstance(v, (list, tuple)):
            return type(v)(zero(u) for u in v)
        return torch.zeros_like(v) if isinstance(v, torch.Tensor) and v.is_floating_point() and depends(v) else v

    return func(*(zero(v) for v in args), **{k: zero(v) for k, v in kwargs.items()})


def operands(*positions: int, names: tuple[str, ...] = ()) -> Constant:
    """c of an operation affine in its inputs (sums, selection, filling): the call with h's inputs set to 0, made
    only when one of the operands at ``positions`` (or named ``names``) adds something."""

    def constant(func, args, kwargs, depends):
        values = [args[i] for i in positions if i < len(args)] + [kwargs[n] for n in names if n in kwargs]
        flat = [u for v in values for u in (v if isinstance(v, (list, tuple)) else (v,))]
        return zeroed(func, args, kwargs, depends) if any(is_free(v, depends) for v in flat) else None

    return constant


def layer_bias(func, args, kwargs, depends):
    """Convolutions and linear layers: their bias, along the channel axis (the last one for linear)."""
    bias = argument(args, kwargs, 2, "bias")
    if not isinstance(bias, torch.Tensor):
        return None
    x = args[0]
    if getattr(func, "__name__", "") == "linear" or x.dim() < 3:
        return bias
    return bias.reshape(1, -1, *([1] * (x.dim() - 2)))


def batch_norm_shift(func, args, kwargs, depends):
    """Eval BatchNorm: ``beta - gamma mu / sqrt(var + eps)`` per channel (batch statistics: not affine, None)."""
    x, mean, var = args[0], argument(args, kwargs, 1, "running_mean"), argument(args, kwargs, 2, "running_var")
    if mean is None or var is None or argument(args, kwargs, 5, "training", False):
        return None
    gamma, beta = argument(args, kwargs, 3, "weight"), argument(args, kwargs, 4, "bias")
    eps = argument(args, kwargs, 7, "eps", 1e-5)
    shift = -mean / (var + eps).sqrt()
    shift = shift if gamma is None else shift * gamma
    shift = shift if beta is None else shift + beta
    return shift.reshape(1, -1, *([1] * (x.dim() - 2)))


def capped(levels: Callable[[Callable, tuple, dict], tuple], strict: bool) -> Constant:
    """A clamp to ``[low, high]``: the cap value on the units it holds there (autograd's gradient is 0 there:
    at the cap itself too for hardtanh and ReLU6, ``strict=False``; only beyond it for clamp)."""

    def constant(func, args, kwargs, depends):
        x = args[0].detach()
        low, high = levels(func, args, kwargs)
        c = None
        for level, held in ((low, x.lt if strict else x.le), (high, x.gt if strict else x.ge)):
            if level is not None and not (isinstance(level, (int, float)) and level == 0):
                part = held(level).to(x.dtype) * level
                c = part if c is None else c + part
        return c

    return constant


def clamp_caps(func, args, kwargs) -> tuple:
    name = getattr(func, "__name__", "")
    if name.startswith("clamp_max"):
        return None, argument(args, kwargs, 1, "max")
    return argument(args, kwargs, 1, "min"), argument(args, kwargs, 2, "max")


def hardsigmoid_offset(func, args, kwargs, depends):
    """``x / 6 + 1/2`` inside (-3, 3), 1 from 3 on."""
    x = args[0].detach()
    return ((x > -3) & (x < 3)).to(x.dtype) * 0.5 + (x >= 3).to(x.dtype)


def threshold_value(func, args, kwargs, depends):
    x, level, value = args[0].detach(), argument(args, kwargs, 1, "threshold"), argument(args, kwargs, 2, "value")
    return (x <= level).to(x.dtype) * value if value else None


def softshrink_offset(func, args, kwargs, depends):
    if getattr(func, "__name__", "") != "softshrink":
        return None  # hardshrink: x or 0
    x, lam = args[0].detach(), argument(args, kwargs, 1, "lambd", 0.5)
    return ((x < -lam).to(x.dtype) - (x > lam).to(x.dtype)) * lam


def larger_operand(func, args, kwargs, depends):
    """``maximum(h, b)`` (or minimum) with ``b`` free of h: ``b`` where it is taken."""
    a, b = args[0], argument(args, kwargs, 1, "other")
    if not isinstance(b, torch.Tensor) or depends(a) == depends(b):
        return None
    h, free = (a, b) if depends(a) else (b, a)
    taken = free > h if "max" in getattr(func, "__name__", "") else free < h
    return taken.to(h.dtype) * free


def padding_value(func, args, kwargs, depends):
    """``F.pad`` in constant mode: the fill value where it pads (0 adds nothing; other modes copy)."""
    if argument(args, kwargs, 2, "mode", "constant") != "constant" or not argument(args, kwargs, 3, "value"):
        return None
    return zeroed(func, args, kwargs, depends)
