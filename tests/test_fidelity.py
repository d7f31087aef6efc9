"""The batched fidelity experiment: a hand-built case with known answers, keep = 1, cross-checks, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pwawidgets as pw
from pwawidgets import fidelity as fd
from pwawidgets import metrics


def linear_model() -> nn.Module:
    """Four classes on a 1 x 1 x 4 "image" x = [1, 2, 3, 4]: logits = W x + b = [4, 3.2, 2.8, 0.8]."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4)).double().eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0.9, 0], [0.5, 0, 0, 0]]))
        model[1].bias.copy_(torch.tensor([0, 0.2, 0.1, 0.3]))
    model.preprocessing = pw.Preprocessing(4, None, (0.5,), (0.25,))  # black is (0 - 0.5) / 0.25 = -2
    return model


X = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 1, 1, 4)


def test_a_hand_built_case_with_known_answers():
    # class 0 is predicted, top-2 = {0, 1}. Maps for class 0: ours w*x = [0, 0, 0, 4], gradient w = [0, 0, 0, 1],
    # Grad-CAM mean(w) * x = [.25, .5, .75, 1]. Ties of ours/gradient go in raster order: pixel 3, then 0, 1, 2.
    result = fd.evaluate(linear_model(), [X], ("ours", "gradcam", "gradient"), ["input"], (0.25, 0.5, 0.75), k=2,
                         progress=False)
    topk = {m: [result.values(m, "input", "topk", f).item() for f in (0.25, 0.5, 0.75)] for m in result.methods}
    # keep 1 pixel: [0, 0, 0, 4] -> logits [4, .2, .1, .3] -> {0, 3}
    # ours keeps 2: [1, 0, 0, 4] -> [4, 1.2, .1, .8] -> {0, 1};  Grad-CAM keeps 2: [0, 0, 3, 4] -> {0, 2}
    # ours keeps 3: [1, 2, 0, 4] -> {0, 1};  Grad-CAM keeps 3: [0, 2, 3, 4] -> [4, 2.2, 2.8, .3] -> {0, 2}
    assert topk == {"ours": [0.5, 1.0, 1.0], "gradcam": [0.5, 0.5, 0.5], "gradient": [0.5, 1.0, 1.0]}
    assert result.values("ours", "input", "top1", 0.25).item() == 1.0
    assert result.values("ours", "input", "retained", 0.5).item() == 1.0  # 4 / 4
    assert result.predicted.tolist() == [0]

    black = fd.evaluate(linear_model(), [X], ("ours",), ["input"], (0.5,), k=2, fill="black", progress=False)
    # [1, -2, -2, 4] -> logits [4, -0.8, -1.7, 0.8] -> {0, 3}
    assert black.values("ours", "input", "topk", 0.5).item() == 0.5

    curves = fd.evaluate(linear_model(), [X], ("ours",), ["input"], (), k=2, curves=(0.0, 0.25, 1.0), progress=False)
    assert curves.fractions("delete") == [0.0, 0.25, 1.0] and curves.fractions("keep") == [0.0, 0.25, 1.0]
    # deleting pixel 3: [1, 2, 3, 0] -> logits [0, 3.2, 2.8, .8] -> {1, 2}: class 1 is still there, class 0 is not
    assert curves.values("ours", "input", "topk", 0.25, "delete").item() == 0.5
    assert curves.values("ours", "input", "top1", 0.25, "delete").item() == 0.0
    assert curves.values("ours", "input", "topk", 0.0, "delete").item() == 1.0
    blank = torch.tensor([0.0, 0.2, 0.1, 0.3], dtype=torch.float64)  # everything filled: the bias alone
    assert curves.values("ours", "input", "prob", 0.0, "keep").item() == pytest.approx(blank.softmax(0)[0].item())
    fractions, values = curves.curve("ours", "input", "prob", "delete")
    assert values.shape == (1, 3)
    assert curves.area("ours", "input", "prob", "delete").item() == pytest.approx(
        metrics.curve_area(fractions, values).item())
    # layers=None means the input, as everywhere
    default = fd.evaluate(linear_model(), [X], ("ours",), None, (0.25, 0.5, 0.75), k=2, progress=False)
    assert default.layers == ["input"] and default.scores == {
        key: v for key, v in result.scores.items() if key[0] == "ours"}


def test_result_prints_a_summary_not_its_tensors():
    result = fd.evaluate(linear_model(), [X, X], ("ours", "gradient"), ["input"], (0.3, 0.5), k=2, progress=False)
    text = repr(result)
    assert "tensor(" not in text and len(text.splitlines()) <= 8
    assert text.startswith("FidelityResult of 2 image(s): methods ['ours', 'gradient'], layers ['input']")
    mean = float(result.values("ours", "input").mean())
    assert f"top-2 kept at 0.3, ours: input {mean:.3f}" in text


@pytest.fixture(scope="module")
def shapes():
    return pw.data.shapes(10, seed=11)


