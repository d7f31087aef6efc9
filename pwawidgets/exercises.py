"""Automatic checks for the course's exercises: one style, one module.

An exercise in a notebook is three cells (``tests/test_exercises.py`` reads them by their tags):

1. a code cell tagged ``exercise-<id>``: the stub. It says that it is not done: a function whose body raises
   ``NotImplementedError("...")``, or a value set to ``...`` (Ellipsis);
2. a code cell tagged ``check-<id>``: one or more calls of :func:`check`;
3. a markdown cell tagged ``solution-<id>``: ``<details><summary>Solution</summary>`` around one fenced
   ``python`` block that replaces the stub. It never runs, so "Run All" never overwrites an answer.

A check never raises, so "Run All" on a fresh kernel runs through. It prints one line and returns True
(correct), False (wrong: what is wrong, and a hint) or None (not done yet: the hint).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

CORRECT = "✔"
WRONG = "✘"
NOT_DONE = "…"

__all__ = ["CORRECT", "NOT_DONE", "WRONG", "check", "check_true"]


class _NotDone(Exception):
    """The answer is still the stub."""


def _evaluate(answer: Any) -> Any:
    if answer is Ellipsis:
        raise _NotDone
    if callable(answer) and not isinstance(answer, (np.ndarray, type)) and not _is_tensor(answer):
        try:
            value = answer()
        except NotImplementedError as exc:
            raise _NotDone from exc
        if value is Ellipsis:
            raise _NotDone
        return value
    return answer


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _as_array(value: Any) -> np.ndarray:
    if _is_tensor(value):
        value = value.detach().cpu()
        value = value.double() if value.is_floating_point() else value
        return value.numpy()
    return np.asarray(value)


def _difference(mine: Any, expected: Any, rtol: float, atol: float) -> str | None:
    """What is wrong with ``mine`` against ``expected`` (None when they agree)."""
    if mine is None:
        return "the answer is None: did you forget to return (or assign) it?"
    if isinstance(expected, str) or isinstance(expected, bool):
        return None if mine == expected else f"expected {expected!r}, got {mine!r}"
    try:
        got = _as_array(mine)
        want = _as_array(expected)
    except (TypeError, ValueError) as exc:
        return f"could not read the answer as numbers ({exc})"
    if got.dtype == object:
        return f"could not read the answer as numbers (got {type(mine).__name__})"
    if got.shape != want.shape:
        if got.size == want.size and got.size > 0:
            return f"shape {got.shape}, expected {want.shape} (the numbers may be right: reshape or squeeze)"
        return f"shape {got.shape}, expected {want.shape}"
    if want.dtype == bool:
        bad = np.flatnonzero(got.astype(bool).ravel() != want.ravel())
        return None if len(bad) == 0 else f"{len(bad)} of {want.size} entries differ (first at index {bad[0]})"
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    if not np.isfinite(got64).all():
        return "the answer holds NaN or infinite values"
    err = np.abs(got64 - want64)
    allowed = atol + rtol * np.abs(want64)
    if (err <= allowed).all():
        return None
    i = int(np.argmax(err - allowed))
    where = "" if want.ndim == 0 else f" at index {np.unravel_index(i, want.shape)}"
    return (f"largest difference {err.ravel()[i]:.3g}{where}: expected {want64.ravel()[i]:.6g}, "
            f"got {got64.ravel()[i]:.6g}")


def _say(symbol: str, label: str, text: str) -> None:
    print(f"{symbol} {label}: {text}")


def check(
    label: str,
    answer: Any,
    expected: Any,
    *,
    hint: str,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    compare: Callable[[Any, Any], str | None] | None = None,
) -> bool | None:
    """Compare an exercise's answer with the expected value; print one line; never raise.

    Args:
        label: what is checked, e.g. ``"Exercise 2: the bias at conv4"``.
        answer: the learner's value, ``...`` (not done), or a zero-argument callable such as
            ``lambda: my_gradcam(dec, "conv4")``, called here so that a ``NotImplementedError`` (the stub) or
            any other error is reported, not raised.
        expected: the right value (number, array, tensor, list, string or bool).
        hint: one sentence that helps without giving the answer away.
        rtol, atol: tolerances of the numeric comparison.
        compare: ``compare(mine, expected)`` returning what is wrong, or None when it is right.
    """
    try:
        mine = _evaluate(answer)
    except _NotDone:
        _say(NOT_DONE, label, f"not done yet. {hint}")
        return None
    except Exception as exc:  # noqa: BLE001 - a learner's error is reported, never raised
        _say(WRONG, label, f"your code raised {type(exc).__name__}: {exc}. Hint: {hint}")
        return False
    try:
        problem = compare(mine, expected) if compare is not None else _difference(mine, expected, rtol, atol)
    except Exception as exc:  # noqa: BLE001
        problem = f"the answer could not be compared ({type(exc).__name__}: {exc})"
    if problem:
        _say(WRONG, label, f"{problem}. Hint: {hint}")
        return False
    _say(CORRECT, label, "correct.")
    return True


def check_true(label: str, answer: Any, condition: Callable[[Any], str | None], *, hint: str) -> bool | None:
    """Check a property of an answer: ``condition(mine)`` returns what is wrong, or None when it holds."""
    return check(label, answer, None, hint=hint, compare=lambda mine, _: condition(mine))


def finite_number(value: Any) -> float:
    """A Python float from a number, 0-d array or 1-element tensor (raises ``TypeError`` otherwise)."""
    arr = _as_array(value)
    if arr.size != 1:
        raise TypeError(f"expected one number, got {arr.size}")
    out = float(arr.reshape(()))
    if not math.isfinite(out):
        raise TypeError("expected a finite number")
    return out
