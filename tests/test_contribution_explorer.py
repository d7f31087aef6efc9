"""ContributionExplorer: set controls in Python, check what is rendered; slider moves never recompute a pass."""

from __future__ import annotations

import datetime
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import pwawidgets as pw
from pwawidgets import data, viz
from pwawidgets import images as images_module
from pwawidgets.baselines import gradcam_from, resize_maps
from pwawidgets.widgets.contribution_explorer import ContributionExplorer, preprocessing_for

SIDE_16 = pw.Preprocessing(16, 16, *pw.IMAGENET_NORMALIZATION, name="16 px, ImageNet mean and std")

CONTROLS = ("layer", "target", "method", "sign", "threshold", "opacity", "upload")


@pytest.fixture(scope="module")
def mini() -> nn.Module:
    torch.manual_seed(0)
    return pw.load_model("mini_vgg_bn", pretrained=False)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 80 * 96 * 3).reshape(80, 96, 3)
    return np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture()
def explorer(mini: nn.Module, photo: np.ndarray) -> ContributionExplorer:
    return ContributionExplorer(mini, photo)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="png")
    return buf.getvalue()


def _upload(explorer: ContributionExplorer, content: bytes, name: str = "file.png") -> None:
    explorer.controls["upload"].value = ({"name": name, "type": "image/png", "size": len(content),
                                          "content": memoryview(content),
                                          "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def _independent_input(photo: np.ndarray) -> torch.Tensor:
    return pw.load_image(photo, size=64, crop=64, normalize=False)


SIDE, GAP, TITLE = 256, 6, 18  # displayed side of a mini-net picture, gap between panels, title strip


def _panel(snapshot: np.ndarray, k: int) -> np.ndarray:
    """Panel ``k`` of the picture under its title: 0 is the plain image, 1... the maps."""
    left = k * (SIDE + GAP)
    return snapshot[TITLE:TITLE + SIDE, left:left + SIDE]


def test_surface_and_first_picture(explorer: ContributionExplorer) -> None:
    for name in CONTROLS:
        assert name in explorer.controls
    assert explorer.message == ""
    snap = explorer.snapshot()
    assert snap.dtype == np.uint8 and snap.ndim == 3 and snap.shape[2] == 3
    assert snap.std() > 10
    assert explorer.state.stats["forwards"] == 1 and explorer.state.stats["decompositions"] == 1
    assert explorer.controls["layer"].options == ("input", "conv1", "conv2", "conv3", "conv4")
    assert len(explorer.controls["target"].options) == 5
    assert "untrained" in explorer.info.value


def test_preprocessing_is_decided_from_the_model(mini: nn.Module, vgg11: nn.Module) -> None:
    p = preprocessing_for(mini)
    assert (p.preprocessing.size, p.preprocessing.crop, p.preprocessing.raw) == (64, 64, True)
    assert p.display == 256
    vgg = vgg11
    p = preprocessing_for(vgg)
    assert (p.preprocessing.size, p.preprocessing.crop, p.preprocessing.raw) == (256, 224, False)
    assert p.preprocessing.normalization == pw.IMAGENET_NORMALIZATION
    assert preprocessing_for(vgg, image_size=32).preprocessing.crop == 32


def test_cached_maps_equal_an_independent_decomposition(explorer: ContributionExplorer, mini: nn.Module,
                                                        photo: np.ndarray) -> None:
    from captum.attr import LayerGradCam

    x = _independent_input(photo)
    top = mini(x).topk(5).indices[0]
    assert explorer.state.top == top.tolist()
    dec = pw.decompose(mini, x, top[None], ["conv2", "conv4"], keep_gradients=True)
    for j, c in enumerate(top.tolist()):
        ex = explorer.state.explained[c]
        torch.testing.assert_close(ex.maps[("ours", "conv2")], dec.pixel_map("conv2")[0, j])
        torch.testing.assert_close(ex.maps[("gradient", "conv4")], dec.gradients["conv4"][0, j].sum(0))
        assert ex.score == pytest.approx(float(dec.score[0, j]), rel=1e-5)
        assert ex.bias["conv4"] == pytest.approx(float(dec.bias["conv4"][0, j]), rel=1e-4, abs=1e-6)
    captum = LayerGradCam(mini, mini.get_submodule(mini.block_layers["conv4"])).attribute(
        x, target=int(top[1]), relu_attributions=False)[0, 0]
    torch.testing.assert_close(explorer.state.explained[int(top[1])].maps[("gradcam", "conv4")], captum.detach(),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gradcam_from(dec, "conv4")[0, 1], captum.detach(), rtol=1e-4, atol=1e-6)


def test_snapshot_is_the_overlay_of_the_chosen_map(explorer: ContributionExplorer, mini: nn.Module,
                                                   photo: np.ndarray) -> None:
    c = explorer.controls
    c["layer"].value, c["method"].value, c["sign"].value = "conv2", "ours", "positive"
    c["threshold"].value, c["opacity"].value = 100, 1.0
    x = _independent_input(photo)
    target = explorer.state.target
    independent = pw.decompose(mini, x, target, ["conv2"]).pixel_map("conv2")[0]
    values = resize_maps(independent, 256).numpy()
    expected, _ = viz.render_map(explorer.state.picture, values, "positive", 100, 1.0)
    snapshot = explorer.snapshot()
    assert snapshot.shape[1] == 2 * SIDE + GAP  # the plain image, then the map on it
    assert np.array_equal(_panel(snapshot, 0), viz.to_uint8(explorer.state.picture))  # unmodified, at opacity 1
    shown = _panel(snapshot, 1)
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 1
    assert (shown != viz.to_uint8(explorer.state.picture)).any(axis=-1).mean() > 0.2  # a map is drawn


def test_every_control_changes_the_picture_without_a_new_pass(explorer: ContributionExplorer) -> None:
    c = explorer.controls
    moves = [("layer", "conv1"), ("layer", "input"), ("method", "gradcam"), ("method", "gradient"),
             ("method", "side"), ("sign", "negative"), ("sign", "diverging"), ("sign", "both"),
             ("threshold", 10), ("opacity", 0.2), ("target", explorer.state.top[2])]
    before = explorer.snapshot()
    for key, value in moves:
        c[key].value = value
        after = explorer.snapshot()
        assert explorer.message == "", (key, explorer.message)
        assert after.shape != before.shape or not np.array_equal(after, before), f"{key}={value} changed nothing"
        before = after
    assert explorer.state.stats["decompositions"] == 1 and explorer.state.stats["forwards"] == 1
    assert explorer.snapshot().shape[1] == 4 * SIDE + 3 * GAP  # side by side: the image and three maps


def test_threshold_and_opacity_act_on_pixels(explorer: ContributionExplorer) -> None:
    c = explorer.controls
    c["method"].value, c["sign"].value, c["opacity"].value = "ours", "both", 1.0
    picture = viz.to_uint8(explorer.state.picture)
    c["threshold"].value = 5
    coloured = (_panel(explorer.snapshot(), 1) != picture).any(axis=-1).mean()
    assert 0.02 < coloured <= 0.06
    c["opacity"].value = 0.0
    assert np.array_equal(_panel(explorer.snapshot(), 1), picture)


def test_class_outside_the_top_k_is_computed_once(explorer: ContributionExplorer, mini: nn.Module,
                                                  photo: np.ndarray) -> None:
    s = explorer.state
    outside = next(i for i in range(6) if i not in s.top)
    explorer.controls["class_name"].value = s.class_names[outside]
    assert explorer.message == "" and s.target == outside and s.stats["decompositions"] == 2
    assert outside in [v for _, v in explorer.controls["target"].options]
    explorer.controls["target"].value = s.top[0]
    explorer.controls["target"].value = outside
    explorer.controls["layer"].value = "conv3"
    assert s.stats["decompositions"] == 2
    x = _independent_input(photo)
    independent = pw.decompose(mini, x, outside, ["conv3"])
    summary = explorer.summary()
    assert summary["score"] == pytest.approx(float(independent.score[0]), rel=1e-5)
    assert summary["bias"] == pytest.approx(float(independent.bias["conv3"][0]), rel=1e-4, abs=1e-6)
    assert summary["bias_ratio"] == pytest.approx(summary["bias"] / summary["score"])
    torch.testing.assert_close(s.explained[outside].maps[("ours", "conv3")], independent.pixel_map("conv3")[0])


def test_unknown_class_names_are_reported_inside(explorer: ContributionExplorer) -> None:
    before = explorer.snapshot()
    explorer.controls["class_name"].value = "zebra"
    assert "no class name contains 'zebra'" in explorer.message
    assert np.array_equal(explorer.snapshot(), before)
    explorer.controls["class_name"].value = "r"  # circle, square, triangle, star...
    assert "classes match 'r'" in explorer.message
    explorer.controls["layer"].value = "conv1"
    assert explorer.message == ""


@pytest.mark.parametrize("bad", ["text", "truncated", "empty", "huge"])
def test_bad_uploads_show_a_message_and_keep_working(explorer: ContributionExplorer, bad: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    png = _png(Image.new("RGB", (90, 70), (10, 200, 30)))
    content = {"text": b"not an image at all", "truncated": png[: len(png) // 2], "empty": b"",
               "huge": png}[bad]
    if bad == "huge":
        monkeypatch.setattr(images_module, "MAX_PIXELS", 1000)
    before = explorer.snapshot()
    _upload(explorer, content)
    assert explorer.message.startswith("Could not use this image")
    assert {"text": "not an image", "truncated": "truncated", "empty": "empty", "huge": "too large"}[bad] \
        in explorer.message
    assert np.array_equal(explorer.snapshot(), before)
    assert explorer.state.stats["decompositions"] == 1
    assert explorer.controls["upload"].value == ()
    explorer.controls["layer"].value = "conv2"  # still works; the error is cleared
    assert explorer.message == ""
    assert not np.array_equal(explorer.snapshot(), before)


@pytest.mark.parametrize("mode, note", [("RGBA", "alpha channel dropped"), ("L", "grayscale")])
def test_lossy_uploads_are_used_with_a_note(explorer: ContributionExplorer, mode: str, note: str) -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(0, 255, (70, 90, 4 if mode == "RGBA" else 1), dtype=np.uint8).squeeze()
    before = explorer.snapshot()
    _upload(explorer, _png(Image.fromarray(array, mode)), name=f"{mode}.png")
    assert note in explorer.message and explorer.message.startswith("Note:")
    assert explorer.state.stats["decompositions"] == 2
    assert "upload" in explorer.state.source
    assert not np.array_equal(explorer.snapshot(), before)
    explorer.controls["sign"].value = "diverging"  # the note stays while the image is shown
    assert note in explorer.message


def test_set_image_takes_what_the_picker_takes(explorer: ContributionExplorer, photo: np.ndarray,
                                               tmp_path) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    assert explorer.set_image(str(path)) and explorer.message == ""
    from_path = explorer.state.inputs.clone()
    assert explorer.set_image(Image.fromarray(photo)) and explorer.message == ""
    torch.testing.assert_close(explorer.state.inputs, from_path)
    assert explorer.set_image(_independent_input(photo)) and explorer.message == ""
    torch.testing.assert_close(explorer.state.inputs, from_path)
    assert explorer.set_image("shape:star")
    assert explorer.state.class_names[explorer.state.top[0]] in data.SHAPE_CLASSES
    explorer.controls["sample"].value = "shape:ring"
    assert explorer.state.source == "sample 'shape:ring'"
    assert not explorer.set_image(str(tmp_path / "missing.png"))
    assert "no file" in explorer.message
    explorer.controls["path"].value = str(path)
    explorer.controls["load"].click()
    assert explorer.message == "" and explorer.state.source == str(path)


def test_many_moves_reuse_the_cache(explorer: ContributionExplorer) -> None:
    rng = np.random.default_rng(0)
    c = explorer.controls
    choices = {"layer": list(c["layer"].options), "method": ["ours", "gradcam", "gradient", "side"],
               "sign": ["positive", "negative", "both", "diverging"], "threshold": [1, 30, 100],
               "opacity": [0.0, 0.5, 1.0], "target": explorer.state.top}
    keys = list(choices)
    for _ in range(150):
        key = keys[rng.integers(len(keys))]
        options = choices[key]
        c[key].value = options[rng.integers(len(options))]
        assert explorer.message == ""
    assert explorer.state.stats["decompositions"] == 1


def test_imagenet_model_names_and_probabilities(vgg11: nn.Module) -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    explorer = ContributionExplorer(vgg11, image, image_size=32)
    assert explorer.message == ""
    assert len(explorer.state.class_names) == 1000
    labels = [label for label, _ in explorer.controls["target"].options]
    assert all(": p = " in label for label in labels)
    probabilities = torch.softmax(vgg11(explorer.state.inputs).double(), 1)[0]
    top = probabilities.topk(5).indices.tolist()
    assert explorer.state.top == top
    explorer.controls["class_name"].value = "tabby"
    assert explorer.state.target == 281 and explorer.message == ""
    assert explorer.summary()["name"] == "tabby"
    assert explorer.controls["layer"].options == ("input", "conv1", "conv2", "conv3", "conv4", "conv5")


def test_resnet_layers(resnet18: nn.Module) -> None:
    rng = np.random.default_rng(3)
    explorer = ContributionExplorer(resnet18, rng.random((48, 48, 3)), image_size=32, method="side")
    assert explorer.controls["layer"].options == ("input", "stem", "layer1", "layer2", "layer3", "layer4")
    for layer in explorer.controls["layer"].options:
        explorer.controls["layer"].value = layer
        assert explorer.message == ""
        summary = explorer.summary()
        assert summary["contributions"] + summary["bias"] == pytest.approx(summary["score"], rel=1e-9)


def test_a_model_that_is_not_piecewise_affine_is_reported_inside() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    explorer = ContributionExplorer(model, np.zeros((20, 20, 3), np.uint8), preprocessing=SIDE_16)
    assert "GELU" in explorer.message
    assert explorer.snapshot().ndim == 3  # a placeholder picture, no traceback


def test_close_frees_the_explorer(mini: nn.Module, photo: np.ndarray) -> None:
    import gc
    import weakref

    explorer = ContributionExplorer(mini, photo)
    ref = weakref.ref(explorer)
    assert explorer.image.comm is not None
    explorer.close()
    assert explorer.image.comm is None and explorer.controls["layer"].comm is None
    assert explorer.state.explained == {} and explorer.state.inputs is None
    del explorer
    gc.collect()
    assert ref() is None  # nothing (no widget callback) keeps it alive


MOVES = [("layer", "conv2"), ("method", "gradcam"), ("sign", "both"), ("threshold", 30.0)]


def _moves_work(explorer: ContributionExplorer) -> None:
    """Every slider still changes the picture, with no message."""
    for key, value in MOVES:
        before = explorer.snapshot()
        explorer.controls[key].value = value
        assert explorer.message == "", (key, explorer.message)
        assert not np.array_equal(explorer.snapshot(), before), f"{key}={value} changed nothing"


BAD_IMAGES = {
    "bytes": lambda: b"\x89PNG but not really",
    "nan": lambda: torch.full((1, 3, 64, 64), float("nan")),
    "inf": lambda: torch.full((1, 3, 8, 8), float("inf")),
    "too small for the net": lambda: torch.zeros(1, 3, 8, 8),
    "batch": lambda: torch.zeros(2, 3, 64, 64),
    "four channels": lambda: torch.zeros(1, 4, 64, 64),
    "none": lambda: None,
    "empty path": lambda: "",
    "empty bytes": lambda: b"",
    "object": lambda: object(),
    "1-d": lambda: torch.zeros(5),
    "5-d": lambda: np.zeros((1, 1, 3, 4, 4), np.uint8),
    "uint8 batch": lambda: np.zeros((2, 8, 8, 3), np.uint8),
}


@pytest.mark.parametrize("bad", sorted(BAD_IMAGES))
def test_a_failed_set_image_keeps_the_previous_image_and_cache(explorer: ContributionExplorer, bad: str) -> None:
    s = explorer.state
    kept = {key: getattr(s, key) for key in ("inputs", "explained", "top", "target", "source", "probabilities")}
    before = explorer.snapshot()
    assert explorer.set_image(BAD_IMAGES[bad]()) is False  # never raises
    assert explorer.message.startswith("Could not use this image: ")
    for key, value in kept.items():
        assert getattr(s, key) is value, key
    assert np.array_equal(explorer.snapshot(), before)
    _moves_work(explorer)


def test_a_failure_while_showing_a_new_image_restores_the_previous_one(explorer: ContributionExplorer,
                                                                       photo: np.ndarray, monkeypatch) -> None:
    s = explorer.state
    kept = {key: getattr(s, key) for key in ("inputs", "explained", "top", "target", "source", "picture")}
    before = explorer.snapshot()
    render = explorer._render

    def failing_render() -> None:
        if s.source == "boom":
            raise RuntimeError("cannot draw this one")
        render()

    monkeypatch.setattr(explorer, "_render", failing_render)
    assert explorer.set_image(photo[::-1].copy(), name="boom") is False
    assert "cannot draw this one" in explorer.message
    for key, value in kept.items():
        assert getattr(s, key) is value, key
    assert [v for _, v in explorer.controls["target"].options] == s.top
    assert explorer.controls["target"].value == s.target
    assert np.array_equal(explorer.snapshot(), before)
    _moves_work(explorer)


def test_uint8_pixels_are_scaled_like_a_photo(explorer: ContributionExplorer, photo: np.ndarray) -> None:
    assert explorer.set_image(Image.fromarray(photo))
    reference = explorer.state.inputs.clone()
    chw = torch.from_numpy(photo).permute(2, 0, 1)
    for source in (chw[None], photo, chw, photo[None], torch.from_numpy(photo)):
        assert explorer.set_image(source) and explorer.message == "", explorer.message
        torch.testing.assert_close(explorer.state.inputs, reference, rtol=0, atol=0)
    assert float(reference.max()) <= 1.0  # the mini nets take raw pixels in [0, 1]


@pytest.mark.parametrize("cls", [-1, 10**6, "no such class", 2.5, None, True, float("nan"), "", [1], "-3"])
def test_bad_classes_show_a_message_and_keep_working(explorer: ContributionExplorer, cls) -> None:
    target, before = explorer.state.target, explorer.snapshot()
    assert explorer.select_class(cls) is False  # never raises
    assert explorer.message.startswith("Class: ")
    assert explorer.state.target == target and np.array_equal(explorer.snapshot(), before)
    _moves_work(explorer)
    assert explorer.select_class(np.int64(explorer.state.top[1])) and explorer.message == ""
    assert explorer.select_class(str(explorer.state.top[2])) and explorer.state.target == explorer.state.top[2]


def test_state_class_is_contribution_state(explorer: ContributionExplorer) -> None:
    from pwawidgets.widgets import contribution_explorer as CE

    assert isinstance(explorer.state, CE.ContributionState)
    assert not hasattr(CE, "ExplorerState")


def test_the_default_model_is_the_best_imagenet_net_available(mini: nn.Module, photo: np.ndarray,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import pwawidgets.models as models

    asked: list[str] = []

    def load_model(name: str, *args, **kwargs) -> nn.Module:
        asked.append(name)
        return mini

    monkeypatch.setattr(models, "best_available_imagenet", lambda: "efficientnet_lite0", raising=False)
    monkeypatch.setattr(models, "load_model", load_model)
    explorer = ContributionExplorer(image=photo)
    assert asked == ["efficientnet_lite0"]
    assert explorer.model is mini and explorer.message == ""
    assert ContributionExplorer(None, photo).model is mini


# ------------------------------------------------------------------------------------------- the bias view


def test_bias_view_one_extra_pass_then_slider_moves_read_the_cache(explorer: ContributionExplorer,
                                                                  mini: nn.Module) -> None:
    s = explorer.state
    assert s.stats["bias_passes"] == 0 and explorer.summary()["sources"] == []  # off by default: no extra pass
    explorer.controls["sources"].value = True
    assert explorer.message == "" and s.stats["bias_passes"] == 1
    x = s.inputs
    for layer in explorer.controls["layer"].options:
        for c in s.top[:3]:
            explorer.controls["layer"].value = layer
            explorer.controls["target"].value = c
            info = explorer.summary()
            expected = pw.bias_sources(mini, x, c, layer)
            shown = {name: value for name, _, value in info["sources"]}
            assert shown.keys() == set(expected)
            for name, value in expected.items():
                assert shown[name] == pytest.approx(float(value[0]), rel=1e-5, abs=1e-6), (layer, c, name)
            assert sum(shown.values()) == pytest.approx(info["bias"], rel=1e-5, abs=1e-5)
            assert [abs(v) for v in shown.values()] == sorted((abs(v) for v in shown.values()), reverse=True)
    assert s.stats["bias_passes"] == 1 and s.stats["decompositions"] == 1
    assert "where the bias at" in explorer.info.value and "background:#" in explorer.info.value


def test_bias_view_for_a_class_on_demand_and_a_new_image(explorer: ContributionExplorer, photo: np.ndarray) -> None:
    s = explorer.state
    explorer.show_bias_sources()
    other = next(c for c in range(6) if c not in s.top)
    explorer.select_class(other)
    assert s.stats["bias_passes"] == 2 and other in s.sources
    explorer.select_class(other)
    explorer.controls["layer"].value = "conv2"
    assert s.stats["bias_passes"] == 2
    explorer.set_image(photo[::-1].copy())
    assert s.stats["bias_passes"] == 3 and set(s.sources) == set(s.top)
    before = dict(s.sources)
    explorer.set_image(b"not an image")
    assert explorer.message and s.sources == before  # a failed image keeps the previous sources
    explorer.controls["sources"].value = False
    assert "where the bias at" not in explorer.info.value and s.stats["bias_passes"] == 3


# ------------------------------------------------------------------------------- the image beside its maps


@pytest.mark.parametrize("method, layer, units", [("ours", "conv2", "score units"),
                                                  ("gradcam", "conv3", "score units"),
                                                  ("gradient", "conv2", "score / unit of activation"),
                                                  ("gradient", "input", "score / pixel value")])
def test_colour_bars_carry_the_units_of_their_map(explorer: ContributionExplorer, method: str, layer: str,
                                                  units: str) -> None:
    c = explorer.controls
    c["layer"].value, c["method"].value, c["sign"].value = layer, method, "diverging"
    s = explorer.state
    values = resize_maps(s.explained[s.target].maps[(method, layer)], SIDE).float().numpy()
    vmax = viz.view_scale(viz.sign_view(values, "diverging"))
    expected = viz.colorbar(SIDE, "diverging", vmax, units=units)
    snapshot = explorer.snapshot()
    bar = snapshot[TITLE + SIDE:, SIDE + GAP:2 * SIDE + GAP]
    assert bar.shape == expected.shape and np.array_equal(bar, expected)
    other = "score units" if units != "score units" else "score / pixel value"
    assert not np.array_equal(bar, viz.colorbar(SIDE, "diverging", vmax, units=other))
    assert (snapshot[TITLE + SIDE:, :SIDE] == 255).all()  # the plain image has no colour bar


# ------------------------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize("key, attr", [("threshold", "keep"), ("opacity", "opacity")])
def test_a_nan_control_is_refused_and_the_explorer_keeps_working(explorer: ContributionExplorer, key: str,
                                                                 attr: str) -> None:
    kept, before = getattr(explorer.state, attr), explorer.snapshot()
    explorer.controls[key].value = float("nan")
    assert explorer.message.startswith("Setting: ") and "got nan" in explorer.message
    assert f"kept {kept:g}" in explorer.message
    assert getattr(explorer.state, attr) == kept and explorer.controls[key].value == kept  # the control is back
    assert np.array_equal(explorer.snapshot(), before)
    _moves_work(explorer)
    explorer.controls[key].value = {"keep": 10.0, "opacity": 0.3}[attr]
    assert explorer.message == "" and getattr(explorer.state, attr) == explorer.controls[key].value


BAD_ARGUMENTS = [
    (dict(keep=150), ValueError, "keep is a number from 1 to 100"),
    (dict(keep=0.5), ValueError, "keep is a number from 1 to 100"),
    (dict(keep=float("nan")), ValueError, "keep is a number from 1 to 100"),
    (dict(keep="50"), TypeError, "keep is a number"),
    (dict(opacity=5), ValueError, "opacity is a number from 0 to 1"),
    (dict(opacity=-0.1), ValueError, "opacity is a number from 0 to 1"),
    (dict(top_k=0), ValueError, "top_k is a whole number of classes"),
    (dict(top_k=2.5), TypeError, "top_k is a whole number"),
    (dict(top_k=True), TypeError, "top_k is a whole number"),
    (dict(method="bogus"), ValueError, "method is one of 'ours', 'gradcam', 'gradient', 'side'"),
    (dict(sign="bogus"), ValueError, "sign is one of 'positive', 'negative', 'both', 'diverging'"),
    (dict(image_size=0), ValueError, "image_size is a whole number of pixels from 1"),
    (dict(image_size=-3), ValueError, "image_size is a whole number of pixels from 1"),
    (dict(image_size=32.0), ValueError, "image_size is a whole number"),
    (dict(layer="conv9"), ValueError, "layer: unknown layer 'conv9'. Use 'input'"),
    (dict(class_names="abc"), TypeError, "class_names is a list of strings"),
    (dict(label=3), TypeError, "label is a string"),
]


@pytest.mark.parametrize("kwargs, error, text", BAD_ARGUMENTS, ids=[str(k) for k, _, _ in BAD_ARGUMENTS])
def test_bad_constructor_arguments_name_the_argument(mini: nn.Module, photo: np.ndarray, kwargs: dict,
                                                     error: type, text: str) -> None:
    with pytest.raises(error, match=re.escape(text)):
        ContributionExplorer(mini, photo, **kwargs)


def test_a_model_that_is_not_a_module_is_refused(photo: np.ndarray) -> None:
    with pytest.raises(TypeError, match="model is a torch nn.Module"):
        ContributionExplorer("mini_vgg", photo)


def test_unknown_shapes_and_samples_list_the_valid_ones(explorer: ContributionExplorer) -> None:
    s = explorer.state
    kept, before = s.inputs, explorer.snapshot()
    assert explorer.set_image("shape:hexagon") is False
    assert explorer.message.startswith("Could not use this image: unknown shape 'hexagon'")
    assert all(f"shape:{name}" in explorer.message for name in data.SHAPE_CLASSES)
    assert explorer.set_image("chelse") is False  # a misspelt sample: the samples are listed
    assert "no sample image or file named 'chelse'" in explorer.message and "chelsea" in explorer.message
    assert s.inputs is kept and np.array_equal(explorer.snapshot(), before)
    _moves_work(explorer)


def test_the_bias_view_survives_bad_inputs(explorer: ContributionExplorer) -> None:
    s = explorer.state
    assert explorer.show_bias_sources() and explorer.message == ""
    sources, passes, before = explorer.summary()["sources"], s.stats["bias_passes"], explorer.snapshot()
    assert sources
    explorer.controls["threshold"].value = float("nan")
    assert "got nan" in explorer.message
    assert explorer.set_image("shape:hexagon") is False and "shape:circle" in explorer.message
    assert explorer.show_bias_sources(float("nan")) is False
    assert explorer.message == "Bias sources: on is True or False, got nan"
    assert explorer.show_bias_sources("yes") is False and s.show_sources and explorer.controls["sources"].value
    assert explorer.summary()["sources"] == sources and s.stats["bias_passes"] == passes
    assert np.array_equal(explorer.snapshot(), before)
    assert "where the bias at" in explorer.info.value
    _moves_work(explorer)
    assert explorer.summary()["sources"] and s.stats["bias_passes"] == passes
    assert explorer.show_bias_sources(0) and not s.show_sources and explorer.message == ""


def test_summary_without_an_image_says_so() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    explorer = ContributionExplorer(model, np.zeros((20, 20, 3), np.uint8), preprocessing=SIDE_16)
    with pytest.raises(ValueError, match="no image is explained yet"):
        explorer.summary()


def test_calls_after_close_say_the_explorer_was_closed(explorer: ContributionExplorer) -> None:
    explorer.close()
    assert explorer.select_class(1) is False and "explorer was closed" in explorer.message
    assert explorer.set_image("shape:star") is False and "explorer was closed" in explorer.message
    assert explorer.state.inputs is None and explorer.state.stats["decompositions"] == 1  # nothing recomputed


# ------------------------------------------------------------------ your own 32 x 32, 10-class model


def _cifar(head: str = "linear", negative_head: bool = False) -> nn.Module:
    """A CIFAR-style net (32 x 32 RGB in, 10 classes out), float64; no preset blocks, no declared size."""
    torch.manual_seed(5)
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    if head == "linear":
        model = nn.Sequential(features, nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    else:  # size-agnostic, and its last layer is no Linear: the class count is known only after a pass
        model = nn.Sequential(features, nn.Conv2d(16, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if negative_head:  # h >= 0 at '0.4' and every dS/dh <= 0: no positive contribution there
        with torch.no_grad():
            for conv in (features[0], features[3]):
                conv.weight.abs_()
                conv.bias.abs_()
            model[2].weight.copy_(-model[2].weight.abs())
    return model.double().eval()


@pytest.fixture(scope="module")
def cifar() -> nn.Module:
    return _cifar()


def _pixels(side: int = 32) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_any_module_name_and_a_layers_list(cifar: nn.Module) -> None:
    explorer = ContributionExplorer(cifar, _pixels(), image_size=32, layer="0.4")
    assert explorer.controls["layer"].options == ("input", "0.4") and explorer.state.layer == "0.4"
    x = pw.load_image(_pixels(), size=32, crop=32).double()  # ImageNet statistics: the model declares none
    target = int(cifar(x).argmax())
    independent = pw.decompose(cifar, x, target, ["0.4"]).pixel_map("0.4")[0]
    torch.testing.assert_close(explorer.state.explained[target].maps[("ours", "0.4")], independent,
                               rtol=1e-12, atol=1e-12)
    explorer = ContributionExplorer(cifar, _pixels(), image_size=32, layers=["input", "0.1", "0.4"])
    assert explorer.controls["layer"].options == ("input", "0.1", "0.4") and explorer.state.layer == "0.4"
    assert explorer.message == ""
    cifar.block_layers = {"b1": "0.1", "b2": "0.4"}  # declared blocks: their names work everywhere
    try:
        explorer = ContributionExplorer(cifar, _pixels(), image_size=32, layer="b2")
        assert explorer.controls["layer"].options == ("input", "b1", "b2")
    finally:
        del cifar.block_layers


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(layer="b2"), ValueError, "layer: unknown layer 'b2'. Use 'input', 'all' (every ReLU output), (no "
                                   "'blocks' preset: declare one with model.block_layers"),
    (dict(layers=["blocks"]), ValueError, "layers: no 'blocks' preset is known for this model"),
    (dict(layers="0.4"), TypeError, "layers is a list of layer names for the slider"),
    (dict(layers=["input", "all"]), ValueError, "layers: 'all' (every ReLU output) is too many for a slider"),
    (dict(layers=["0.1"], layer="0.4"), ValueError, "layer '0.4' is not one of layers ['0.1']"),
    (dict(class_names=[f"c{i}" for i in range(5)]), ValueError,
     "class_names has 5 names, but the model's last layer has 10 outputs: give one name per class"),
    (dict(image_size=(32, 48)), ValueError, "image_size is (32, 48): the explorer takes square images"),
])
def test_bad_layer_class_and_size_arguments_name_the_argument(cifar: nn.Module, kwargs, error, message) -> None:
    with pytest.raises(error) as info:
        ContributionExplorer(cifar, _pixels(), **{"image_size": 32, **kwargs})
    assert message in str(info.value)


def test_a_layer_without_a_map_is_reported_inside(cifar: nn.Module) -> None:
    explorer = ContributionExplorer(cifar, _pixels(), image_size=32, layers=["input", "2"])
    assert explorer.message == ("Could not use this image: layer '2' gives a (1, 10) tensor, no map to show: give "
                                "convolutional layers (layer=, layers=)")


def test_a_non_square_or_square_input_size_on_the_model(cifar: nn.Module) -> None:
    cifar.input_size = (32, 48)
    try:
        with pytest.raises(ValueError, match=r"model.input_size is \(32, 48\): the explorer takes square images"):
            ContributionExplorer(cifar, _pixels())
        cifar.input_size = (32, 32)
        explorer = ContributionExplorer(cifar, _pixels(48))
        assert explorer.state.preprocess.preprocessing.crop == 32 and explorer.state.inputs.shape[-2:] == (32, 32)
    finally:
        del cifar.input_size


def test_class_names_that_do_not_match_the_classes_are_reported_inside() -> None:
    model = _cifar(head="conv")
    explorer = ContributionExplorer(model, _pixels(), image_size=32, class_names=[f"c{i}" for i in range(5)])
    assert explorer.message == ("Could not use this image: class_names has 5 names for the model's 10 classes: give "
                                "one name per class, ContributionExplorer(model, image, class_names=[...])")
    assert explorer.state.inputs is None
    names = [f"c{i}" for i in range(10)]
    explorer = ContributionExplorer(model, _pixels(), image_size=32, class_names=names)
    assert explorer.message == "" and explorer.summary()["name"] == names[explorer.state.target]


def test_sample_photos_only_for_imagenet_size_rgb_input(cifar: nn.Module) -> None:
    explorer = ContributionExplorer(cifar, image_size=32)  # no image: a prompt, no photo that cannot fit
    sample = explorer.controls["sample"]
    assert sample.disabled and [v for _, v in sample.options] == [""]
    assert explorer.message == ("Upload an image or call explorer.set_image(array): no sample photo here (the model "
                                "takes 32 x 32 images, not ImageNet-size photos).")
    assert explorer.set_image("chelsea") is False
    assert explorer.message == ("Could not use this image: no sample image or file named 'chelsea': no sample photo "
                                "here (the model takes 32 x 32 images, not ImageNet-size photos); or give the path to "
                                "an image file")
    assert explorer.state.inputs is None and explorer.set_image(_pixels()) and explorer.message == ""
    explorer = ContributionExplorer(cifar)  # nothing says its size
    assert "give image_size=<side>, e.g. image_size=32" in explorer.message
    size_agnostic = _cifar(head="conv")
    explorer = ContributionExplorer(size_agnostic, image_size=224)
    assert "chelsea" in [v for _, v in explorer.controls["sample"].options] and explorer.state.source == \
        "sample 'chelsea'"


def test_a_size_the_model_cannot_take_points_to_image_size(cifar: nn.Module) -> None:
    explorer = ContributionExplorer(cifar, _pixels())  # 224 x 224 assumed
    assert explorer.message.startswith("Could not use this image: the model cannot take this 224 x 224 input (")
    assert "give image_size=<side>, e.g. ContributionExplorer(model, image, image_size=32)" in explorer.message
    assert "Traceback" not in explorer.message


def test_an_empty_map_for_the_chosen_sign_says_so() -> None:
    model = _cifar(negative_head=True)
    explorer = ContributionExplorer(model, _pixels(), image_size=32, layer="0.4", sign="positive", opacity=1.0)
    ex = explorer.state.explained[explorer.state.target]
    assert float(ex.maps[("ours", "0.4")].max()) <= 0 < float(-ex.maps[("ours", "0.4")].min())
    assert "contributions (ours) has no positive part at 0.4: every value is ≤ 0; pick another sign" in \
        explorer.info.value
    snapshot = explorer.snapshot()
    assert np.array_equal(_panel(snapshot, 1), _panel(snapshot, 0))  # the plain image: no overlay, no 0-1 bar
    assert snapshot.shape[0] == TITLE + SIDE
    explorer.controls["sign"].value = "negative"
    assert "no negative part" not in explorer.info.value and "no positive part" not in explorer.info.value
    assert (_panel(explorer.snapshot(), 1) != _panel(explorer.snapshot(), 0)).any(axis=-1).mean() > 0.2
