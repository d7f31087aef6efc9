"""Checks of public arguments, run before any work: each error names the argument and says what to give."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def flag(name: str, value) -> bool:
    """``value`` must be ``True`` or ``False`` (not a string, a number or None)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def integer(name: str, value, minimum: int | None = None, *, optional: bool = False) -> int | None:
    """``value`` must be an int (not a bool or a float) of at least ``minimum``; None too when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def number(name: str, value, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> float:
    """``value`` must be a finite real number inside the bounds (closed unless ``*_open``)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        raise ValueError(f"{name} must lie in {span}, got {value:g}")
    return value


def numbers(name: str, values, low: float | None = None, high: float | None = None, *,
            low_open: bool = False) -> list[float]:
    """A sequence of numbers, each checked as :func:`number` (a single number is not a sequence)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, torch.Tensor)) and not hasattr(
            values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}")
    out = list(values.tolist() if isinstance(values, torch.Tensor) else values)
    for v in out:
        number(f"each of {name}", v, low, high, low_open=low_open)
    return [float(v) for v in out]


def choice(name: str, value, options: Sequence[str]) -> str:
    """``value`` must be one of the strings ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}, got {value!r}")
    return value


def finite(name: str, t: torch.Tensor) -> None:
    """A float tensor must hold no NaN or infinite value."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds NaN or infinite values: give finite numbers")
