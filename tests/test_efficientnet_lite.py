"""EfficientNet-Lite0: the checkpoint loads key for key, TF-same padding, ImageNet predictions, exactness."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from captum.attr import InputXGradient, LayerGradientXActivation
from torch import nn

import pwawidgets as pw
from pwawidgets import data, efficientnet_lite
from pwawidgets.efficientnet_lite import Conv2dSame, EfficientNetLite, same_padding

EXPECTED_BLOCKS = {
    "stem": "_act0", "stage1": "_blocks.0", "stage2": "_blocks.2", "stage3": "_blocks.4", "stage4": "_blocks.7",
    "stage5": "_blocks.10", "stage6": "_blocks.14", "stage7": "_blocks.15", "head": "_act1",
}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return pw.load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def model64(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()


@pytest.fixture(scope="module")
def odd_input(model: nn.Module) -> torch.Tensor:
    """A real photo at an odd size in both dimensions (97 x 145): every stride-2 layer pads unevenly."""
    x = pw.load_image(data.sample_photo("chelsea"), size=97, crop=None, model=model)
    assert x.shape[-2] % 2 == 1 and x.shape[-1] % 2 == 1
    return x.double()


def test_every_checkpoint_key_is_used_with_its_shape(model: nn.Module) -> None:
    state = torch.load(efficientnet_lite.weights_path(), map_location="cpu", weights_only=True)
    ours = EfficientNetLite().state_dict()
    assert len(state) == 296 and state.keys() == ours.keys()
    for key, value in state.items():
        assert ours[key].shape == value.shape, key
        assert torch.equal(model.state_dict()[key], value), key
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 4_652_008  # 4.65 M, as published
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_attributes_and_presets(model: nn.Module) -> None:
    assert model.model_name == "efficientnet_lite0" and model.pretrained is True and not model.training
    assert model.class_names == pw.imagenet_categories() and len(model.class_names) == 1000
    assert model.preprocessing.normalization == ((127 / 255,) * 3, (128 / 255,) * 3)
    assert (model.preprocessing.size, model.preprocessing.crop) == (256, 224)
    assert pw.layer_presets(model) == {"blocks": EXPECTED_BLOCKS}
    assert efficientnet_lite.IMAGENET_TOP1 == 75.1


def test_every_module_runs_once_and_relu6_are_modules(model: nn.Module) -> None:
    calls: dict[str, int] = {}
    handles = [m.register_forward_hook(lambda mod, a, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
               for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 33, 40))
    finally:
        for h in handles:
            h.remove()
    named = {n for n, _ in model.named_modules() if n}
    assert set(calls) == named and set(calls.values()) == {1}
    relu6 = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU6)]
    assert len(relu6) == 1 + 15 + 16 + 1  # stem, 15 expansions, 16 depthwise, head
    assert not any(isinstance(m, (nn.SiLU, nn.Sigmoid, nn.Hardswish)) for m in model.modules())


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 2, 3, 5, 7])
def test_same_padding_is_tensorflows_formula(kernel: int, stride: int) -> None:
    for dilation in (1, 2):
        k_eff = (kernel - 1) * dilation + 1
        if k_eff < stride:
            with pytest.raises(ValueError, match="smaller than stride"):
                same_padding(10, kernel, stride, dilation)
            continue
        for n in range(1, 40):
            total = max((math.ceil(n / stride) - 1) * stride + k_eff - n, 0)
            assert same_padding(n, kernel, stride, dilation) == (total // 2, total - total // 2)


@pytest.mark.parametrize(("height", "width"), [(16, 16), (17, 17), (16, 23), (31, 10)])
def test_stride2_convs_pad_like_tensorflow(model: nn.Module, height: int, width: int) -> None:
    """The stem (3x3) and stage 3's first depthwise conv (5x5), both stride 2, against hand-computed F.pad."""
    gen = torch.Generator().manual_seed(height * 100 + width)
    for name, pads in [("_conv_stem", {0: (0, 1), 1: (1, 1)}), ("_blocks.3._depthwise_conv", {0: (1, 2), 1: (2, 2)})]:
        conv = dict(model.named_modules())[name]
        assert isinstance(conv, Conv2dSame) and conv.stride == (2, 2)
        x = torch.randn(1, conv.in_channels, height, width, generator=gen)
        top, bottom = pads[height % 2]  # TF SAME: the extra row of padding goes after
        left, right = pads[width % 2]
        expected = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, None, 2, 0, 1, conv.groups)
        with torch.no_grad():
            out = conv(x)
        assert out.shape[-2:] == (math.ceil(height / 2), math.ceil(width / 2))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_stride1_convs_pad_symmetrically_and_keep_size() -> None:
    conv = Conv2dSame(4, 4, 5, groups=4)
    assert conv.padding == (2, 2)
    even = Conv2dSame(2, 3, 2)  # even kernel: the extra padding goes after, via F.pad
    x = torch.randn(1, 2, 7, 6)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), even.weight)
    torch.testing.assert_close(even(x), expected, rtol=0, atol=1e-6)


