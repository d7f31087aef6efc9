"""Automatic checks for the course's exercises: one style, one module.

An exercise in a notebook is three cells (``tests/test_exercises.py`` reads them by their tags):

1. a code cell tagged ``exercise-<id>``: the stub. It says that it is not done: a function whose body raises
   ``NotImplementedError("...")``, or a value set to ``...`` (Ellipsis);
2. a code cell tagged ``check-<id>``: one or more calls of :func:`check` (or :func:`check_true`,
   :func:`check_block_split`);
3. a markdown cell tagged ``solution-<id>``: ``<details><summary>Solution</summary>`` around one fenced
   ``python`` block that replaces the stub. It never runs, so "Run All" never overwrites an answer.

A check never raises, so "Run All" on a fresh kernel runs through. It prints one line and returns True
(correct), False (wrong) or None (not done yet). A check that cannot be gamed:

- it never prints the expected value, nor any entry of it: a wrong answer is told *what kind* of wrong it is
  (shape, transposed, sign, off by a constant factor or offset, a named term such as the bias missing or counted
  twice, which entries differ), computed from the answer against the expected value;
- "not done yet" says only that; the hint is printed only after a wrong attempt.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

CORRECT = "✔"
WRONG = "✘"
NOT_DONE = "…"

__all__ = ["CORRECT", "NOT_DONE", "WRONG", "check", "check_block_split", "check_true", "finite_number"]


class _NotDone(Exception):
    """The answer is still the stub."""


def _evaluate(answer: Any) -> Any:
    if answer is Ellipsis:
        raise _NotDone
    if callable(answer) and not isinstance(answer, (np.ndarray, type, torch.Tensor)):
        try:
            value = answer()
        except NotImplementedError as exc:
            raise _NotDone from exc
        if value is Ellipsis:
            raise _NotDone
        return value
    return answer


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.double() if value.is_floating_point() else value
        return value.numpy()
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return np.asarray([_as_array(v) for v in value])
    return np.asarray(value)


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    return a.shape == b.shape and bool((np.abs(a - b) <= atol + rtol * np.abs(b)).all())


def _shape_problem(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str:
    if got.ndim == 2 and got.T.shape == want.shape and _close(got.T.astype(np.float64), want, rtol, atol):
        return f"shape {got.shape}, expected {want.shape}: your array is the transpose of the answer"
    if got.size == want.size and got.size > 0:
        return f"shape {got.shape}, expected {want.shape} (the numbers may be right: reshape or squeeze)"
    if got.ndim == want.ndim - 1 and got.shape == want.shape[1:]:
        return f"shape {got.shape}, expected {want.shape}: one axis is missing (the batch axis?)"
    if got.ndim == want.ndim and got.size > want.size:
        return f"shape {got.shape}, expected {want.shape}: too many numbers (an axis left unsummed?)"
    if got.ndim == want.ndim and 0 < got.size < want.size:
        return f"shape {got.shape}, expected {want.shape}: too few numbers (summed over one axis too many?)"
    return f"shape {got.shape}, expected {want.shape}"


def _diagnose(got: np.ndarray, want: np.ndarray, rtol: float, atol: float,
              offsets: Mapping[str, Any] | None) -> str:
    """What kind of wrong ``got`` is, without any expected value in the text."""
    if _close(got, -want, rtol, atol):
        return "the sign is flipped: your answer is minus the right one"
    for name, value in (offsets or {}).items():
        term = np.broadcast_to(_as_array(value).astype(np.float64), want.shape)
        if _close(got - term, want, rtol, atol + rtol * np.abs(term).max(initial=0.0)):
            return f"your answer holds {name} once too often (added twice, or never subtracted)"
        if _close(got + term, want, rtol, atol + rtol * np.abs(term).max(initial=0.0)):
            return f"{name} is missing from your answer"
    big = np.abs(want) > max(atol, 1e-12 * float(np.abs(want).max(initial=0.0)))
    if want.size > 1 and big.sum() > 1 and not (np.abs(got[~big]) > atol + rtol * np.abs(got).max()).any():
        ratio = got[big] / want[big]
        if np.all(np.isfinite(ratio)) and np.ptp(ratio) <= 1e-6 * np.abs(ratio).max() and ratio[0] != 0:
            size = "larger" if abs(ratio[0]) > 1 else "smaller"
            sign = " and of the opposite sign" if ratio[0] < 0 else ""
            return f"every entry is {size} than the answer by the same factor{sign} (a sum for a mean? a scale?)"
    if want.size > 1:
        shift = got - want
        if np.ptp(shift) <= atol + rtol * np.abs(want).max():
            return "every entry is off by the same constant (a term added or forgotten?)"
        bad = np.abs(got - want) > atol + rtol * np.abs(want)
        first = np.unravel_index(int(np.flatnonzero(bad.ravel())[0]), want.shape)
        return f"{int(bad.sum())} of {want.size} entries are wrong (the first at index {tuple(int(i) for i in first)})"
    rel = abs(float(got.ravel()[0] - want.ravel()[0])) / max(abs(float(want.ravel()[0])), atol)
    if rel < 1e-2:
        return "close, but not within the tolerance (float32 rounding, or a small term missing?)"
    return "the value is wrong"


def _difference(mine: Any, expected: Any, rtol: float, atol: float,
                offsets: Mapping[str, Any] | None = None) -> str | None:
    """What is wrong with ``mine`` against ``expected`` (None when they agree); never quotes ``expected``."""
    if mine is None:
        return "the answer is None: did you forget to return (or assign) it?"
    if isinstance(expected, (str, bool)):
        if mine == expected:
            return None
        return f"{mine!r} is not the right answer" if isinstance(mine, (str, bool)) else \
            f"expected a {type(expected).__name__}, got a {type(mine).__name__}"
    try:
        got = _as_array(mine)
        want = _as_array(expected)
    except (TypeError, ValueError) as exc:
        return f"could not read the answer as numbers ({exc})"
    if got.dtype == object:
        return f"could not read the answer as numbers (got {type(mine).__name__})"
    if got.shape != want.shape:
        return _shape_problem(got, want, rtol, atol)
    if want.dtype == bool:
        bad = np.flatnonzero(got.astype(bool).ravel() != want.ravel())
        if len(bad) == 0:
            return None
        if len(bad) == want.size and want.size > 1:
            return "every entry is the opposite of the answer (a negated test?)"
        return f"{len(bad)} of {want.size} entries differ (the first at index {bad[0]})"
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    if not np.isfinite(got64).all():
        return "the answer holds NaN or infinite values"
    if _close(got64, want64, rtol, atol):
        return None
    return _diagnose(got64, want64, rtol, atol, offsets)


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
    offsets: Mapping[str, Any] | None = None,
) -> bool | None:
    """Compare an exercise's answer with the expected value; print one line; never raise.

    Args:
        label: what is checked, e.g. ``"Exercise 2: the bias at conv4"``.
        answer: the learner's value, ``...`` (not done), or a zero-argument callable such as
            ``lambda: my_gradcam(dec, "conv4")``, called here so that a ``NotImplementedError`` (the stub) or
            any other error is reported, not raised.
        expected: the right value (number, array, tensor, list, string or bool). It is never printed.
        hint: one sentence that helps without giving the answer away; printed only after a wrong answer.
        rtol, atol: tolerances of the numeric comparison.
        compare: ``compare(mine, expected)`` returning what is wrong, or None when it is right.
        offsets: named terms a learner may forget or count twice, e.g. ``{"the bias": dec.bias["input"]}``:
            when the answer is off by exactly one of them, the check says so by name.
    """
    try:
        mine = _evaluate(answer)
    except _NotDone:
        _say(NOT_DONE, label, "not done yet.")
        return None
    except Exception as exc:  # noqa: BLE001 - a learner's error is reported, never raised
        _say(WRONG, label, f"your code raised {type(exc).__name__}: {exc}. Hint: {hint}")
        return False
    try:
        problem = compare(mine, expected) if compare is not None else _difference(mine, expected, rtol, atol, offsets)
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


def _split_at(model: nn.Module, inputs: torch.Tensor, layer: str, target: torch.Tensor):
    """h, w = ∂S/∂h, b = S − Σ w·h and S at the output of module ``layer``, in float64.

    Computed the other way round from the exercise: a forward hook *replaces* the layer's output by a fresh leaf
    tensor, so the rest of the network is a function of that leaf alone, and autograd differentiates it there.
    """
    net = copy.deepcopy(model).double().eval()
    net.requires_grad_(False)
    leaf: dict[str, torch.Tensor] = {}

    def swap(_module, _inputs, output):
        leaf["h"] = output.detach().clone().requires_grad_(True)
        return leaf["h"]

    handle = net.get_submodule(layer).register_forward_hook(swap)
    try:
        logits = net(inputs.detach().double())
    finally:
        handle.remove()
    score = logits.gather(1, target.view(-1, 1).to(logits.device)).squeeze(1)
    (w,) = torch.autograd.grad(score.sum(), leaf["h"])
    h = leaf["h"].detach()
    return h, w, score.detach() - (w * h).flatten(1).sum(1), score.detach()


def check_block_split(label: str, answer: Any, model: nn.Module, inputs: torch.Tensor, layer: str,
                      target: Any, *, hint: str) -> bool | None:
    """Check a hand-made decomposition at the output of module ``layer`` (e.g. ``"features.9"``).

    ``answer`` is (or returns) ``(h, w, b)``: the layer tensor, the gradient of the score with respect to it, and
    the bias, one per image. The expected values are computed here, independently (see :func:`_split_at`), for the
    classes ``target`` (an int or one index per image). Prints one line per part; returns True when all are right.
    """
    try:
        mine = _evaluate(answer)
    except _NotDone:
        _say(NOT_DONE, label, "not done yet.")
        return None
    except Exception as exc:  # noqa: BLE001
        _say(WRONG, label, f"your code raised {type(exc).__name__}: {exc}. Hint: {hint}")
        return False
    if not (isinstance(mine, (tuple, list)) and len(mine) == 3):
        _say(WRONG, label, f"expected three things (h, w, b), got {type(mine).__name__}. Hint: {hint}")
        return False
    target = torch.as_tensor(target).reshape(-1).expand(len(inputs)).long()
    h, w, b, score = _split_at(model, inputs, layer, target)
    wh = (w * h).flatten(1).sum(1)
    tol = {"rtol": 1e-4, "atol": 1e-5}  # float32 answers pass too
    results = [
        check(f"{label}, h", mine[0], h, hint=hint, **tol),
        check(f"{label}, w = ∂S/∂h", mine[1], w, hint=hint, **tol),
        check(f"{label}, b = S − Σ w·h", mine[2], b, hint=hint, offsets={"Σ w·h": wh, "the score S": score}, **tol),
    ]
    return all(r is True for r in results)


def finite_number(value: Any) -> float:
    """A Python float from a number, 0-d array or 1-element tensor (raises ``TypeError`` otherwise)."""
    arr = _as_array(value)
    if arr.size != 1:
        raise TypeError(f"expected one number, got {arr.size}")
    out = float(arr.reshape(()))
    if not math.isfinite(out):
        raise TypeError("expected a finite number")
    return out
