"""The bias diagram draws the real parts of pw.bias_sources, and they add up to the bias of pw.decompose."""

from __future__ import annotations

import copy

import matplotlib
import pytest
import torch

import pwawidgets as pw
from pwawidgets import data
from pwawidgets.bias import REMAINDER
from pwawidgets.diagrams import bias_from_constants

matplotlib.use("Agg")


def _bars(fig):
    """{gid: height} of the waterfall's bars, in drawing order."""
    waterfall = fig.axes[1]
    return {p.get_gid(): p.get_height() for p in waterfall.patches if p.get_gid()}


@pytest.fixture(scope="module")
def case():
    net = copy.deepcopy(pw.load_model("mini_vgg_bn")).double()
    shapes = data.shapes(3, seed=4242)
    x, y = shapes.images.double(), shapes.labels
    return net, x, y, pw.bias_sources(net, x, y, "conv1")


@pytest.mark.parametrize("example", [0, 2])
def test_drawn_parts_are_the_sources_and_add_up_to_the_bias(case, example):
    net, x, y, sources = case
    fig = bias_from_constants(sources, example=example, network="mini_vgg_bn")
    bars = _bars(fig)
    total = bars.pop("bias")
    assert list(bars) == [n for n in sources if n != REMAINDER], "one bar per source, in the network's order"
    for name, height in bars.items():
        assert height == pytest.approx(float(sources[name][example]), rel=1e-12, abs=1e-12)
    # independent: the bias of the decomposition, S - w.h, in float64
    dec = pw.decompose(net, x, y, ["conv1"])
    bias = float(dec.bias["conv1"][example])
    assert float(dec.score[example] - dec.contribution_sum("conv1")[example]) == pytest.approx(bias, abs=1e-10)
    assert total == pytest.approx(bias, abs=1e-10)
    assert sum(bars.values()) == pytest.approx(bias, abs=1e-9)
    # the bars stack: each starts where the previous one ended
    starts = [p.get_y() for p in fig.axes[1].patches if p.get_gid() not in (None, "bias")]
    ends = torch.tensor(list(bars.values()), dtype=torch.float64).cumsum(0)
    assert starts[0] == 0 and starts[1:] == pytest.approx(ends[:-1].tolist(), abs=1e-12)


def test_default_draws_mini_vgg_bn_with_titles_and_units():
    fig = bias_from_constants()
    chain, waterfall = fig.axes
    assert "mini_vgg_bn" in chain.get_title() and "conv1" in chain.get_title()
    assert waterfall.get_title() and waterfall.get_ylabel() == "score units"
    labels = [t.get_text() for t in chain.texts]
    assert any("BatchNorm shift" in t for t in labels) and any("score S" in t for t in labels)
    bars = _bars(fig)
    total = bars.pop("bias")
    assert total == pytest.approx(sum(bars.values()), rel=1e-5)
    assert total > 0


def test_bad_arguments_are_named(case):
    *_, sources = case
    with pytest.raises(ValueError, match="example"):
        bias_from_constants(sources, example=3)
    with pytest.raises(TypeError, match="sources"):
        bias_from_constants({"features.5": torch.zeros(1)})
