"""RegionExplorer: controls set in Python change the picture; slider moves reuse cached partitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pwawidgets import regions as R
from pwawidgets.widgets import region_explorer as RE


@pytest.fixture(scope="module")
def toy() -> R.ToyNet:
    return R.train_toy("moons", (5, 5, 5), seed=0, steps=400)


@pytest.fixture()
def explorer(toy: R.ToyNet) -> RE.RegionExplorer:
    return RE.RegionExplorer(toy, steps=150)


def test_controls_and_snapshot(explorer: RE.RegionExplorer) -> None:
    for name in ("x", "y", "layer", "output", "dataset", "depth", "width", "seed", "retrain", "progress"):
        assert name in explorer.controls
    img = explorer.snapshot()
    w, h = explorer.fig.canvas.get_width_height()
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert img.std() > 10  # a picture, not a blank canvas
    assert explorer.message == ""
    assert explorer.controls["layer"].max == 3 and explorer.controls["layer"].value == 3


def test_moving_the_point_changes_the_picture_and_the_region(explorer: RE.RegionExplorer) -> None:
    c = explorer.controls
    c["x"].value, c["y"].value = -1.0, 1.0
    before, region_before = explorer.snapshot(), explorer.region
    c["x"].value = 1.5
    after, region_after = explorer.snapshot(), explorer.region
    assert not np.array_equal(before, after)
    assert region_after.contains((1.5, 1.0)) and region_before.contains((-1.0, 1.0))
    c["x"].value = -1.0
    assert np.array_equal(explorer.snapshot(), before)  # the same state gives the same picture


def test_highlighted_region_carries_the_gradient(explorer: RE.RegionExplorer, toy: R.ToyNet) -> None:
    explorer.pick(0.4, -0.3)
    x = torch.tensor([0.4, -0.3], dtype=torch.float64)
    J = torch.func.jacrev(lambda t: toy.model(t[None])[0])(x).detach().numpy()
    np.testing.assert_allclose(explorer.region.W, J, atol=1e-10)
    out = explorer.controls["output"].value
    with torch.no_grad():
        score = float(toy.model(x[None])[0, out])
    assert f"{score:+.4f}" in explorer.info.value


def test_layer_and_output_change_the_picture_without_recomputing(explorer: RE.RegionExplorer) -> None:
    stats = dict(explorer.state.stats)
    full = explorer.snapshot()
    explorer.controls["layer"].value = 1
    layer1 = explorer.snapshot()
    assert not np.array_equal(full, layer1)
    assert len(explorer.regions) < len(explorer.state.full)
    explorer.controls["layer"].value = 2
    explorer.controls["layer"].value = 3
    assert np.array_equal(explorer.snapshot(), full)
    explorer.controls["output"].value = 1 - explorer.controls["output"].value
    assert not np.array_equal(explorer.snapshot(), full)
    for v in np.linspace(-1, 1, 5):
        explorer.controls["y"].value = float(v)
    assert explorer.state.stats["enumerations"] == stats["enumerations"]
    assert explorer.state.stats["trainings"] == stats["trainings"]
    assert explorer.state.stats["scene_draws"] == stats["scene_draws"] + 2  # layers 1 and 2, drawn once each


def test_retrain_in_the_background(explorer: RE.RegionExplorer) -> None:
    c = explorer.controls
    before = explorer.snapshot()
    c["dataset"].value, c["depth"].value, c["width"].value = "circles", 2, 8
    thread = explorer.retrain()
    assert thread is not None
    explorer.wait(120)
    assert not thread.is_alive()
    assert explorer.message == ""
    assert explorer.state.full.widths == (8, 8)
    assert explorer.state.toy.dataset == "circles"
    assert c["layer"].max == 2 and c["progress"].value == 100 and not c["retrain"].disabled
    assert not np.array_equal(explorer.snapshot(), before)
    x0, x1 = explorer.state.toy.bounds[0]
    assert (c["x"].min, c["x"].max) == (x0, x1)


def test_errors_show_inside_the_widget(explorer: RE.RegionExplorer, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("out of luck")

    monkeypatch.setattr(RE, "train_toy", broken)
    before = explorer.snapshot()
    explorer.retrain(wait=True)
    assert "RuntimeError: out of luck" in explorer.message
    assert "out of luck" in explorer.message_widget.value
    assert not explorer.controls["retrain"].disabled
    assert np.array_equal(explorer.snapshot(), before)  # the old network is still shown
    explorer.controls["x"].value = 0.1  # a callback that works clears the message
    assert explorer.message == ""


def test_a_failing_callback_does_not_raise(explorer: RE.RegionExplorer, monkeypatch) -> None:
    monkeypatch.setattr(explorer, "_update_point", lambda: 1 / 0)
    explorer.controls["x"].value = 0.2
    assert explorer.message.startswith("ZeroDivisionError")


def test_click_on_the_picture_moves_the_point(explorer: RE.RegionExplorer) -> None:
    h = explorer.fig.bbox.height
    px, py = explorer.ax_map.transData.transform((0.8, -0.6))
    explorer.pick_pixel(px, h - py)
    assert explorer.controls["x"].value == pytest.approx(0.8, abs=1e-6)
    assert explorer.controls["y"].value == pytest.approx(-0.6, abs=1e-6)
    explorer._on_click({"type": "click", "dataX": 1.0, "dataY": 1.0})  # the corner: off the map, ignored
    assert explorer.controls["x"].value == pytest.approx(0.8, abs=1e-6)


def test_from_model_and_unsupported_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    ex = RE.RegionExplorer.from_model(model, ((-1, 1), (-1, 1)))
    assert ex.controls["output"].options[-1][1] == 2 and ex.message == ""
    with pytest.raises(ValueError, match="GELU"):
        RE.RegionExplorer.from_model(nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)), ((-1, 1), (-1, 1)))
