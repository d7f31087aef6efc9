"""Expected values of the exercises of notebooks 04–08 (see the package docstring)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from pwawidgets import metrics, robustness
from pwawidgets.baselines import gradcam_from
from pwawidgets.bias import bias_sources
from pwawidgets.core import Decomposition


def gradcam(decomposition: Decomposition, layer: str) -> torch.Tensor:
    """04, Exercise 1: the signed Grad-CAM map ``(H, W)`` of the first image at ``layer``."""
    return gradcam_from(decomposition, layer)[0]


def gradcam_gap(decomposition: Decomposition, layer: str) -> torch.Tensor:
    """04, Exercise 2: the contributions minus Grad-CAM at ``layer``, first image, ``(H, W)``."""
    return decomposition.pixel_map(layer)[0] - gradcam_from(decomposition, layer)[0]


def log_odds(probabilities: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """04, Exercise 3: ``ln(p_a / p_b)`` from one image's class probabilities, in float64."""
    p = probabilities.double()
    return torch.log(p[a]) - torch.log(p[b])


def odds_factors(contrast: Decomposition, layer: str) -> torch.Tensor:
    """04, Exercise 3: each cell's factor on the odds, from the decomposition of the contrast network (S_A - S_B)."""
    return contrast.pixel_map(layer)[0].double().exp()


def keep_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """05, Exercise 1: the cells a keep-top test keeps (:func:`pwawidgets.metrics.top_fraction_mask`)."""
    return metrics.top_fraction_mask(maps, fraction)


def topk_intersection(full: torch.Tensor, masked: torch.Tensor, k: int = 5) -> torch.Tensor:
    """05, Exercise 2: the top-k intersection per row (:func:`pwawidgets.metrics.topk_intersection`)."""
    return metrics.topk_intersection(full, masked, k)


def topk_floor(classes: int, k: int = 5) -> float:
    """05, Exercise 3: the smallest top-k intersection with ``classes`` classes, by trying every pair of sets."""
    sets = [set(s) for s in itertools.combinations(range(classes), k)]
    return min(len(a & b) for a in sets for b in sets) / k


def bn_part(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, layer: str, source: str) -> torch.Tensor:
    """06, Exercise 1: the part of the bias at ``layer`` due to the constants of module ``source``, per image."""
    return bias_sources(model, inputs, target, layer)[source]


def fgsm_change(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """06, Exercise 2: the network's own score change under an FGSM step of size ``eps``, per image."""
    step = robustness.fgsm(model, inputs, target, eps)
    return step.perturbed[:, 0] - step.clean


def affine_error(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, w: torch.Tensor, d: torch.Tensor,
                 t: torch.Tensor) -> torch.Tensor:
    """07, Exercise 1: relative error of ``t w·d`` against ``F(x + t d) - F(x)``, per image, in float64."""
    p = next(model.parameters())
    t = torch.as_tensor(t, dtype=torch.float64).flatten()
    moved = inputs.double() + torch.einsum("b,b...->b...", t, d.double())
    with torch.no_grad():
        scores = model(torch.cat([inputs.double(), moved]).to(p.device, p.dtype)).double().cpu()
    picked = scores.gather(1, torch.as_tensor(target).view(-1, 1).repeat(2, 1).cpu()).view(2, -1)
    predicted = t * torch.einsum("b...,b...->b", w.double(), d.double())
    return (picked[1] - picked[0] - predicted).abs() / predicted.abs()
