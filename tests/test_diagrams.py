"""The concept diagrams of notebooks 01 and 02: they draw, and what they draw is the network's own numbers."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import pwawidgets as pw
from pwawidgets.diagrams import affine_patchwork, contributions_add_up
from pwawidgets.regions import build_mlp, enumerate_regions

matplotlib.use("Agg")


def _artist(fig, gid):
    found = [a for ax in fig.axes for a in [*ax.collections, *ax.lines, *ax.patches] if a.get_gid() == gid]
    assert found, f"no artist {gid!r}"
    return found


def test_patchwork_draws_every_piece_and_the_points_piece_is_the_gradient_and_bias():
    model = build_mlp((4, 4), seed=2)
    point = (0.3, -0.7)
    fig = affine_patchwork(model, ((-2, 2), (-2, 2)), point, output=1)
    regions = enumerate_regions(model, ((-2, 2), (-2, 2)))
    assert len(_artist(fig, "pieces")[0].get_paths()) == len(regions)
    outline = _artist(fig, "piece")[0].get_paths()[0].vertices
    assert matplotlib.path.Path(outline).contains_point(point)
    # the dashed line is the piece's affine function: its slope and value are the decomposition's w and b
    d = pw.decompose(model, torch.tensor([point], dtype=torch.float64), target=1, keep_gradients=True)
    xs, affine = _artist(fig, "affine")[0].get_data()
    w, b = d.gradients["input"][0].numpy(), float(d.bias["input"][0])
    np.testing.assert_allclose(affine, w[0] * xs + w[1] * point[1] + b, rtol=0, atol=1e-10)
    xs_net, net = _artist(fig, "network")[0].get_data()
    with torch.no_grad():
        exact = model(torch.tensor(np.stack([xs_net, np.full_like(xs_net, point[1])], 1)))[:, 1].numpy()
    np.testing.assert_allclose(net, exact, rtol=0, atol=1e-12)
    assert fig.axes[1].get_ylabel().endswith("(score units)") and all(ax.get_title() for ax in fig.axes)


def test_patchwork_default_and_bad_arguments():
    fig = affine_patchwork()
    assert len(fig.axes) == 2 and fig.get_suptitle()
    with pytest.raises(ValueError, match="point"):
        affine_patchwork(point=(5.0, 0.0))
    with pytest.raises(ValueError, match="output"):
        affine_patchwork(output=2)


@pytest.fixture(scope="module")
def mini_vgg_decomposition():
    model = pw.load_model("mini_vgg").double()
    images, labels, _ = pw.data.shapes(2, seed=7)
    return pw.decompose(model, images.double(), labels, ["input", "conv3"])


@pytest.mark.parametrize("layer, top", [("conv3", 5), ("input", 6)])
def test_the_waterfall_adds_up_to_the_score(mini_vgg_decomposition, layer, top):
    d = mini_vgg_decomposition
    fig = contributions_add_up(d, layer, index=1, top=top)
    steps = _artist(fig, "step")
    heights = np.array([bar.get_height() for bar in steps])
    bottoms = np.array([bar.get_y() for bar in steps])
    score = float(d.score[1])
    np.testing.assert_allclose(heights.sum(), score, rtol=1e-10, atol=1e-10)   # contributions + bias = score
    np.testing.assert_allclose(heights[-1], float(d.bias[layer][1]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(bottoms[1:], np.cumsum(heights)[:-1], rtol=0, atol=1e-12)   # a waterfall
    assert _artist(fig, "score")[0].get_height() == pytest.approx(score, abs=1e-12)
    per_channel = d.contributions[layer][1].double().flatten(1).sum(1).numpy()
    biggest = np.sort(np.abs(per_channel))[::-1][:min(top, len(per_channel))]
    np.testing.assert_allclose(np.sort(np.abs(heights[:len(biggest)]))[::-1], biggest, rtol=0, atol=1e-12)
    assert fig.axes[0].get_ylabel() == "score units" and fig.axes[0].get_title()


def test_the_waterfall_refuses_bad_arguments(mini_vgg_decomposition):
    with pytest.raises(ValueError, match="layer"):
        contributions_add_up(mini_vgg_decomposition, "conv9")
    with pytest.raises(ValueError, match="index"):
        contributions_add_up(mini_vgg_decomposition, "conv3", index=5)
    with pytest.raises(ValueError, match="top"):
        contributions_add_up(mini_vgg_decomposition, "conv3", top=0)
