"""The checks of notebook 01's exercises (pattern, affine map, contributions): each prints PASS or FAIL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from .patterns import activation_pattern, affine_map_at

__all__ = ["check_affine_map", "check_contributions", "check_pattern"]


def _report(ok: bool, what: str, detail: str = "") -> bool:
    ok = bool(ok)
    print(f"PASS: {what}" if ok else f"FAIL: {what}. {detail}".rstrip())
    return ok


def check_pattern(mine: Any, model: nn.Module, point: Sequence[float]) -> bool | None:
    """Check an activation pattern (one 0/1 mask per hidden layer, or flat) at ``point``; prints pass/fail."""
    if mine is None or mine is Ellipsis:
        print("not done yet: fill in the stub, then run this cell again")
        return None
    ref = activation_pattern(model, np.asarray(point, dtype=np.float64)[None])[0]
    try:
        flat = np.concatenate([np.asarray(p).ravel() for p in mine]) if isinstance(mine, list | tuple) else (
            np.asarray(mine).ravel()
        )
        flat = flat.astype(bool)
    except (TypeError, ValueError) as e:
        return _report(False, "pattern", f"could not read it as masks: {e}")
    if flat.shape != ref.shape:
        return _report(False, "pattern", f"expected {ref.size} units in all, got {flat.size}")
    bad = np.flatnonzero(flat != ref)
    return _report(len(bad) == 0, "the activation pattern matches the network", f"units {bad.tolist()} differ")


def check_affine_map(W_mine: Any, b_mine: Any, model: nn.Module, point: Sequence[float]) -> bool | None:
    """Check ``W`` (outputs, 2) and ``b`` against the Jacobian and offset at ``point`` (autograd); prints pass/fail."""
    if W_mine is None or b_mine is None or W_mine is Ellipsis or b_mine is Ellipsis:
        print("not done yet: fill in the stub, then run this cell again")
        return None
    W_ref, b_ref = affine_map_at(model, point)
    W_m = np.asarray(W_mine, dtype=np.float64)
    b_m = np.asarray(b_mine, dtype=np.float64).ravel()
    if W_m.shape != W_ref.shape or b_m.shape != b_ref.shape:
        return _report(False, "W and b", f"shapes {W_m.shape}, {b_m.shape}; expected {W_ref.shape}, {b_ref.shape}")
    err_w, err_b = np.abs(W_m - W_ref).max(), np.abs(b_m - b_ref).max()
    return _report(
        err_w < 1e-8 and err_b < 1e-8,
        "W equals the gradient and b = F(x) - W x",
        f"largest error: W {err_w:.2e}, b {err_b:.2e}",
    )


def check_contributions(contrib: Any, bias: Any, model: nn.Module, point: Sequence[float], output: int) -> bool | None:
    """Check contributions ``w_i x_i`` (2,) and the bias of one output at ``point``; prints pass/fail."""
    if contrib is None or bias is None or contrib is Ellipsis or bias is Ellipsis:
        print("not done yet: fill in the stub, then run this cell again")
        return None
    W, b = affine_map_at(model, point)
    x = np.asarray(point, dtype=np.float64)
    ref = W[output] * x
    c = np.asarray(contrib, dtype=np.float64).ravel()
    if c.shape != ref.shape:
        return _report(False, "contributions", f"expected {ref.size} numbers, got {c.size}")
    ok = np.allclose(c, ref, atol=1e-8) and abs(float(bias) - b[output]) < 1e-8
    return _report(ok, "contributions and bias", f"expected {np.round(ref, 6).tolist()} and {b[output]:.6f}")
