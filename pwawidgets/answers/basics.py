"""Expected values of the exercises of notebooks 00–03 (see the package docstring)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pwawidgets.core import Decomposition, decompose
from pwawidgets.exactness import region_radius
from pwawidgets.metrics import pointing_game as _pointing_game


def split_by_hand(contrib: torch.Tensor, on_star: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """00 Ex. 1: Σ of the contributions on the star and off it, per image (the mask broadcast over the colours)."""
    star = on_star.to(contrib.dtype).expand_as(contrib)
    total = torch.einsum("bchw->b", contrib)
    on = torch.einsum("bchw,bchw->b", contrib, star)
    return on, total - on


def _logit_map(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Jacobian J of the logits at x and F(x) − J x, by autograd on the whole model."""
    point = torch.as_tensor(np.asarray(x, dtype=np.float64))
    jac = torch.autograd.functional.jacobian(lambda p: model(p[None])[0], point)
    with torch.no_grad():
        out = model(point[None])[0]
    return jac.numpy(), (out - jac @ point).numpy()


def contributions(model: nn.Module, x: np.ndarray, logit: int = 0) -> tuple[np.ndarray, float]:
    """01 Ex. 1: the contributions w_i x_i to one logit at x, and that logit's bias."""
    W, b = _logit_map(model, x)
    return W[logit] * np.asarray(x, dtype=np.float64), float(b[logit])


def pattern(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """01 Ex. 2: the activation pattern at x, read at the inputs of the model's ReLUs, concatenated."""
    seen: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda m, args, out: seen.append(args[0][0] > 0))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(torch.as_tensor(np.asarray(x, dtype=np.float64))[None])
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(seen).numpy()


def affine_map(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """01 Ex. 3: W and b of the logits on the region of x (the Jacobian, and F(x) − W x)."""
    return _logit_map(model, x)


def grad_x_input(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """02 Ex. 1, for f = x_0 x_1: the gradient, gradient × input, the tangent plane's bias and f(x)."""
    a, b = x.detach().double()
    grad = torch.stack([b, a])
    gxi = grad * torch.stack([a, b])
    value = float(a * b)
    return grad, gxi, value - float(gxi.sum()), value


def split_with_a_hook(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
    """02 Ex. 2: the bias b at a named layer, by the library's decomposition."""
    return decompose(model, inputs, target, [layer]).bias[layer]


def raw_bias(dec: Decomposition) -> tuple[torch.Tensor, torch.Tensor]:
    """02 Ex. 3: the raw-pixel bias, and its difference from the centred bias (the shift), from a decomposition
    taken at "input" and "normalize"."""
    return dec.bias["input"], dec.bias["normalize"] - dec.bias["input"]


def radius_by_hand(model: nn.Module, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """02 Ex. 4: the region radius at x along d, by the library's general routine."""
    return region_radius(model, x, d)[0]


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """03 Ex. 1: the pointing game of each map against its mask, by the library's metric."""
    return _pointing_game(maps, masks)


def ratio_mean(dec: Decomposition, layer: str) -> tuple[float, int]:
    """03 Ex. 2: the mean of bias / score over the images with a positive score, and how many were left out."""
    ratios = [float(b / s) for b, s in zip(dec.bias[layer].tolist(), dec.score.tolist(), strict=True) if s > 0]
    return sum(ratios) / len(ratios), len(dec.score) - len(ratios)


def gradcam_by_hand(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """03 Ex. 3: Grad-CAM from the gradient w and the tensor h, (B, C, H, W) -> (B, H, W), negatives dropped."""
    weights = w.sum(dim=(-2, -1)) / (w.shape[-2] * w.shape[-1])
    return torch.einsum("bc,bchw->bhw", weights, h).clamp(min=0)