def test_fx_traceable_and_audited(model: nn.Module) -> None:
    traced = torch.fx.symbolic_trace(model)
    for shape in [(1, 3, 64, 64), (2, 3, 65, 77)]:  # the padding is recomputed from each input's shape
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[-1]))
        with torch.no_grad():
            torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
    report = pw.audit(model)
    assert report.ok, str(report)


def _top(model: nn.Module, name: str, k: int = 3) -> list[tuple[str, float]]:
    x = pw.load_image(data.sample_photo(name), model=model)
    with torch.no_grad():
        p = model(x).softmax(1)[0]
    values, idx = p.topk(k)
    return [(model.class_names[i], v) for v, i in zip(values.tolist(), idx.tolist(), strict=True)]


def test_imagenet_predictions_at_224(model: nn.Module) -> None:
    assert {c for c, _ in _top(model, "chelsea")} == {"Egyptian cat", "tiger cat", "tabby"}
    (cls, p), *_ = _top(model, "coffee")
    assert cls == "espresso" and p > 0.9
    assert _top(model, "rocket")[0][0] == "missile"


@pytest.mark.parametrize("name", list(data.PHOTOS))
def test_recorded_predictions_of_every_photo(model: nn.Module, name: str) -> None:
    """The predictions written in data.PHOTOS are what the model says (and samples are read sensibly)."""
    (cls, p), *_ = _top(model, name, 1)
    recorded = data.PHOTOS[name].lite0
    assert cls == recorded[0] and p == pytest.approx(recorded[1], abs=0.01)
    assert (name in data.SAMPLE_PHOTOS) == (cls in data.PHOTOS[name].imagenet)


def test_float64_contributions_match_captum(model64: nn.Module, odd_input: torch.Tensor) -> None:
    """Input x gradient at the input and at every preset, against Captum's own hooks and gradients."""
    dec = pw.decompose(model64, odd_input, None, ["input", "blocks"])
    assert dec.layers == ["input", *EXPECTED_BLOCKS]
    target = int(dec.target)
    assert model64.class_names[target] in ("tiger cat", "Egyptian cat", "tabby")
    modules = dict(model64.named_modules())
    expected = {"input": InputXGradient(model64).attribute(odd_input.clone().requires_grad_(), target=target)}
    for alias, module in EXPECTED_BLOCKS.items():
        expected[alias] = LayerGradientXActivation(model64, modules[module]).attribute(odd_input, target=target)
    for name, reference in expected.items():
        got = dec.contributions[name]
        assert got.dtype == torch.float64 and got.shape == reference.shape, name
        torch.testing.assert_close(got, reference, rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.parametrize("layer", ["input", "stem", "stage2", "stage5", "head"])
def test_verify_float64(model: nn.Module, odd_input: torch.Tensor, layer: str) -> None:
    report = pw.verify(model, odd_input, layer=layer)
    assert report.ok, str(report)
    assert report.dtype == torch.float64 and bool((report.radius > 0).all())


def test_random_init_is_not_the_checkpoint(model: nn.Module) -> None:
    torch.manual_seed(0)
    fresh = pw.load_model("efficientnet_lite0", pretrained=False)
    assert fresh.pretrained is False and not fresh.training
    assert not torch.equal(fresh._fc.weight, model._fc.weight)
    with torch.no_grad():
        assert torch.isfinite(fresh(torch.randn(1, 3, 40, 40))).all()
