"""The faithfulness grid of notebook 08: maps against independent computations, the metrics against Quantus' own
calls and a direct numpy pixel flipping, the statistics against direct resampling, and the notebook without
Quantus."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

import pwawidgets as pw
from pwawidgets.fidelity import random_map
from pwawidgets.integrations import faithfulness as ff

SIZE, MEAN, STD = 16, (0.4, 0.4, 0.4), (0.25, 0.25, 0.25)
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "08_faithfulness_quantus.ipynb"
SMALL = ff.Sizes(nr_runs=4, subset_fraction=0.05, flip_steps=4, road_percentages=(10, 50), patch_size=8,
                 ig_steps=4, batch_size=2)


def tiny(dtype: torch.dtype, affine: bool = False, mean=MEAN) -> nn.Module:
    torch.manual_seed(0)
    act = nn.Identity() if affine else nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), act, nn.MaxPool2d(2) if not affine else nn.AvgPool2d(2),
                          nn.Conv2d(6, 6, 3, padding=1), nn.Identity() if affine else nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4)).to(dtype).eval()
    model.preprocessing = pw.Preprocessing(size=SIZE, crop=SIZE, mean=mean, std=STD, name="test")
    return model


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return x, torch.tensor([0, 3, 1])


def _w_and_h(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: nn.Module | None):
    """Independent reference: the gradient of the target logits at the input or at a module's output."""
    kept = []
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.append(out)) if layer is not None else None
    x = x.clone().requires_grad_(True)
    logits = model(x)
    if handle:
        handle.remove()
    h = kept[-1] if layer is not None else x
    (w,) = torch.autograd.grad(logits[torch.arange(len(y)), y].sum(), h)
    return w.detach(), h.detach()


