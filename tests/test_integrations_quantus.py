"""The Quantus integration: explain_func, completeness with the bias, and the metrics with Quantus' pitfalls
worked around (each pitfall is also pinned here, so that a fixed Quantus shows which workaround can go)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn

quantus = pytest.importorskip("quantus")

from pwawidgets.integrations.quantus import CompletenessWithBias, explain  # noqa: E402
from pwawidgets.integrations.quantus_metrics import (  # noqa: E402
    ROAD,
    PixelFlipping,
    Selectivity,
    auc,
    black,
    noisy_linear_imputation,
)

SIZE = 12


def tiny(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4)).to(dtype).eval()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 3, SIZE, SIZE)), np.array([0, 3, 1])


def _w_and_h(model: nn.Module, x: torch.Tensor, y, layer: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent reference: the gradient of the target logits with respect to the input or a module's output."""
    kept = []
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.append(out.clone()) or kept[-1]) if layer else None
    x = x.clone().requires_grad_(True)
    logits = model(x)
    if handle:
        handle.remove()
    h = kept[-1] if layer else x
    (w,) = torch.autograd.grad(logits[torch.arange(len(y)), torch.as_tensor(y)].sum(), h)
    return w, h.detach()


def test_explain_at_the_input_is_w_times_x(data) -> None:
    x, y = data
    model = tiny(torch.float64)
    before = x.copy()
    a = explain(model, x, y)
    w, h = _w_and_h(model, torch.from_numpy(x), y, None)
    assert a.shape == x.shape and a.dtype == np.float64
    np.testing.assert_allclose(a, (w * h).numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(x, before)


def test_explain_at_a_layer_keeps_the_layer_sum(data) -> None:
    x, y = data
    model = tiny(torch.float64)
    a = explain(model, x, y, layer="4")
    assert a.shape == (3, 1, SIZE, SIZE)
    w, h = _w_and_h(model, torch.from_numpy(x), y, model[4])  # a 6 x 6 grid: 2 x 2 pixels a cell
    cells = (w * h).sum(1).numpy()
    np.testing.assert_allclose(a[:, 0], np.kron(cells, np.ones((1, 2, 2))) / 4, rtol=1e-12, atol=1e-15)


def test_explain_as_a_quantus_explain_func(data) -> None:
    x, y = data
    model = tiny(torch.float32)
    x32 = x.astype(np.float32)
    metric = quantus.Sparseness(disable_warnings=True)
    given = metric(model, x32, y, explain(model, x32, y, layer="4"))
    made = metric(model, x32, y, explain_func=explain, explain_func_kwargs={"layer": "4"}, device="cpu")
    np.testing.assert_allclose(made, given, rtol=1e-12)


def test_explain_errors_before_any_work(data) -> None:
    x, y = data
    model = tiny(torch.float64)
    with pytest.raises(ValueError, match="method='Saliency'.*quantus.explain"):
        explain(model, x, y, method="Saliency")
    with pytest.raises(ValueError, match="device='cuda' but the model is on cpu"):
        explain(model, x, y, device="cuda")
    with pytest.raises(ValueError, match="device='gpu' is not a torch device"):
        explain(model, x, y, device="gpu")
    with pytest.raises(TypeError, match=r"does not know: \['gc_layer'\]; it takes method=, layer= and device="):
        explain(model, x, y, gc_layer="4")
    with pytest.raises(ValueError, match="needs image batches"):
        explain(model, x[:, :, 0], y, layer="4")


def test_completeness_with_bias(data) -> None:
    x, y = data
    model = tiny(torch.float64)
    metric = CompletenessWithBias()
    ours = metric(model, x, y, explain(model, x, y))
    assert np.abs(ours).max() < 1e-12
    layer = CompletenessWithBias(layer="4")(model, x, y, explain_func=explain, explain_func_kwargs={"layer": "4"})
    assert np.abs(layer).max() < 1e-12
    # the gradient alone misses sum(w * x): the gap is exactly what it leaves out
    w, h = _w_and_h(model, torch.from_numpy(x), y, None)
    gaps = metric(model, x, y, w.numpy())
    expected = (w.sum((1, 2, 3)) - (w * h).sum((1, 2, 3))).numpy()
    np.testing.assert_allclose(gaps, expected, rtol=1e-10, atol=1e-12)
    # Quantus' own Completeness (no bias, exact float equality) rejects the exact decomposition
    model32, x32 = tiny(torch.float32), x.astype(np.float32)
    exact = explain(model32, x32, y)
    assert np.abs(CompletenessWithBias()(model32, x32, y, exact)).max() < 1e-4
    assert not any(quantus.Completeness(normalise=False, disable_warnings=True)(model32, x32, y, exact))


def _logits(model: nn.Module, x: np.ndarray, y) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x))[np.arange(len(y)), y].numpy()


