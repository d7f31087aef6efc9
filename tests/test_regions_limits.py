"""The regions package: its layering, and the limits and refusals of enumerate_regions and friends."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pwawidgets import regions as R
from pwawidgets.regions import network, threads

PACKAGE = Path(R.__file__).parent
# every module may import only those before it
ORDER = ["geometry", "threads", "toy", "network", "partition", "patterns", "counting", "plotting", "checks"]
BOX = ((-2.0, 2.0), (-2.0, 2.0))


def _relative_imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text())
    return [(node.module or "", [a.name for a in node.names]) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1]


def test_modules_import_one_way_and_no_private_names() -> None:
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(ORDER)
    for k, name in enumerate(ORDER):
        for module, names in _relative_imports(PACKAGE / f"{name}.py"):
            assert module in ORDER[:k], f"{name} imports .{module}: not below it"
            assert not any(n.startswith("_") for n in names), f"{name} imports private names {names} of .{module}"
        text = (PACKAGE / f"{name}.py").read_text()
        assert "._net" not in text.replace("self._net", ""), f"{name} reads a RegionSet's private network"
    for line in (PACKAGE / "__init__.py").read_text().splitlines():
        assert "import _" not in line


def test_every_public_name_is_reexported() -> None:
    expected = {"DATASETS", "Bounds", "Region", "RegionSet", "ToyNet", "activation_pattern", "affine_map_at",
                "affine_map_from_pattern", "build_mlp", "check_affine_map", "check_contributions", "check_pattern",
                "count_regions_on_grid", "data_bounds", "enumerate_layers", "enumerate_regions", "make_toy_data",
                "montufar_lower_bound", "plot_logit_surface", "plot_regions", "region_colors", "region_growth",
                "region_upper_bound", "train_toy"}
    assert expected <= set(R.__all__)
    for name in R.__all__:
        assert getattr(R, name) is not None


def test_region_set_outputs_and_net() -> None:
    model = R.build_mlp((4, 4), n_out=3, seed=5)
    rs = R.enumerate_regions(model, BOX)
    pts = np.random.default_rng(0).uniform(-2, 2, (50, 2))
    with torch.no_grad():
        ref = model(torch.from_numpy(pts)).numpy()
    np.testing.assert_allclose(rs.outputs(pts), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rs.outputs(pts), rs.evaluate(pts), rtol=0, atol=1e-9)
    assert isinstance(rs.net, network.PlaneNet) and rs.net.widths == (4, 4) and rs.net.n_outputs == 3
    partial = R.enumerate_regions(model, BOX, upto_layer=1)
    np.testing.assert_allclose(partial.outputs(pts), ref, rtol=0, atol=1e-12)  # outputs, whatever the layer
    assert R.region_colors(rs).shape == (len(rs), 4)


# ------------------------------------------------------------------------------------------------ the region limit


def test_the_region_limit_stops_early_with_a_clear_error() -> None:
    model = R.build_mlp((64, 64, 64), seed=0)
    bounds = ((-6.0, 6.0), (-6.0, 6.0))
    start = time.perf_counter()
    with pytest.raises(R.RegionLimitError) as info:
        R.enumerate_regions(model, bounds, max_regions=2000)
    assert time.perf_counter() - start < 20
    err = info.value
    assert err.count > 2000
    assert err.estimated or err.count < 2000 + 500  # refused before cutting, or stopped as soon as it was passed
    assert err.limit == 2000 and 1 <= err.layer <= 3
    text = str(err)
    assert f"{err.count:,}" in text and "max_regions=2,000" in text
    assert "smaller box" in text and "smaller network" in text and "None" in text
    with pytest.raises(R.RegionLimitError):
        R.enumerate_layers(model, bounds, max_regions=2000)
    assert len(R.enumerate_regions(model, bounds, upto_layer=1, max_regions=2000)) <= 2000


def test_the_default_limit_fits_the_course_nets() -> None:
    import inspect

    assert R.DEFAULT_MAX_REGIONS == 50_000  # a random 128x3 net has 51,508 regions on ((-3, 3), (-3, 3))
    for f in (R.enumerate_regions, R.enumerate_layers):
        assert inspect.signature(f).parameters["max_regions"].default == R.DEFAULT_MAX_REGIONS
    model = R.build_mlp((32, 32, 32, 32), n_out=3, seed=1)  # notebook 01's 4x32 net
    rs = R.enumerate_regions(model, ((-3.0, 3.0), (-2.5, 3.5)))
    assert 1000 < len(rs) < R.DEFAULT_MAX_REGIONS
    assert len(R.enumerate_regions(model, ((-3.0, 3.0), (-2.5, 3.5)), max_regions=None)) == len(rs)
    assert len(R.enumerate_regions(model, ((-3.0, 3.0), (-2.5, 3.5)), max_regions=len(rs))) == len(rs)
    with pytest.raises(R.RegionLimitError):
        R.enumerate_regions(model, ((-3.0, 3.0), (-2.5, 3.5)), max_regions=len(rs) - 1)


def test_a_wide_layer_is_refused_before_it_is_cut() -> None:
    """A 500-unit layer used to run for minutes before the limit triggered: it is counted first."""
    start = time.perf_counter()
    with pytest.raises(R.RegionLimitError) as info:
        R.enumerate_regions(R.build_mlp((500,), seed=0), BOX)
    assert time.perf_counter() - start < 5
    err = info.value
    assert err.estimated and err.layer == 1 and err.count > R.DEFAULT_MAX_REGIONS
    assert "counted before cutting" in str(err)


@pytest.mark.parametrize("hidden", [(30,), (8, 8), (16, 16, 16)])
def test_the_count_before_cutting_is_the_count_after(hidden) -> None:
    """With the limit one below the true count of a layer, the refusal comes before cutting and names that count."""
    model = R.build_mlp(hidden, seed=1)
    counts = [len(rs) for rs in R.enumerate_layers(model, BOX, max_regions=None)]
    for layer, n in enumerate(counts, start=1):
        with pytest.raises(R.RegionLimitError) as info:
            R.enumerate_regions(model, BOX, upto_layer=layer, max_regions=n - 1)
        assert info.value.estimated and info.value.count == n and info.value.layer == layer
        assert len(R.enumerate_regions(model, BOX, upto_layer=layer, max_regions=n)) == n


@pytest.mark.parametrize("limit", [0, -5, 2.5, "many", True])
def test_bad_limits_are_refused(limit) -> None:
    with pytest.raises(ValueError, match="max_regions"):
        R.enumerate_regions(R.build_mlp((3,)), BOX, max_regions=limit)


# ------------------------------------------------------------------------------------------------ boxes


@pytest.mark.parametrize("bounds, match", [
    (((-np.inf, 1.0), (-1.0, 1.0)), "finite"),
    (((-1.0, 1.0), (float("nan"), 1.0)), "finite"),
    (((-1.0, 1.0), (-1.0, float("inf"))), "finite"),
    (((0.0, 0.0), (-1.0, 1.0)), "empty box"),
    (((-1.0, 1.0), (2.0, 2.0)), "empty box"),
    (((1.0, -1.0), (-1.0, 1.0)), "reversed box: xmin"),
    (((-1.0, 1.0), (1.0, -1.0)), "reversed box: ymin"),
    ((-1.0, 1.0, -1.0, 1.0), r"\(\(xmin, xmax\), \(ymin, ymax\)\)"),
    (((-1.0, 1.0),), r"\(\(xmin, xmax\), \(ymin, ymax\)\)"),
    (((-1.0, 1.0, 0.0), (-1.0, 1.0)), r"\(\(xmin, xmax\), \(ymin, ymax\)\)"),
    ((("a", 1.0), (-1.0, 1.0)), r"\(\(xmin, xmax\), \(ymin, ymax\)\)"),
    (None, r"\(\(xmin, xmax\), \(ymin, ymax\)\)"),
])
def test_bad_boxes_are_refused(bounds, match) -> None:
    model = R.build_mlp((3, 3), seed=0)
    for call in (lambda: R.enumerate_regions(model, bounds), lambda: R.enumerate_regions(model, bounds, 0),
                 lambda: R.enumerate_layers(model, bounds), lambda: R.count_regions_on_grid(model, bounds, 10)):
        with pytest.raises(ValueError, match=match):
            call()


def test_a_numpy_box_is_accepted() -> None:
    rs = R.enumerate_regions(R.build_mlp((3,), seed=0), np.array([[-1, 1], [-2, 2]]))
    assert rs.bounds == ((-1.0, 1.0), (-2.0, 2.0)) and all(isinstance(v, float) for v in rs.bounds[0])


# ------------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), "takes 3 inputs, not 2"),
    (nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)), r"'1' \(Tanh\) is not supported"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2)), r"'0' \(Conv2d\) is not supported"),
    (nn.Sequential(nn.ReLU()), "a ReLU before any nn.Linear"),
    (nn.Sequential(nn.Identity(), nn.Flatten()), "no nn.Linear layer"),
    (nn.Sequential(), "no nn.Linear layer"),
    (nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), "a ReLU before any nn.Linear"),
    (nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5), nn.ReLU(), nn.Linear(3, 1)), "dropout in training mode"),
])
def test_unsupported_models_are_refused_clearly(model, match) -> None:
    for call in (lambda: R.enumerate_regions(model, BOX), lambda: R.activation_pattern(model, np.zeros((1, 2)))):
        with pytest.raises(ValueError, match=match):
            call()


def test_models_without_parameters_raise_no_stop_iteration() -> None:
    relu = nn.Sequential(nn.ReLU())
    W, b = R.affine_map_at(relu, (1.0, -2.0))  # a parameter-free net still has a Jacobian
    np.testing.assert_array_equal(W, np.diag([1.0, 0.0]))
    np.testing.assert_array_equal(b, np.zeros(2))
    assert network.float64_copy(relu) is relu
    lin32 = nn.Sequential(nn.Linear(2, 2))
    copy64 = network.float64_copy(lin32)
    assert copy64 is not lin32 and copy64[0].weight.dtype == torch.float64 and lin32[0].weight.dtype == torch.float32
    assert R.check_affine_map(np.diag([1.0, 0.0]), np.zeros(2), relu, (1.0, -2.0)) is True


# ------------------------------------------------------------------------------------------------ threads


def test_one_thread_limits_the_calling_thread_only(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))  # process-wide: never called
    before = torch.get_num_threads()
    seen: dict[str, int] = {}
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        with threads.one_thread():
            seen["worker"] = torch.get_num_threads()
            inside.set()
            release.wait(30)
        seen["worker after"] = torch.get_num_threads()

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(30)
    seen["main meanwhile"] = torch.get_num_threads()
    fresh = threading.Thread(target=lambda: seen.setdefault("new thread meanwhile", torch.get_num_threads()))
    fresh.start()
    fresh.join(30)
    release.set()
    thread.join(30)
    assert seen == {"worker": 1, "main meanwhile": before, "new thread meanwhile": before, "worker after": before}
    with threads.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before and calls == []


def test_train_toy_in_a_worker_thread_matches_the_main_thread(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    before = torch.get_num_threads()
    worker_result: list[R.ToyNet] = []
    thread = threading.Thread(target=lambda: worker_result.append(R.train_toy("xor", (4,), seed=1, steps=30)))
    thread.start()
    thread.join(60)
    main = R.train_toy("xor", (4,), seed=1, steps=30)
    assert worker_result and calls == [] and torch.get_num_threads() == before
    for p, q in zip(main.model.parameters(), worker_result[0].model.parameters(), strict=True):
        assert torch.equal(p, q)  # the same training in either thread


def test_train_toy_checks_its_arguments():
    import pytest

    from pwawidgets.regions import train_toy

    for kwargs, message in ((dict(hidden=5), "sequence of integer widths"), (dict(hidden=(2.5,)), "integer widths"),
                            (dict(n_samples=1), "n_samples"), (dict(steps=-1), "steps"), (dict(seed=-1), "seed")):
        with pytest.raises((TypeError, ValueError), match=message):
            train_toy(**kwargs)
