"""The explorer with no kernel: its precomputed data against independent decompositions, its size, and the page
itself opened from disk in headless Chromium (controls, numbers shown, first-view transfer, aspect ratios)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import chromium_page, require_browser

import pwawidgets as pw
from pwawidgets.data import PHOTOS, sample_photo
from pwawidgets.static_explorer import TOY, build
from pwawidgets.static_explorer.encoding import quantise, unpack_maps
from pwawidgets.static_explorer.precompute import toy_network

MB = 1024 * 1024
FIRST_VIEW_BUDGET = 3 * MB
EXPLORER_BUDGET = 25 * MB
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "static_explorer.png"


def read_data(path: Path) -> dict:
    """The JSON payload of a data file ``pwaReceive(kind, {...});`` or ``var PWA_META = {...};``."""
    text = path.read_text()
    return json.loads(text[text.index("{"): text.rindex("}") + 1])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("explorer"), photos=2, progress=False)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return pw.load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def meta(built) -> dict:
    return read_data(built.parent / "data" / "meta.js")


def float64_decomposition(model: torch.nn.Module, photo: str, layers: list[str]) -> pw.Decomposition:
    """An independent reference: the same photo decomposed by a float64 copy of the network."""
    x = pw.load_image(sample_photo(photo), model=model).double()
    return pw.decompose(copy.deepcopy(model).double(), x, "top5", layers, keep_gradients=True)


def float32_tolerance(*values: float) -> float:
    """What float32 arithmetic through EfficientNet-Lite0 leaves on a score, bias or sum of this size."""
    return 1e-4 * max(1.0, *(abs(v) for v in values))


# ------------------------------------------------------------------------------------------- encoding


def test_quantise_keeps_each_value_within_half_a_step_and_zero_exact():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((28, 28)) * rng.exponential(1, (28, 28))
    values[3, 4] = 0.0
    q, s = quantise(values)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert s == pytest.approx(np.abs(values).max() / 127, rel=1e-15)
    assert np.abs(q * s - values).max() <= s / 2 * (1 + 1e-12)
    assert q[3, 4] == 0
    zero_q, zero_s = quantise(np.zeros((7, 7)))
    assert zero_s == 1.0 and not zero_q.any()
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantise(np.array([1.0, np.nan]))


def test_build_refuses_bad_arguments_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="photos is a count from 1 to"):
        build(tmp_path / "a", photos=0)
    with pytest.raises(ValueError, match="photos names bundled photos.*'nope'"):
        build(tmp_path / "a", photos=["chelsea", "nope"])
    with pytest.raises(TypeError, match="photos is None"):
        build(tmp_path / "a", photos=2.0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out_dir .* is a file"):
        build(tmp_path / "file", photos=1)
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------- precompute


def test_stored_numbers_equal_an_independent_float64_decomposition(built, meta, model):
    payload = read_data(built.parent / "data" / "photo-chelsea.js")
    layers = [layer["name"] for layer in meta["layers"]]
    dec = float64_decomposition(model, "chelsea", layers)
    assert [c["index"] for c in payload["classes"]] == dec.target[0].tolist()
    assert payload["exact"] is True and dec.exact
    for j, cls in enumerate(payload["classes"]):
        assert cls["score"] == pytest.approx(float(dec.score[0, j]), abs=float32_tolerance(cls["score"]))
        for i, layer in enumerate(layers):
            h, w = dec.activation(layer)[0], dec.gradient(layer)[0, j]
            ours = float((h * w).sum())  # Σ w·h, from the activations and gradients, not the pixel map
            gradcam = float((w.mean(dim=(-2, -1), keepdim=True) * h).sum())
            bias = float(dec.bias[layer][0, j])
            tol = float32_tolerance(ours, bias)
            assert cls["bias"][i] == pytest.approx(bias, abs=tol), (j, layer)
            assert cls["sums"]["ours"][i] == pytest.approx(ours, abs=tol), (j, layer)
            assert cls["sums"]["gradcam"][i] == pytest.approx(gradcam, abs=float32_tolerance(gradcam, bias))
            # the identity the page shows: Σ contributions + b = S
            assert cls["sums"]["ours"][i] + cls["bias"][i] == pytest.approx(cls["score"], abs=tol)


def test_stored_maps_are_decompose_maps_within_the_quantisation_bound(built, meta, model):
    payload = read_data(built.parent / "data" / "photo-coffee.js")
    layers = [layer["name"] for layer in meta["layers"]]
    shapes = [(layer["height"], layer["width"]) for layer in meta["layers"]]
    x = pw.load_image(sample_photo("coffee"), model=model)
    dec = pw.decompose(model, x, "top5", layers, keep_gradients=True)  # float32, as the build
    maps = unpack_maps(payload, shapes)
    assert len(maps) == 2 * 5 * len(layers)
    for j, cls in enumerate(payload["classes"]):
        for i, layer in enumerate(layers):
            for method in ("ours", "gradcam"):
                ref = pw.baselines.from_decomposition(dec, method, layer)[0, j].double().numpy()
                stored, s = maps[(method, j, i)], cls["scales"][method][i]
                assert stored.shape == ref.shape
                assert np.abs(stored - ref).max() <= s / 2 + 1e-6 * np.abs(ref).max(), (method, j, layer)
            # Σ stored map + b = S, within the stated bound N·s/2
            stored = maps[("ours", j, i)]
            bound = stored.size * cls["scales"]["ours"][i] / 2
            assert abs(stored.sum() + cls["bias"][i] - cls["score"]) <= bound + float32_tolerance(cls["score"])


def test_region_data_is_the_networks_affine_map_on_each_region(built):
    payload = read_data(built.parent / "data" / "regions.js")
    toy = toy_network()
    assert payload["dataset"] == TOY["dataset"] and payload["hidden"] == list(TOY["hidden"])
    final = payload["layers"][-1]["polygons"]
    assert len(final) == len(payload["W"]) == len(payload["b"]) > 10
    counts = [len(layer["polygons"]) for layer in payload["layers"]]
    assert counts == sorted(counts)  # later layers only split regions
    for polygon, W, b in zip(final, payload["W"], payload["b"], strict=True):
        centre = torch.tensor(np.mean(polygon, axis=0), dtype=torch.float64, requires_grad=True)
        logits = toy.model(centre[None])[0]
        jacobian = torch.stack([torch.autograd.grad(logits[k], centre, retain_graph=True)[0]
                                for k in range(len(logits))])
        np.testing.assert_allclose(W, jacobian.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.array(W) @ centre.detach().numpy() + b, logits.detach().numpy(), atol=1e-9)


def test_sizes_of_the_quick_build(built, meta):
    folder = built.parent
    assert [p["name"] for p in meta["photos"]] == list(PHOTOS)[:2]
    first_view = sum((folder / name).stat().st_size for name in
                     ("index.html", "explorer.css", "explorer.js", "region_view.js", "data/meta.js",
                      f"data/photo-{meta['photos'][0]['name']}.js"))
    assert first_view <= FIRST_VIEW_BUDGET
    for photo in meta["photos"]:
        assert (folder / photo["file"]).stat().st_size <= 1.5 * MB


def test_full_build_holds_every_photo_within_budget(tmp_path):
    index = build(tmp_path / "full", progress=False)
    files = [p for p in index.parent.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= EXPLORER_BUDGET
    assert sorted(p.name for p in (index.parent / "data").glob("photo-*.js")) == sorted(
        f"photo-{name}.js" for name in PHOTOS)
    assert read_data(index.parent / "data" / "meta.js")["build_seconds"] < 120


def test_screenshot_is_kept_small():
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size <= 300 * 1024


# ------------------------------------------------------------------------------------------- the page

MAP_PIXELS = "document.getElementById('map').toDataURL()"
ASPECTS = """() => [...document.querySelectorAll('img, canvas, svg')].filter((e) => e.getClientRects().length)
  .map((e) => {
    const r = e.getBoundingClientRect();
    let natural;
    if (e.tagName === 'IMG') natural = e.naturalWidth / e.naturalHeight;
    else if (e.tagName === 'CANVAS') natural = e.width / e.height;
    else { const v = e.viewBox.baseVal; natural = v.width / v.height; }
    return {id: e.id || e.alt || e.tagName, rendered: r.width / r.height, natural, width: r.width};
  })"""


def shown(page, element_id: str) -> float:
    return float(page.locator(f"#{element_id}").get_attribute("data-value"))


def wait_key(page, selector: str, old: str) -> str:
    page.wait_for_function(f"(old) => document.querySelector('{selector}').dataset.key !== old", arg=old,
                           timeout=30_000)
    return page.locator(selector).get_attribute("data-key")


def check_aspects(page, width: int) -> int:
    page.set_viewport_size({"width": width, "height": 1000})
    page.wait_for_timeout(200)
    found = page.evaluate(ASPECTS)
    for item in found:
        assert item["width"] > 20, item
        assert abs(item["rendered"] / item["natural"] - 1) <= 0.02, (width, item)
    return len(found)


def test_page_from_disk_controls_numbers_transfer_and_aspect(built, meta, model):
    require_browser()
    layers = [layer["name"] for layer in meta["layers"]]
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        transferred: dict[str, int] = {}
        page.on("requestfinished", lambda r: transferred.__setitem__(
            r.url, r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]))
        page.set_viewport_size({"width": 1600, "height": 1000})
        page.goto(built.as_uri())
        page.wait_for_function("window.PWA && window.PWA.renders > 0", timeout=30_000)
        page.wait_for_load_state("networkidle")

        # first view: the page, its script and style, the meta file and one photo's data, within budget
        assert sum(transferred.values()) <= FIRST_VIEW_BUDGET, transferred
        assert [u for u in transferred if "photo-" in u] == [f"{built.parent.as_uri()}/data/photo-chelsea.js"]
        assert not any("regions.js" in u for u in transferred)
        assert all(u.startswith("file://") or u.startswith("data:") for u in transferred)

        # each control changes the map
        key = page.locator("#map").get_attribute("data-key")
        pixels = page.evaluate(MAP_PIXELS)
        page.locator("#layer").focus()
        for _ in range(len(layers) - 1 - layers.index("stage3")):
            page.keyboard.press("ArrowLeft")
            key = wait_key(page, "#map", key)
            assert page.evaluate(MAP_PIXELS) != pixels
            pixels = page.evaluate(MAP_PIXELS)
        assert page.evaluate("PWA.state.layer") == layers.index("stage3")
        page.locator("#class").focus()
        page.keyboard.press("ArrowRight")
        key = wait_key(page, "#map", key)
        assert page.evaluate(MAP_PIXELS) != pixels
        pixels = page.evaluate(MAP_PIXELS)

        page.locator("#opacity").focus()
        page.keyboard.press("ArrowLeft")
        key = wait_key(page, "#map", key)
        assert page.evaluate(MAP_PIXELS) != pixels
        pixels = page.evaluate(MAP_PIXELS)
        page.locator("#scale").select_option("99")
        key = wait_key(page, "#map", key)
        assert page.evaluate(MAP_PIXELS) != pixels and page.locator("#vmax").inner_text().startswith("≥")
        pixels = page.evaluate(MAP_PIXELS)

        # the numbers shown: class 2 of chelsea at stage3, against the float64 decomposition made here
        dec = float64_decomposition(model, "chelsea", ["stage3"])
        h, w = dec.activation("stage3")[0], dec.gradient("stage3")[0, 1]
        score, bias, ours = float(dec.score[0, 1]), float(dec.bias["stage3"][0, 1]), float((h * w).sum())
        tol = float32_tolerance(score, bias, ours)
        assert f"#{int(dec.target[0, 1])}" in page.locator("#class-name").inner_text()
        assert shown(page, "score") == pytest.approx(score, abs=tol)
        assert shown(page, "bias") == pytest.approx(bias, abs=tol)
        assert shown(page, "sum") == pytest.approx(ours, abs=tol)
        assert shown(page, "total") == pytest.approx(score, abs=tol)
        assert abs(shown(page, "stored") - shown(page, "total")) <= shown(page, "bound")
        text = page.locator("#score").inner_text().replace("−", "-")  # 7 significant digits
        assert float(text) == pytest.approx(shown(page, "score"), rel=1e-6)

        page.locator("#method input[value=gradcam]").check()
        key = wait_key(page, "#map", key)
        assert page.evaluate(MAP_PIXELS) != pixels
        pixels = page.evaluate(MAP_PIXELS)
        gradcam = float((w.mean(dim=(-2, -1), keepdim=True) * h).sum())
        assert shown(page, "sum") == pytest.approx(gradcam, abs=float32_tolerance(gradcam, bias))
        assert shown(page, "score") - shown(page, "total") == pytest.approx(score - gradcam - bias, abs=tol)
        assert "not a decomposition" in page.locator("#identity").inner_text()

        # the photo picker loads the second photo's data on demand
        with page.expect_request_finished(lambda r: r.url.endswith("/data/photo-coffee.js")):
            page.locator("#photo").select_option("coffee")
        key = wait_key(page, "#map", key)
        assert key.startswith("coffee/") and page.evaluate(MAP_PIXELS) != pixels
        coffee = read_data(built.parent / "data" / "photo-coffee.js")["classes"][1]
        assert shown(page, "score") == coffee["score"]  # the stored float, shown unrounded in data-value
        assert shown(page, "bias") == coffee["bias"][layers.index("stage3")]

        n_photo_view = check_aspects(page, 900)
        assert check_aspects(page, 1600) == n_photo_view >= 2 + len(meta["photos"])

        # the region view: a click shows the point's region and its exact affine map
        page.click("#tab-regions")
        page.wait_for_function("window.PWA_REGIONS.data !== null", timeout=30_000)
        toy = toy_network()
        svg = page.locator("#region-svg")
        key = svg.get_attribute("data-key")
        for position in ({"x": 120, "y": 300}, {"x": 330, "y": 120}):
            svg.click(position=position)
            key = wait_key(page, "#region-svg", key)
            info = page.locator("#region-info")
            point = torch.tensor([float(info.get_attribute("data-x")), float(info.get_attribute("data-y"))],
                                 dtype=torch.float64, requires_grad=True)
            logit = toy.model(point[None])[0, 0]
            (grad,) = torch.autograd.grad(logit, point)
            p = point.detach()
            assert shown(page, "region-logit") == pytest.approx(float(logit.detach()), abs=1e-9)
            assert shown(page, "region-c1") == pytest.approx(float(grad[0] * p[0]), abs=1e-9)
            assert shown(page, "region-c2") == pytest.approx(float(grad[1] * p[1]), abs=1e-9)
            assert shown(page, "region-bias") == pytest.approx(float(logit.detach() - grad @ p), abs=1e-9)
        page.locator("#region-output input[value='1']").check()
        page.wait_for_function("window.PWA_REGIONS.output === 1")
        with torch.no_grad():
            second = float(toy.model(point.detach()[None])[0, 1])
        assert shown(page, "region-logit") == pytest.approx(second, abs=1e-9)
        page.locator("#region-layer").focus()
        page.keyboard.press("ArrowLeft")
        wait_key(page, "#region-svg", key)
        assert check_aspects(page, 900) == check_aspects(page, 1600) == 1
        assert not errors, errors


def test_a_missing_data_file_is_named_and_the_page_keeps_working(built, tmp_path):
    require_browser()
    folder = tmp_path / "explorer"
    shutil.copytree(built.parent, folder)
    (folder / "data" / "photo-coffee.js").unlink()
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((folder / "index.html").as_uri())
        page.wait_for_function("window.PWA && window.PWA.renders > 0", timeout=30_000)
        key = page.locator("#map").get_attribute("data-key")
        page.locator("#photo").select_option("coffee")
        page.wait_for_selector("#status.error", timeout=30_000)
        assert "could not load data/photo-coffee.js" in page.locator("#status").inner_text()
        assert "build(out_dir)" in page.locator("#status").inner_text()
        assert page.locator("#photo").input_value() == "chelsea"
        page.locator("#class").focus()
        page.keyboard.press("ArrowRight")
        assert wait_key(page, "#map", key).startswith("chelsea/")
        assert not errors, errors