def test_pixel_flipping_flips_whole_pixels_to_black_and_reads_logits(data) -> None:
    x, y = data
    model = tiny(torch.float32)
    x32 = x.astype(np.float32)
    fill = black(((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    a = np.random.default_rng(1).normal(size=(3, 1, SIZE, SIZE))
    curves = np.array(PixelFlipping(fill=fill, features_in_step=SIZE * 2, disable_warnings=True)(model, x32, y, a))
    assert curves.shape == (3, SIZE // 2)  # pixels in steps of 24, every channel at once
    # independent: the two most relevant rows' worth of pixels set to black in every channel
    expected = x32.copy()
    for i in range(3):
        top = np.argsort(-a[i, 0].ravel(), kind="stable")[: SIZE * 2]
        expected[i].reshape(3, -1)[:, top] = fill[:, None]
    np.testing.assert_allclose(curves[:, 0], _logits(model, expected, y), rtol=1e-5, atol=1e-5)
    all_black = np.broadcast_to(fill[None, :, None, None], x.shape).astype(np.float32)
    np.testing.assert_allclose(curves[:, -1], _logits(model, all_black, y), rtol=1e-5, atol=1e-5)
    # the same curves for per-channel attributions with the same sum per pixel
    split = np.repeat(a / 3, 3, axis=1)
    again = PixelFlipping(fill=fill, features_in_step=SIZE * 2, disable_warnings=True)(model, x32, y, split)
    np.testing.assert_allclose(again, curves, rtol=0, atol=0)


def test_auc_with_numpy_2(data) -> None:
    x, y = data
    model = tiny(torch.float32)
    metric = PixelFlipping(fill=0.0, features_in_step=SIZE * 6, disable_warnings=True)
    curves = np.array(metric(model, x.astype(np.float32), y, np.abs(x)))
    trapezoid = curves.sum(1) - (curves[:, 0] + curves[:, -1]) / 2
    assert metric.get_auc_score == pytest.approx(trapezoid.mean(), rel=1e-12)
    per_sample = PixelFlipping(fill=0.0, features_in_step=SIZE * 6, return_auc_per_sample=True,
                               disable_warnings=True)(model, x.astype(np.float32), y, np.abs(x))
    np.testing.assert_allclose(per_sample, trapezoid, rtol=1e-12)
    np.testing.assert_allclose(auc(curves), trapezoid, rtol=1e-12)


def test_road_runs_on_rgb_and_imputes_the_top_pixels(data) -> None:
    x, y = data
    model = tiny(torch.float32)
    x32 = x.astype(np.float32)
    a = np.random.default_rng(2).normal(size=(3, 1, SIZE, SIZE))
    seen = []

    def zero_pixels(arr: np.ndarray, indices: np.ndarray, **kwargs) -> np.ndarray:
        seen.append(indices)
        out = arr.reshape(arr.shape[0], -1).copy()
        out[:, indices] = 0
        return out.reshape(arr.shape)

    result = ROAD(percentages=[25, 50], perturb_func=zero_pixels, disable_warnings=True)(model, x32, y, a)
    tops = [np.argsort(-a[i, 0].ravel(), kind="stable") for i in range(3)]
    for k, (p, i) in enumerate([(p, i) for p in (25, 50) for i in range(3)]):
        np.testing.assert_array_equal(seen[k], tops[i][: SIZE * SIZE * p // 100])
    assert set(result) == {25, 50}


@pytest.mark.parametrize(("shape", "fraction"), [((3, 40, 40), 0.5), ((3, 17, 23), 0.3), ((1, 9, 9), 1.0)])
def test_noisy_linear_imputation_equals_quantus(shape, fraction) -> None:
    """The same linear system and noise as Quantus' function, to the bit; ROAD uses it unless told otherwise."""
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_nli

    rng = np.random.default_rng(5)
    arr = rng.normal(size=shape).astype(np.float32)
    pixels = rng.permutation(shape[1] * shape[2])[: int(shape[1] * shape[2] * fraction)]
    np.random.seed(11)
    expected = quantus_nli(arr=arr, indices=pixels)
    np.random.seed(11)
    found = noisy_linear_imputation(arr=arr, indices=pixels)
    assert found.dtype == expected.dtype and np.array_equal(found, expected)
    assert not np.array_equal(found, arr)  # the pixels were imputed
    assert ROAD(percentages=[50], disable_warnings=True).perturb_func.func is noisy_linear_imputation


def test_road_averages_every_batch_not_only_the_first(data) -> None:
    """Quantus 0.6.0 averages only the first batch; ours counts every image, whatever the batch size."""
    x, y = data
    model = tiny(torch.float32)
    x32 = x.astype(np.float32)
    a = np.random.default_rng(3).normal(size=(3, 1, SIZE, SIZE))
    kept = [True, False, False]  # image 0 keeps its class at every percentage, images 1 and 2 lose it

    def keep_or_spoil(arr: np.ndarray, indices: np.ndarray, **kwargs) -> np.ndarray:
        index = next(i for i in range(3) if np.array_equal(arr, x32[i]))
        return arr.copy() if kept[index] else np.full_like(arr, 1e3 * (index - 1.5))

    logits = model(torch.from_numpy(x32)).argmax(1).numpy()
    spoiled = [model(torch.full((1, *x32.shape[1:]), 1e3 * (i - 1.5))).argmax(1).item() for i in range(3)]
    truth = np.mean([logits[i] == y[i] if kept[i] else spoiled[i] == y[i] for i in range(3)])
    for batch_size in (1, 2, 3):
        road = ROAD(percentages=[25, 50], perturb_func=keep_or_spoil, disable_warnings=True)
        result = road(model, x32, y, a, batch_size=batch_size)
        assert result == pytest.approx({25: truth, 50: truth}), batch_size


def test_defaults_read_logits_and_refuse_quantus_black() -> None:
    assert PixelFlipping.__call__.__kwdefaults__["softmax"] is False
    with pytest.raises(ValueError, match="not black"):
        Selectivity(perturb_baseline="black")
    with pytest.raises(ValueError, match="give fill="):
        PixelFlipping(fill=0.0, perturb_baseline="black")
    with pytest.raises(ValueError, match="std > 0"):
        black(((0.5,), (0.0,)))
    np.testing.assert_allclose(black(((0.5, 0.25), (0.5, 0.25))), [-1.0, -1.0])


def test_selectivity_logits_and_auc(data) -> None:
    x, y = data
    model = tiny(torch.float32)
    x32 = x.astype(np.float32)
    metric = Selectivity(patch_size=6, disable_warnings=True)
    curves = np.array(metric(model, x32, y, np.abs(x)))
    with torch.no_grad():  # after every patch is replaced by 0: the logits of a zero image
        zeros = model(torch.zeros_like(torch.from_numpy(x32)))[np.arange(3), y].numpy()
    np.testing.assert_allclose(curves[:, -1], zeros, rtol=1e-5, atol=1e-5)
    assert np.isfinite(metric.get_auc_score)


def test_the_pitfalls_are_still_in_quantus(data) -> None:
    """What the workarounds are for; when one of these fails, Quantus fixed it and the workaround can go."""
    x, y = data
    model = tiny(torch.float32)
    x32 = x.astype(np.float32)
    a = np.random.default_rng(3).normal(size=(3, 1, SIZE, SIZE)).astype(np.float32)
    with pytest.raises(IndexError):
        quantus.ROAD(percentages=[50], disable_warnings=True)(model, x32[:1], y[:1], a[:1])
    with pytest.raises(AttributeError, match="trapz"):
        quantus.PixelFlipping(features_in_step=SIZE * 6, return_auc_per_sample=True, disable_warnings=True)(
            model, x32, y, a, softmax=False)
    for cls in (quantus.PixelFlipping, quantus.ROAD, quantus.Selectivity):
        assert inspect.signature(cls.__call__).parameters["softmax"].default is True
    curves = quantus.PixelFlipping(features_in_step=SIZE * SIZE // 2, perturb_baseline=0.0, disable_warnings=True)(
        model, x32[:1], y[:1], a[:1], softmax=False)
    assert len(curves[0]) == 6  # the steps count channel values (3 * 144 / 72), not pixels (144 / 72 = 2)
    first_only = quantus.ROAD.custom_postprocess  # averages evaluation_scores[0], the first batch, only
    holder = type("Scores", (), {"percentages": [50], "evaluation_scores": [np.ones((1, 1)), np.zeros((2, 1))]})()
    first_only(holder)
    assert holder.evaluation_scores == {50: 1.0}  # every image counted would give 1/3
