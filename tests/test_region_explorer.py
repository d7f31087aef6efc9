"""RegionExplorer: controls set in Python change the picture; slider moves reuse cached partitions."""

from __future__ import annotations

import threading

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


def test_state_class_is_region_state(explorer: RE.RegionExplorer) -> None:
    assert isinstance(explorer.state, RE.RegionState)
    assert not hasattr(RE, "ExplorerState")


def test_a_slider_move_during_a_background_install_is_applied(explorer: RE.RegionExplorer, monkeypatch) -> None:
    """The worker pauses inside its own hold, between two controls of the install; the kernel thread moves a
    slider meanwhile. The move must be applied (not swallowed by the worker's hold), survive the rest of the
    install, and every later callback must still work."""
    paused, release = threading.Event(), threading.Event()
    push = explorer._push_control

    def pausing_push(key: str) -> None:
        if threading.current_thread() is not threading.main_thread() and key == "y" and not paused.is_set():
            paused.set()
            assert release.wait(60), "the test never released the worker"
        push(key)

    monkeypatch.setattr(explorer, "_push_control", pausing_push)
    c = explorer.controls
    c["dataset"].value, c["depth"].value, c["width"].value = "circles", 2, 6
    thread = explorer.retrain()
    try:
        assert paused.wait(120), "the worker never reached the install"
        assert explorer.state.full.widths == (6, 6)  # the new network is committed; its controls are not all set
        assert c["y"].value != 0.25
        c["y"].value = 0.25  # inside the old and the new box
        assert explorer.state.point[1] == 0.25, "the move was dropped"
    finally:
        release.set()
        explorer.wait(120)
    assert not thread.is_alive() and explorer.message == ""
    assert explorer.state.point[1] == 0.25 and c["y"].value == 0.25
    assert not explorer._held
    before = explorer.snapshot()
    c["x"].value = 0.5
    assert explorer.state.point == (0.5, 0.25)
    assert not np.array_equal(explorer.snapshot(), before)
    c["layer"].value = 1
    assert explorer.state.layer == 1 and len(explorer.regions) < len(explorer.state.full)


def test_retraining_leaves_the_thread_count_alone(explorer: RE.RegionExplorer, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    explorer.retrain(wait=True)
    assert explorer.message == ""
    assert calls == []  # the worker thread never changes the process-wide setting


def test_a_click_outside_the_map_and_a_bad_pick_do_not_raise(explorer: RE.RegionExplorer) -> None:
    assert explorer.pick_pixel(-50, -50) is False and explorer.message == ""
    assert explorer.pick("left", 0) is False
    assert explorer.message.startswith("ValueError")
    assert explorer.pick(0.3, 0.2) is True and explorer.message == ""
    assert explorer.state.point == (0.3, 0.2)


def test_close_frees_the_explorer(toy: R.ToyNet) -> None:
    import gc
    import weakref

    explorer = RE.RegionExplorer(toy, steps=150)
    ref = weakref.ref(explorer)
    explorer.close()
    assert explorer.image.comm is None and explorer.controls["x"].comm is None
    assert explorer._events is None or explorer._events.comm is None
    assert explorer.state.layer_sets == [] and explorer._backgrounds == {}
    del explorer
    gc.collect()
    assert ref() is None


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("key", ["x", "y"])
def test_a_nan_slider_is_refused_and_the_point_stays(explorer: RE.RegionExplorer, key: str) -> None:
    point, before = explorer.state.point, explorer.snapshot()
    explorer.controls[key].value = float("nan")
    assert explorer.message.startswith("ValueError: x") and "is a finite number, got nan" in explorer.message
    assert "the point stays at" in explorer.message
    assert explorer.state.point == point and explorer.controls[key].value == point["xy".index(key)]
    assert np.array_equal(explorer.snapshot(), before)
    explorer.controls[key].value = 0.25  # the next move works and clears the message
    assert explorer.message == "" and explorer.state.point["xy".index(key)] == 0.25


@pytest.mark.parametrize("x, y", [(float("nan"), 0.0), (0.0, float("inf")), (-float("inf"), 0.0)])
def test_pick_refuses_non_finite_coordinates(explorer: RE.RegionExplorer, x: float, y: float) -> None:
    point = explorer.state.point
    assert explorer.pick(x, y) is False and "is a finite number" in explorer.message
    assert explorer.pick_pixel(x, y) is False and "is a finite number" in explorer.message
    assert explorer.state.point == point
    assert explorer.pick(0.3, 0.2) and explorer.message == ""


def test_calls_after_close_say_the_explorer_was_closed(toy: R.ToyNet) -> None:
    explorer = RE.RegionExplorer(toy, steps=150)
    explorer.close()
    assert explorer.closed
    assert explorer.pick(0.1, 0.1) is False and "explorer was closed" in explorer.message
    explorer.message_widget.value = ""
    explorer._on_click({"type": "click", "dataX": 100.0, "dataY": 100.0})  # the click handler: no raise
    assert "explorer was closed" in explorer.message_widget.value
    assert explorer.retrain(wait=True) is None and "explorer was closed" in explorer.message
    assert explorer.state.stats["trainings"] == 1
    with pytest.raises(RuntimeError, match="explorer was closed"):
        explorer.region  # noqa: B018


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_retrain_refuses_a_seed_out_of_range(explorer: RE.RegionExplorer, seed: int) -> None:
    before, trainings = explorer.snapshot(), explorer.state.stats["trainings"]
    explorer.controls["seed"].value = seed
    assert explorer.retrain(wait=True) is None  # no thread started
    assert explorer.message == f"Retrain: seed is a whole number from 0 to {2**32 - 1}, got {seed}"
    assert not explorer.controls["retrain"].disabled and explorer.state.stats["trainings"] == trainings
    assert np.array_equal(explorer.snapshot(), before)
    explorer.controls["x"].value = 0.1
    assert explorer.message == ""
    with pytest.raises(ValueError, match="seed is a whole number from 0"):
        RE.RegionExplorer(seed=seed, steps=10)


def test_a_bare_model_points_to_from_model() -> None:
    with pytest.raises(TypeError, match=r"RegionExplorer\.from_model\(model, bounds="):
        RE.RegionExplorer(R.build_mlp())
    with pytest.raises(TypeError, match="toy is a ToyNet"):
        RE.RegionExplorer("moons")
    with pytest.raises(TypeError, match="model is a torch nn.Module"):
        RE.RegionExplorer.from_model("mlp", ((-1, 1), (-1, 1)))
    with pytest.raises(ValueError, match="steps is a whole number"):
        RE.RegionExplorer(steps=0)
