"""Metrics: fidelity masking, localisation scores, bias ratios."""

from __future__ import annotations

import math

import pytest
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


def test_masked_topk_overlap_and_fidelity():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10)).eval()
    x = torch.randn(2, 3, 2, 2)
    assert torch.equal(metrics.masked_topk_overlap(model, x, x, k=5), torch.ones(2, dtype=torch.float64))
    with torch.no_grad():  # a linear model without bias: -x reverses the order of the logits
        model[1].bias.zero_()
    flipped = metrics.masked_topk_overlap(model, x, -x, k=5)
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


# ------------------------------------------------------------------------------- ranking, ties, deletion


def test_ties_are_broken_in_raster_order_and_the_count_is_exact():
    constant = torch.zeros(2, 5, 7)
    for fraction, n in ((0.3, 10), (0.5, 18), (0.01, 1), (1.0, 35)):  # round(10.5) = 10, round(17.5) = 18
        mask = metrics.top_fraction_mask(constant, fraction)
        assert mask.sum((1, 2)).tolist() == [n, n]
        assert mask[0].flatten()[:n].all() and not mask[0].flatten()[n:].any()  # the first n in raster order
    ranks = metrics.relevance_ranks(torch.tensor([[[1.0, 3.0], [3.0, -2.0]]]))
    assert ranks.tolist() == [[[2, 0], [1, 3]]]
    assert metrics.cells_kept(0.3, 224 * 224) == 15053 and metrics.cells_kept(0.0, 10) == 0
    with pytest.raises(ValueError, match="NaN"):
        metrics.relevance_ranks(torch.tensor([[[0.0, math.nan]]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.cells_kept(1.5, 10)


def test_remove_top_is_the_complement_of_keep_top():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, 6, 6, generator=gen) + 1
    maps = torch.rand(3, 3, 3, generator=gen)  # a coarse map: ranked after bilinear resizing
    kept = metrics.keep_top(images, maps, 0.4, fill=0.0)
    removed = metrics.remove_top(images, maps, 0.4, fill=0.0)
    assert torch.equal(kept + removed, images)
    assert (kept[:, 0] != 0).sum((1, 2)).tolist() == [14, 14, 14]  # round(0.4 * 36)
    assert torch.equal(metrics.remove_top(images, maps, 0.0), images)
    assert not metrics.remove_top(images, maps, 1.0).any()


def test_topk_intersection_by_hand():
    full = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    masked = torch.tensor([[5.0, 0.2, 4.0, 0.0, 0.5], [1.0, 2.0, 3.0, 4.0, 5.0]])
    assert metrics.topk_intersection(full, masked, 2).tolist() == [0.5, 1.0]  # {0, 1} vs {0, 2}
    assert metrics.topk_intersection(full, masked, 3).tolist() == [2 / 3, 1.0]
    with pytest.raises(ValueError, match="k must lie"):
        metrics.topk_intersection(full, masked, 6)


def test_curve_area():
    x = [0.0, 0.5, 1.0]
    values = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.5, 1.0], [1.0, 0.0, 1.0]])
    assert metrics.curve_area(x, values).tolist() == [1.0, 0.5, 0.5]
    assert metrics.curve_area([0.2, 0.4], torch.tensor([0.0, 1.0])).item() == pytest.approx(0.5)  # a mean value
    with pytest.raises(ValueError, match="increasing"):
        metrics.curve_area([0.5, 0.0], torch.tensor([1.0, 1.0]))


def test_bootstrap_ci():
    assert metrics.bootstrap_ci(torch.full((20,), 0.4)) == pytest.approx((0.4, 0.4, 0.4))
    values = torch.tensor([0.0] * 50 + [1.0] * 50 + [math.nan])
    mean, low, high = metrics.bootstrap_ci(values, n_boot=4000)
    assert mean == 0.5 and low == pytest.approx(0.40, abs=0.015) and high == pytest.approx(0.60, abs=0.015)
    assert metrics.bootstrap_ci(values, n_boot=500, seed=3) == metrics.bootstrap_ci(values, n_boot=500, seed=3)
    assert all(math.isnan(v) for v in metrics.bootstrap_ci(torch.tensor([math.nan])))


def test_maps_and_masks_in_every_common_layout_or_a_clear_error():
    maps = torch.rand(2, 8, 8, dtype=torch.float64)
    bools = torch.zeros(2, 8, 8, dtype=torch.bool)
    bools[:, :4] = True
    expected = metrics.positive_share_inside(maps, bools)
    assert bool(((expected >= 0) & (expected <= 1)).all())
    for masks in (bools[:, None], bools.to(torch.uint8) * 255, bools.float(), bools.numpy()):
        torch.testing.assert_close(metrics.positive_share_inside(maps, masks), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(metrics.positive_share_inside(maps[:, None].numpy(), bools), expected)
    with pytest.raises(ValueError, match="0/1"):
        metrics.positive_share_inside(maps, bools.float() * 0.5 + 0.2)
    with pytest.raises(ValueError, match="one map per image"):
        metrics.keep_top(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), 0.3)
    with pytest.raises(ValueError, match="3 maps for 2 images"):
        metrics.keep_top(torch.rand(2, 3, 8, 8), torch.rand(3, 8, 8), 0.3)
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(metrics.keep_top(images, maps[:, None], 0.3), metrics.keep_top(images, maps.numpy(), 0.3))


def test_non_numbers_never_give_a_confident_score():
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.topk_intersection(torch.full((2, 10), float("nan")), torch.rand(2, 10))
    nan_map = torch.rand(1, 4, 4)
    nan_map[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="no maximum"):
        metrics.pointing_game(nan_map, torch.ones(1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="n_boot must be at least 1"):
        metrics.bootstrap_ci(torch.rand(10), n_boot=0)