def test_keeping_everything_keeps_the_top5_for_every_method(shapes):
    model = pw.load_model("mini_vgg")
    methods = ("ours", "gradcam", "gradcam_relu", "gradient", "random", "hirescam")
    result = fd.evaluate(model, fd.batches(shapes.images, 4), methods, ["conv2", "conv4"], (0.3, 1.0),
                         curves=(0.0, 0.5), progress=False)
    assert result.methods == list(methods) and result.layers == ["conv2", "conv4"]
    for method in methods:
        for layer in result.layers:
            assert result.values(method, layer, "topk", 1.0).tolist() == [1.0] * 10
            assert result.values(method, layer, "top1", 1.0).tolist() == [1.0] * 10
            assert result.values(method, layer, "topk", 0.0, "delete").tolist() == [1.0] * 10
    # six classes: two top-5 sets always share at least 4 classes, so the score cannot fall below 0.8
    assert all(bool((v["topk"] >= 0.8).all()) for v in result.scores.values())
    assert any(bool((v["topk"] < 1).any()) for v in result.scores.values())


def test_matches_the_one_call_metric(shapes):
    model = pw.load_model("mini_vgg_bn")
    x = shapes.images
    dec = pw.decompose(model, x, None, ["conv3"])
    for fill, sign in (("zero", "signed"), ("black", "abs")):
        result = fd.evaluate(model, fd.batches(x, 3), ("ours",), ["conv3"], (0.1, 0.3), k=3, fill=fill, sign=sign,
                             progress=False)
        maps = dec.pixel_map("conv3").abs() if sign == "abs" else dec.pixel_map("conv3")
        for f in (0.1, 0.3):
            expected = metrics.fidelity(model, x, maps, f, k=3, fill=fill)  # the same fill choices
            assert torch.equal(result.values("ours", "conv3", "topk", f), expected)


def test_batching_and_seed_do_not_change_the_answer(shapes):
    model = pw.load_model("mini_vgg")
    x, masks = shapes.images[:6], shapes.masks[:6]
    one = fd.evaluate(model, fd.batches(x, 1, masks), ("ours", "random"), ["conv3"], (0.2, 0.5), seed=5,
                      progress=False)
    many = fd.evaluate(model, fd.batches(x, 4, masks), ("ours", "random"), ["conv3"], (0.2, 0.5), seed=5,
                       progress=False)
    for key, scores in one.scores.items():
        assert torch.equal(scores["topk"], many.scores[key]["topk"]), key
        assert torch.allclose(scores["prob"], many.scores[key]["prob"], rtol=1e-5, atol=1e-7), key
    assert one.table() == many.table()
    assert fd.random_map((4, 4), 5, 3, "conv3").equal(fd.random_map((4, 4), 5, 3, "conv3"))
    assert not fd.random_map((4, 4), 6, 3, "conv3").equal(fd.random_map((4, 4), 5, 3, "conv3"))
    dec = pw.decompose(model, x, None, ["conv3"])
    assert torch.equal(one.localisation[("ours", "conv3")]["pointing"],
                       metrics.pointing_game(dec.pixel_map("conv3"), masks).double())


def test_layers_fill_and_errors():
    assert fd.paper_layer(pw.load_model("mini_vgg"), 64) == "conv4"
    assert fd.paper_layer(pw.load_model("mini_resnet"), 64) == "layer3"
    lite = pw.load_model("efficientnet_lite0")
    assert fd.layer_grids(lite, 224)["stage3"] == (28, 28)
    assert fd.paper_layer(lite, 224) == "stage3"
    black = metrics.fill_value("black", lite.preprocessing.normalization)
    assert torch.allclose(black, torch.full((3,), -127 / 128, dtype=torch.float64))
    assert metrics.fill_value("zero").item() == 0.0
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 4)).eval()
    with pytest.raises(ValueError, match="normalisation"):
        metrics.fill_value("black")
    with pytest.raises(ValueError, match="normalisation"):
        fd.evaluate(plain, torch.zeros(1, 1, 2, 2), ("ours",), ["input"], fill="black", progress=False)
    with pytest.raises(ValueError, match="no preset blocks"):
        fd.paper_layer(plain)
    model = linear_model()
    with pytest.raises(ValueError, match="unknown method"):
        fd.evaluate(model, [X], ("ours", "lime"), ["input"], progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fd.evaluate(model, [X], ("ours",), ["input"], (1.3,), progress=False)
    with pytest.raises(ValueError, match="sign"):
        fd.evaluate(model, [X], ("ours",), ["input"], sign="positive", progress=False)
    with pytest.raises(ValueError, match="no images"):
        fd.evaluate(model, [], ("ours",), ["input"], progress=False)


def test_cam_variants_that_need_a_feature_layer_are_skipped_at_the_input(shapes):
    result = fd.evaluate(pw.load_model("mini_vgg"), [shapes.images[:2]], ("ours", "hirescam"), ["input", "conv4"],
                         progress=False)
    assert result.notes == ["hirescam skipped at 'input': it needs a feature layer"]
    assert ("hirescam", "conv4", "keep", 0.3) in result.scores
    assert ("hirescam", "input", "keep", 0.3) not in result.scores
    assert [(r["method"], r["layer"]) for r in result.table()] == [("ours", "input"), ("ours", "conv4"),
                                                                   ("hirescam", "conv4")]
