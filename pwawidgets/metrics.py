"""Metrics for attribution maps: the paper's fidelity test, localisation against masks, bias ratios.

Conventions: maps are signed ``(B, H, W)`` tensors on any grid; image-space metrics first resize them to the
image (bilinear) and rank there. Ranking is by value (most positive first), as the paper keeps "the most
relevant pixels"; pass ``map.abs()`` to rank by magnitude.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .core import Decomposition, resize_maps


def to_image_grid(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, h, w)`` maps to ``size`` (bilinear); unchanged if already that size."""
    return resize_maps(maps.double(), tuple(size))


def top_fraction_mask(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean ``(B, H, W)``: the ``fraction`` of cells with the largest values of each map (ties by order)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    flat = maps.flatten(1)
    keep = max(1, round(fraction * flat.shape[1]))
    idx = flat.topk(keep, dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    return mask.view_as(maps)


def keep_top(images: torch.Tensor, maps: torch.Tensor, fraction: float = 0.3, fill: float | torch.Tensor = 0.0
             ) -> torch.Tensor:
    """The paper's masking: keep the ``fraction`` most relevant pixels of each image, set the rest to ``fill``.

    ``maps`` are resized to the image and ranked there. ``fill=0`` on a normalised image means the dataset
    mean colour; pass the normalised value of black to zero raw pixels instead.
    """
    keep = top_fraction_mask(to_image_grid(maps, images.shape[-2:]), fraction).unsqueeze(1)
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    return torch.where(keep, images, fill.view(1, -1, 1, 1) if fill.dim() else fill)


@torch.no_grad()
def topk_overlap(model: nn.Module, images: torch.Tensor, masked: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Per example: |top-k(full) ∩ top-k(masked)| / k."""
    full = model(images).topk(k, dim=1).indices
    part = model(masked).topk(k, dim=1).indices
    shared = (full.unsqueeze(2) == part.unsqueeze(1)).any(2).sum(1)
    return shared.double() / k


def fidelity(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, fraction: float = 0.3, k: int = 5,
             fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """The paper's fidelity test (Sec. 3.1): top-k overlap between the image and its top-``fraction`` part."""
    return topk_overlap(model, images, keep_top(images, maps, fraction, fill), k)


def positive_share_inside(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per example: share of the positive part of the map that falls inside the ground-truth mask.

    The map is resized to the mask's grid first. NaN where the map has no positive value.
    """
    pos = to_image_grid(maps, masks.shape[-2:]).clamp_min(0)
    total = pos.flatten(1).sum(1)
    inside = (pos * masks.to(pos.dtype)).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, math.nan))


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per example: True where the map's maximum (on the mask's grid) lies inside the mask."""
    grid = to_image_grid(maps, masks.shape[-2:]).flatten(1)
    hit = masks.flatten(1).gather(1, grid.argmax(1, keepdim=True))
    return hit.squeeze(1)


def bias_ratios(decomposition: Decomposition, positive_only: bool = True) -> dict[str, torch.Tensor]:
    """``bias / score`` per layer and example (the paper's Fig. 3).

    A ratio has a meaning only for a positive score: with ``positive_only`` (default) examples whose score is
    not positive get NaN, and ``nan``-aware means (``torch.nanmean``) skip them; say how many were skipped.
    """
    ratios = {}
    for name in decomposition.layers:
        ratio = decomposition.bias_ratio(name)
        if positive_only:
            ratio = torch.where(decomposition.score > 0, ratio, torch.full_like(ratio, math.nan))
        ratios[name] = ratio
    return ratios