def _bilinear(maps: torch.Tensor) -> np.ndarray:
    return nn.functional.interpolate(maps[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False).numpy()


def test_quantus_status_says_how_to_install_when_it_is_missing(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "quantus", None)
    ok, line = ff.quantus_status()
    assert not ok and "pip install pwawidgets[quantus]" in line


def test_reference_pixels() -> None:
    model = tiny(torch.float64, mean=(0.4, 0.5, 0.6))
    np.testing.assert_array_equal(ff.reference_fill(model, "normalized"), np.zeros(3))
    black = ff.reference_fill(model, "raw")
    np.testing.assert_allclose(black * np.array(STD) + np.array([0.4, 0.5, 0.6]), 0, atol=1e-15)  # raw pixel 0
    with pytest.raises(ValueError, match="reference='grey'"):
        ff.reference_fill(model, "grey")
    del model.preprocessing
    with pytest.raises(ValueError, match="normalization="):
        ff.reference_fill(model, "raw")
    np.testing.assert_allclose(ff.reference_fill(model, "raw", ((0.4, 0.5, 0.6), STD)), black)


def test_the_maps_against_independent_computations(data) -> None:
    x, y = data
    model = tiny(torch.float64)
    before = x.clone()
    maps = ff.attributions(model, x, y, "4", sizes=SMALL, seed=3)
    assert torch.equal(x, before)
    w_in, _ = _w_and_h(model, x, y, None)
    w, h = _w_and_h(model, x, y, model[4])
    black = torch.tensor(ff.reference_fill(model, "raw")).view(1, 3, 1, 1)
    grey, raw = maps["normalized"], maps["raw"]
    np.testing.assert_allclose(grey["ours_input"], (w_in * x).numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(raw["ours_input"], (w_in * (x - black)).numpy(), rtol=1e-12, atol=1e-15)
    # the raw pixels' contributions of decompose(reference="raw"), the same numbers
    d = pw.decompose(model, x, y, ["input"], reference="raw")
    np.testing.assert_allclose(raw["ours_input"], d.contribution("input").numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grey["ours_block"], _bilinear((w * h).sum(1)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grey["gradcam"], _bilinear((w.mean((2, 3), keepdim=True) * h).sum(1)), rtol=1e-12,
                               atol=1e-15)
    cam = (w * h).sum(1).clamp_min(0)
    cam = cam / (1e-7 + cam.amax((1, 2), keepdim=True))  # clipped at 0: the minimum is 0 on these images
    big = torch.from_numpy(_bilinear(cam))
    low = big.amin((1, 2, 3), keepdim=True)
    np.testing.assert_allclose(grey["hirescam"], ((big - low) / (1e-7 + (big - low).amax((1, 2, 3), keepdim=True)))
                               .numpy(), rtol=1e-10, atol=1e-12)
    expected = np.stack([random_map((SIZE, SIZE), 3, i, "input").numpy() for i in range(3)])[:, None]
    np.testing.assert_array_equal(grey["random"], expected)
    for method in ("ours_block", "gradcam", "hirescam", "random"):  # no reference in them
        assert raw[method] is grey[method]
    assert grey["integrated_gradients"].shape == (3, 3, SIZE, SIZE)


def test_hirescam_is_pytorch_grad_cams(data) -> None:
    from pytorch_grad_cam import HiResCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x, y = data
    model = tiny(torch.float32)
    x32 = x.float()
    ours = ff.attributions(model, x32, y, "4", ["normalized"], sizes=SMALL)["normalized"]["hirescam"][:, 0]
    with HiResCAM(model, [model[4]]) as cam:
        theirs = cam(input_tensor=x32, targets=[ClassifierOutputTarget(int(c)) for c in y])
    np.testing.assert_allclose(ours, theirs, atol=2e-6)


def test_integrated_gradients_equal_the_contributions_on_an_affine_model(data) -> None:
    """On an affine network the path integral is exact whatever the steps: w * (x - x0)."""
    x, y = data
    maps = ff.attributions(tiny(torch.float64, affine=True), x, y, "4", sizes=SMALL)
    for reference in ff.REFERENCES:
        np.testing.assert_allclose(maps[reference]["integrated_gradients"], maps[reference]["ours_input"],
                                   rtol=1e-9, atol=1e-12)


def test_bad_arguments_are_refused_before_any_work(data) -> None:
    x, y = data
    model = tiny(torch.float64)
    with pytest.raises(ValueError, match="sizes.nr_runs"):
        ff.Sizes(nr_runs=0)
    with pytest.raises(ValueError, match="sizes.subset_fraction"):
        ff.Sizes(subset_fraction=1.5)
    with pytest.raises(ValueError, match="sizes.road_percentages"):
        ff.Sizes(road_percentages=(50, 100))
    with pytest.raises(ValueError, match="targets holds 2 classes for 3 images"):
        ff.attributions(model, x, y[:2], "4")
    with pytest.raises(ValueError, match="reference='black'"):
        ff.attributions(model, x, y, "4", ["black"])
    with pytest.raises(TypeError, match="model.float()"):
        ff.evaluate(model, x, y, {"normalized": {}})
    model32 = tiny(torch.float32, mean=(0.4, 0.5, 0.6))   # black differs between channels
    pytest.importorskip("quantus")
    with pytest.raises(ValueError, match="differs between channels"):
        ff.evaluate(model32, x.float(), y, {"raw": {}})
    with pytest.raises(ValueError, match=r"maps\['normalized'\]\['random'\] has shape"):
        ff.evaluate(model32, x.float(), y, {"normalized": {"random": np.zeros((3, 1, 8, 8))}})
    with pytest.raises(ValueError, match="flip_steps=5 does not divide the 256 pixels"):
        ff.evaluate(model32, x.float(), y, {"normalized": {}}, sizes=ff.Sizes(flip_steps=5))


@pytest.fixture(scope="module")
def graded(data):
    pytest.importorskip("quantus")
    x, y = data
    model = tiny(torch.float32)
    x32 = x.float()
    maps = ff.attributions(model, x32, y, "4", sizes=SMALL, seed=1)
    state = np.random.get_state()
    scores = ff.evaluate(model, x32, y, maps, sizes=SMALL, seed=5)
    after = np.random.get_state()
    return model, x32, y, maps, scores, (state, after)


def test_evaluate_keeps_the_callers_numpy_state_and_gives_one_score_per_image(graded) -> None:
    *_, scores, (state, after) = graded
    assert all(np.array_equal(a, b) for a, b in zip(state, after, strict=True) if isinstance(a, np.ndarray))
    for reference in ff.REFERENCES:
        assert set(scores[reference]) == {(m, k) for m in ff.METHODS for k in ff.METRICS}
        assert all(v.shape == (3,) and np.isfinite(v).all() for v in scores[reference].values())


def test_pixel_flipping_against_a_direct_computation(graded) -> None:
    model, x, y, maps, scores, _ = graded
    for reference in ff.REFERENCES:
        fill = ff.reference_fill(model, reference).astype(np.float32)
        for method in ("ours_input", "gradcam"):
            a = maps[reference][method]
            order = np.argsort(-a.sum(1).reshape(3, -1), axis=1, kind="stable")
            flipped, curves = x.numpy().reshape(3, 3, -1).copy(), []
            step = SIZE * SIZE // SMALL.flip_steps
            for start in range(0, SIZE * SIZE, step):
                for i in range(3):
                    flipped[i][:, order[i, start:start + step]] = fill[:, None]
                with torch.no_grad():
                    curves.append(model(torch.from_numpy(flipped.reshape(x.shape)))[torch.arange(3), y].numpy())
            curves = np.stack(curves, 1).astype(np.float64)
            expected = curves.sum(1) - (curves[:, 0] + curves[:, -1]) / 2   # trapezoid, unit steps
            np.testing.assert_allclose(scores[reference][method, "PixelFlipping"], expected, rtol=1e-5, atol=1e-5)


def test_the_other_metrics_agree_with_quantus_own_calls(graded) -> None:
    import quantus

    from pwawidgets.integrations.quantus_metrics import ROAD, Selectivity, auc

    model, x, y, maps, scores, _ = graded
    fill = float(ff.reference_fill(model, "raw")[0])
    a = maps["raw"]["ours_input"]
    X, Y = x.numpy(), y.numpy()
    common = {"abs": False, "normalise": False, "disable_warnings": True}
    np.random.seed(5)  # what evaluate does before each metric
    fc = quantus.FaithfulnessCorrelation(nr_runs=4, subset_size=round(0.05 * X[0].size), perturb_baseline=fill,
                                         return_aggregate=False, **common)(model, X, Y, a, softmax=False, batch_size=2)
    np.testing.assert_allclose(scores["raw"]["ours_input", "FaithfulnessCorrelation"], fc, rtol=1e-6)
    sel = Selectivity(patch_size=8, perturb_baseline=fill, **common)(model, X, Y, a)
    np.testing.assert_allclose(scores["raw"]["ours_input", "Selectivity"], auc(np.asarray(sel)), rtol=1e-6)
    np.random.seed(5)
    road = ROAD(percentages=[10, 50], **common)(model, X, Y, a, batch_size=3)  # means over the images
    assert scores["raw"]["ours_input", "ROAD"].mean() == pytest.approx(np.mean(list(road.values())))
    # ROAD has no baseline: a map shared by both references is scored once
    for method in ("ours_block", "random"):
        assert scores["raw"][method, "ROAD"] is scores["normalized"][method, "ROAD"]


def test_summary_is_a_percentile_bootstrap_over_images() -> None:
    values = np.array([0.3, -1.2, 2.5, 0.7, 0.1, 4.0])
    (row,) = ff.summary({("ours_block", "ROAD"): values}, n_boot=500, seed=7)
    idx = torch.randint(0, 6, (500, 6), generator=torch.Generator().manual_seed(7)).numpy()
    means = values[idx].mean(1)
    assert row["mean"] == pytest.approx(values.mean())
    assert (row["low"], row["high"]) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])), rel=1e-12)
    assert row["images"] == 6


