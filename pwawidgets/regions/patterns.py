"""Activation patterns and the affine map ``x -> W x + b`` of a region, from the layers or by autograd."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .network import float64_copy, read_net
from .threads import one_thread

__all__ = ["activation_pattern", "affine_map_at", "affine_map_from_pattern"]


def activation_pattern(model: nn.Module, points: np.ndarray, upto_layer: int | None = None) -> np.ndarray:
    """Activation patterns (pre-activation > 0) of points (n, 2), hidden units layer after layer: bool (n, units)."""
    net = read_net(model)
    _, pres = net.forward(np.atleast_2d(points), upto_layer)
    if not pres:
        return np.zeros((len(np.atleast_2d(points)), 0), dtype=bool)
    return np.concatenate(pres, axis=1) > 0


def affine_map_from_pattern(
    model: nn.Module, pattern: Sequence[np.ndarray] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``W``, ``b`` of the outputs on the region of an activation pattern (flat, or one mask per layer).

    With ``D_l = diag(mask_l)``: ``W = W_out D_L W_L ... D_1 W_1`` and ``b`` accumulates the biases the same way.
    """
    net = read_net(model)
    if isinstance(pattern, np.ndarray):
        flat = pattern.astype(bool).ravel()
    else:
        flat = np.concatenate([np.asarray(p, dtype=bool).ravel() for p in pattern])
    if flat.size != sum(net.widths):
        raise ValueError(f"pattern has {flat.size} units; the network has {sum(net.widths)} ({net.widths})")
    masks = np.split(flat, np.cumsum(net.widths)[:-1]) if net.widths else []
    W, b = np.eye(2), np.zeros(2)
    for (Wl, bl), mask in zip(net.hidden, masks, strict=True):
        W, b = mask[:, None] * (Wl @ W), mask * (Wl @ b + bl)
    Wo, bo = net.head
    return Wo @ W, Wo @ b + bo


def affine_map_at(model: nn.Module, point: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``W`` (Jacobian of the outputs, by autograd) and ``b = F(x) - W x`` at one point, in float64."""
    x = torch.as_tensor(np.asarray(point, dtype=np.float64)).reshape(2)
    model64 = float64_copy(model)
    with one_thread():
        W = torch.func.jacrev(lambda t: model64(t[None])[0])(x)
        with torch.no_grad():
            b = model64(x[None])[0] - W @ x
    return W.detach().numpy(), b.detach().numpy()
