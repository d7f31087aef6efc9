"""viz: sign views, thresholds, colour tables and overlays, checked against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from pwawidgets import viz


@pytest.fixture
def values() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(20, 30)).astype(np.float32)


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.random((20, 30, 3)).astype(np.float32)


def test_sign_views(values: np.ndarray) -> None:
    assert np.array_equal(viz.sign_view(values, "positive"), np.where(values > 0, values, 0))
    assert np.array_equal(viz.sign_view(values, "negative"), np.where(values < 0, -values, 0))
    assert np.array_equal(viz.sign_view(values, "both"), np.abs(values))
    assert np.array_equal(viz.sign_view(values, "diverging"), values)
    with pytest.raises(ValueError, match="sign view"):
        viz.sign_view(values, "absolute")


@pytest.mark.parametrize("percent", [1, 10, 30, 50, 99])
def test_keep_top_keeps_the_largest_fraction(values: np.ndarray, percent: float) -> None:
    mask = viz.shown_mask(np.abs(values), percent)
    k = round(values.size * percent / 100)
    assert mask.sum() == k  # continuous values: no ties
    order = np.sort(np.abs(values).ravel())[::-1]
    assert np.abs(values)[mask].min() == order[k - 1]
    assert np.abs(values)[~mask].max() == order[k]


def test_keep_top_never_keeps_zeros_and_uses_magnitude(values: np.ndarray) -> None:
    positive = viz.sign_view(values, "positive")
    mask = viz.shown_mask(positive, 100)
    assert np.array_equal(mask, values > 0)
    mask = viz.shown_mask(positive, 90)  # more than the positive share: only positives are kept
    assert np.array_equal(mask, values > 0)
    signed = viz.shown_mask(values, 10)  # diverging: ranked by |v|
    assert np.array_equal(signed, viz.shown_mask(np.abs(values), 10))
    assert not viz.shown_mask(values, 0).any()
    with pytest.raises(ValueError):
        viz.shown_mask(values, 120)


def test_colorize_matches_the_colormap(values: np.ndarray) -> None:
    view = viz.sign_view(values, "positive")
    colours = viz.colorize(view, "positive", cmap="viridis")
    vmax = view.max()
    expected = colormaps["viridis"](np.rint(view / vmax * 255).astype(int))[..., :3]
    np.testing.assert_allclose(colours, expected, atol=1e-6)


def test_diverging_is_centred_at_zero() -> None:
    values = np.array([[-2.0, 0.0, 2.0, 1.0]], dtype=np.float32)
    colours = viz.colorize(values, "diverging", cmap="RdBu_r")
    table = viz.lut("RdBu_r")
    np.testing.assert_allclose(colours[0, 1], table[128], atol=1e-6)  # 0 -> the middle colour
    np.testing.assert_allclose(colours[0, 0], table[0])
    np.testing.assert_allclose(colours[0, 2], table[255])
    np.testing.assert_allclose(colours[0, 3], table[round(0.75 * 255)])


def test_overlay_blends_only_where_kept(values: np.ndarray, image: np.ndarray) -> None:
    colours = viz.colorize(np.abs(values), "both")
    mask = values > 0.5
    out = viz.overlay(image, colours, mask, 0.4).astype(np.float64) / 255
    expected = np.where(mask[..., None], image * 0.6 + colours * 0.4, image)
    np.testing.assert_allclose(out, expected, atol=0.5 / 255 + 1e-6)
    untouched = viz.overlay(image, colours, mask, 0.0)
    assert np.array_equal(untouched, viz.to_uint8(image))
    with pytest.raises(ValueError, match="differ in size"):
        viz.overlay(image, colours[:10], None, 0.5)


def test_render_map_scale_and_threshold(values: np.ndarray, image: np.ndarray) -> None:
    picture, vmax = viz.render_map(image, values, "negative", keep=20, opacity=1.0)
    assert vmax == pytest.approx(float(-values.min()))
    coloured = np.any(picture != viz.to_uint8(image), axis=-1)
    kept = viz.shown_mask(viz.sign_view(values, "negative"), 20)
    assert np.all(coloured <= kept)  # nothing outside the kept pixels is touched
    assert coloured.sum() >= 0.9 * kept.sum()  # (a colour may equal the image pixel by chance)
    _, fixed = viz.render_map(image, values, "positive", vmax=3.0)
    assert fixed == 3.0


def test_png_round_trip_and_panels(image: np.ndarray) -> None:
    picture = viz.to_uint8(image)
    assert np.array_equal(viz.from_png(viz.to_png(picture)), picture)
    p = viz.panel(picture, "conv3", "diverging", 1.5)
    assert p.shape[1] == picture.shape[1] and p.shape[0] > picture.shape[0]
    assert np.array_equal(p[18:18 + picture.shape[0]], picture)
    wide = viz.stack([p, p[:40]], gap=5)
    assert wide.shape == (p.shape[0], 2 * p.shape[1] + 5, 3)
    assert (wide[40:, p.shape[1] + 5:] == 255).all()  # padded white
    text = viz.label(120, "hello")
    assert text.shape == (18, 120, 3) and text.min() < 100  # dark text on white


def test_colorbar_shows_the_colour_scale() -> None:
    bar = viz.colorbar(100, "positive", 2.0, cmap="viridis", height=10)
    table = viz.lut("viridis")
    np.testing.assert_allclose(bar[5, 0] / 255, table[0], atol=1 / 255)
    np.testing.assert_allclose(bar[5, -1] / 255, table[-1], atol=1 / 255)


def test_map_grid_layout(image: np.ndarray, values: np.ndarray) -> None:
    fig = viz.map_grid(image, {"ours": [values, values], "Grad-CAM": [values, -values]}, ["conv4", "conv5"],
                       title="test")
    assert len(fig.axes) == 2 * 3 + 2 * 2  # the panels, then a colour bar under each map
    assert fig.axes[1].get_title() == "ours: conv4" and fig.axes[0].get_title() == "image"
    assert "score units" in {ax.get_xlabel() for ax in fig.axes}
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("no positive part") == 0
    fig = viz.map_grid(image, {"ours": [values, -np.abs(values)]}, ["conv4", "conv5"], colorbars=False)
    assert len(fig.axes) == 3 and [t.get_text() for t in fig.axes[2].texts] == ["no positive part"]
    with pytest.raises(ValueError, match="maps for 2 columns"):
        viz.map_grid(image, {"ours": [values]}, ["conv4", "conv5"])


def test_render_map_refuses_non_finite_maps(image: np.ndarray, values: np.ndarray) -> None:
    bad = values.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        viz.render_map(image, bad)


def test_colour_bars_and_panels_carry_units(image: np.ndarray) -> None:
    bar = viz.colorbar(120, "positive", 2.0)
    assert bar.shape == (10 + 14 + 14, 120, 3)
    assert np.array_equal(bar[24:], viz.label(120, "score units", height=14, size=10))  # the default units
    gradient = viz.colorbar(120, "positive", 2.0, units="score / pixel value")
    assert np.array_equal(gradient[:24], bar[:24]) and not np.array_equal(gradient[24:], bar[24:])
    assert viz.colorbar(120, "positive", 2.0, units="").shape[0] == 24  # no units line asked for
    with pytest.raises(TypeError, match="units is a string"):
        viz.colorbar(120, "positive", 2.0, units=None)
    picture = viz.to_uint8(image)
    p = viz.panel(picture, "conv3", "diverging", 1.5, units="score / unit of activation")
    assert np.array_equal(p[-14:], viz.label(picture.shape[1], "score / unit of activation", height=14, size=10))
    assert p[-14:].min() < 100  # dark text on white


def test_image_panel_is_the_plain_picture_under_a_title(image: np.ndarray) -> None:
    picture = viz.to_uint8(image)
    p = viz.image_panel(image)
    assert p.shape == (18 + picture.shape[0], picture.shape[1], 3)
    assert np.array_equal(p[:18], viz.label(picture.shape[1], "image"))
    assert np.array_equal(p[18:], picture)
