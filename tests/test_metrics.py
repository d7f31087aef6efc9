"""Metrics: fidelity masking, localisation scores, bias ratios."""

from __future__ import annotations

import math

import torch
from torch import nn

import pwawidgets as pw
from pwawidgets import metrics


def test_top_fraction_mask_and_keep_top():
    maps = torch.arange(16, dtype=torch.float64).view(1, 4, 4)
    mask = metrics.top_fraction_mask(maps, 0.25)
    assert mask.sum() == 4 and mask[0, 3].all() and not mask[0, :3].any()
    images = torch.ones(1, 3, 4, 4)
    kept = metrics.keep_top(images, maps, 0.25, fill=torch.tensor([-1.0, -2.0, -3.0]))
    assert torch.equal(kept[0, :, 3], torch.ones(3, 4))
    assert torch.equal(kept[0, 1, :3], torch.full((3, 4), -2.0))
    # a coarse map is ranked on the image grid after bilinear resizing
    coarse = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    kept = metrics.keep_top(torch.ones(1, 1, 8, 8), coarse, 0.25)
    assert kept[0, 0, :4, 4:].sum() >= 12 and kept.sum() == 16


def test_topk_overlap_and_fidelity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10)).eval()
    x = torch.randn(2, 3, 2, 2)
    assert torch.equal(metrics.topk_overlap(model, x, x, k=5), torch.ones(2, dtype=torch.float64))
    with torch.no_grad():  # a linear model without bias: -x reverses the order of the logits
        model[1].bias.zero_()
    flipped = metrics.topk_overlap(model, x, -x, k=5)
    assert torch.equal(flipped, torch.zeros(2, dtype=torch.float64))
    everything = metrics.fidelity(model, x, torch.rand(2, 2, 2), fraction=1.0)
    assert torch.equal(everything, torch.ones(2, dtype=torch.float64))


def test_positive_share_and_pointing_game():
    maps = torch.tensor([[[3.0, -5.0], [1.0, 0.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    masks = torch.tensor([[[True, False], [False, False]]] * 2)
    share = metrics.positive_share_inside(maps, masks)
    assert share[0].item() == 0.75 and math.isnan(share[1].item())
    assert metrics.pointing_game(maps, masks).tolist() == [True, True]
    assert metrics.pointing_game(-maps, masks).tolist() == [False, True]


def test_bias_ratios_skip_non_positive_scores():
    model = nn.Sequential(nn.Linear(2, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2, dtype=torch.float64))
        model[0].bias.copy_(torch.tensor([1.0, 1.0], dtype=torch.float64))
    x = torch.tensor([[1.0, 0.0], [-3.0, 0.0]], dtype=torch.float64)
    d = pw.decompose(model, x, 0)
    ratios = metrics.bias_ratios(d)["input"]
    assert ratios[0].item() == 0.5 and math.isnan(ratios[1].item())
    assert metrics.bias_ratios(d, positive_only=False)["input"][1].item() == -0.5