def test_rankings_follow_each_metrics_direction() -> None:
    up = {("a", "FaithfulnessCorrelation"): np.array([0.9]), ("b", "FaithfulnessCorrelation"): np.array([0.1]),
          ("c", "FaithfulnessCorrelation"): np.array([0.1])}
    assert ff.ranking(up, "FaithfulnessCorrelation") == {"a": 1.0, "b": 2.5, "c": 2.5}
    down = {(m, "PixelFlipping"): v for (m, _), v in up.items()}
    assert ff.ranking(down, "PixelFlipping") == {"b": 1.5, "c": 1.5, "a": 3.0}
    with pytest.raises(ValueError, match="no scores for metric 'ROAD'"):
        ff.ranking(up, "ROAD")


def test_rank_agreement_is_spearmans_rho_of_the_rankings() -> None:
    rng = np.random.default_rng(0)
    methods = list(ff.METHODS)
    a = {(m, "Selectivity"): rng.normal(size=5) for m in methods}
    b = {(m, "Selectivity"): rng.normal(size=5) for m in methods}
    ra, rb = ff.ranking(a, "Selectivity"), ff.ranking(b, "Selectivity")
    expected = spearmanr([ra[m] for m in methods], [rb[m] for m in methods]).statistic
    assert ff.rank_agreement(a, b, "Selectivity") == pytest.approx(expected, rel=1e-12)
    reversed_b = {(m, k): -v for (m, k), v in a.items()}
    assert ff.rank_agreement(a, reversed_b, "Selectivity") == pytest.approx(-1.0)


def test_paired_difference_is_positive_when_the_first_is_better() -> None:
    scores = {("ours_block", "PixelFlipping"): np.array([1.0, 2.0, 3.0]),
              ("gradcam", "PixelFlipping"): np.array([2.0, 4.0, 3.5])}
    mean, low, high = ff.paired(scores, "PixelFlipping", "ours_block", "gradcam")
    assert mean == pytest.approx(np.mean([1.0, 2.0, 0.5])) and low <= mean <= high
    assert ff.paired(scores, "PixelFlipping", "gradcam", "ours_block")[0] == pytest.approx(-mean)


def _cells():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code" and "colab-setup" not in c.metadata.get("tags", [])]


def test_only_guarded_cells_of_notebook_08_use_quantus() -> None:
    for cell in _cells():
        if "HAVE_QUANTUS" not in cell.source:
            assert "quantus" not in cell.source.lower() and "evaluate(" not in cell.source, cell.source[:80]


def test_notebook_08_skips_cleanly_without_quantus(monkeypatch) -> None:
    """The setup cell and every cell that needs Quantus, run with Quantus hidden: no error, one clear line each."""
    monkeypatch.setitem(sys.modules, "quantus", None)
    for name in [n for n in sys.modules if n.startswith("pwawidgets.integrations.quantus")]:
        monkeypatch.delitem(sys.modules, name)
    cells = [c.source for c in _cells() if "HAVE_QUANTUS" in c.source]
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for source in cells:
            exec(compile(source, "notebook 08", "exec"), namespace)
    assert namespace["HAVE_QUANTUS"] is False
    text = out.getvalue()
    assert "pip install pwawidgets[quantus]" in text.splitlines()[1]
    assert text.count(namespace["SKIPPED"]) == len(cells) - 1
