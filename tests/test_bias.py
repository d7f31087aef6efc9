"""Where the bias comes from: the parts sum to decompose's bias, each part is right, nothing is hidden."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import no_inplace
from torch import nn

import pwawidgets as pw
from pwawidgets import bias as B
from pwawidgets import kinds
from pwawidgets.bias import REMAINDER, bias_sources, bias_sources_at
from pwawidgets.robustness import bias_curve

REL = 1e-10


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.6 - 0.3)
    return model


def vgg_bn_like() -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
              nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
              nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(32, 32),
              nn.ReLU(inplace=True), nn.Linear(32, 5)]
    return _randomise_bn(nn.Sequential(*layers), 1).double().eval()


def relu6_net() -> nn.Module:
    """ReLU6 and Hardtanh with many saturated units, BatchNorm, a residual add."""
    torch.manual_seed(3)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.act = nn.ReLU6(inplace=True)

        def forward(self, x):
            return self.act(self.bn(self.conv(x))) + x

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), Block(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.Hardtanh(-1.0, 2.0), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(32, 16), nn.Hardtanh(0.0, 0.5), nn.Linear(16, 4))
    _randomise_bn(model, 4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(6.0)  # drive many units past 6 (and past the Hardtanh caps)
    return model.double().eval()


@pytest.fixture
def x8() -> torch.Tensor:
    return torch.randn(3, 3, 8 * 2, 8 * 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _check_sum(model, x, target, layer, **kwargs) -> B.BiasSources:
    sources = bias_sources(model, x, target, layer, **kwargs)
    expected = pw.decompose(model, x, target, [layer], **kwargs).bias[layer]
    attributed = torch.stack([v for k, v in sources.items() if k != REMAINDER]).sum(0)
    scale = expected.abs() + sources.score.abs()
    assert ((attributed - expected).abs() <= REL * scale).all(), (layer, attributed - expected)
    assert ((sources.total() - expected).abs() <= 1e-12 * scale).all()
    assert list(sources)[-1] == REMAINDER
    assert not any(v.requires_grad for v in (*sources.values(), *sources.maps.values(), sources.bias))
    return sources


@pytest.mark.parametrize("layer", ["input", "1", "2", "6", "10", "13"])
def test_vgg_bn_like_parts_sum_to_the_bias(layer, x8):
    _check_sum(vgg_bn_like(), x8, None, layer)


def test_resnet_like_parts_sum_to_the_bias_with_the_shortcut_as_a_part(resnet18):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for layer in ["input", "layer1.0.relu@0", "layer2.0.bn1", "layer3", "layer4.1.relu@1"]:
        sources = _check_sum(resnet18, x, "top2", layer)
    inside = _check_sum(resnet18, x, None, "layer1.0.relu@0")
    assert inside.kinds["layer1.0 (shortcut)"] == B.SHORTCUT  # the block's input reaches the add around the layer
    assert inside["layer1.0 (shortcut)"].abs().min() > 0
    assert "layer1.0.bn1" not in inside and "layer1.0.bn2" in inside  # only constants after the layer
    assert sources.per_class and sources.parts["fc"].shape == (2, 2)


def test_several_layers_from_one_pass_equal_one_layer_each(resnet18):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    layers = ["input", "layer1.0.relu@0", "layer1.0.bn2", "layer2", "layer4.1.relu@1"]
    together = bias_sources_at(resnet18, x, "top2", layers, maps=True)
    assert list(together) == layers
    for layer in layers:
        alone = bias_sources(resnet18, x, "top2", layer, maps=True)
        assert list(together[layer]) == list(alone) and together[layer].kinds == alone.kinds
        for name in alone:
            torch.testing.assert_close(together[layer][name], alone[name], rtol=1e-12, atol=1e-12)
        assert together[layer].maps.keys() == alone.maps.keys()
    blocks = bias_sources_at(vgg_bn_like(), x[:, :, :16, :16], None, ["input", "2", "6"])
    assert set(blocks["input"]) > set(blocks["2"]) > set(blocks["6"])  # fewer constants after deeper layers


def test_bottleneck_in_place_add_and_downsample():
    torch.manual_seed(7)
    down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                          torchvision.models.resnet.Bottleneck(16, 4),
                          torchvision.models.resnet.Bottleneck(16, 8, stride=2, downsample=down),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 6))
    model = _randomise_bn(model, 8).double().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for layer in ["input", "3.relu@0", "3.relu@2", "4.downsample.1", "4"]:
        _check_sum(model, x, None, layer)
    inside = _check_sum(model, x, None, "4.bn2")
    assert "4 (shortcut)" in inside and "4.downsample.1" not in inside


def test_relu6_caps_on_saturated_units(x8):
    model = relu6_net()
    x = x8 * 3
    acts = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: acts.__setitem__(n, out.detach().clone()))
             for n, m in model.named_modules() if isinstance(m, (nn.ReLU6, nn.Hardtanh))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert all(int((a >= 6).sum()) > 10 for n, a in acts.items() if n in ("2", "3.act"))  # many saturated units
    assert int((acts["6"] <= -1).sum()) > 10 and int((acts["6"] >= 2).sum()) > 10
    for layer in ["input", "0", "2", "3.act", "3", "6", "10"]:
        _check_sum(model, x, None, layer)
    sources = bias_sources(model, x, None, "input")
    for name in ("2", "3.act", "6", "10"):
        assert sources.kinds[name] == B.CAP and sources[name].abs().max() > 0
    inside = bias_sources(model, x, None, "3.conv")
    assert inside.kinds["3 (shortcut)"] == B.SHORTCUT and "3.bn" in inside and "3.conv" not in inside


def _jacobian_part(model_layers, m: int, x: torch.Tensor, target: torch.Tensor, constant) -> torch.Tensor:
    """<dS/d out_m, c_m> with dS/d out_m from torch.func.jacrev of the layers after m (an independent route)."""
    head, tail = nn.Sequential(*model_layers[: m + 1]), nn.Sequential(*model_layers[m + 1:])
    out = []
    with torch.no_grad():
        outs = head(x)
    for i in range(x.shape[0]):
        grad = torch.func.jacrev(lambda z, i=i: tail(z.unsqueeze(0))[0, target[i]])(outs[i])
        out.append((grad * constant(outs[i])).sum())
    return torch.stack(out)


def test_each_part_against_jacrev_of_the_network_after_it(x8):
    model = no_inplace(relu6_net())
    layers = list(model.children())
    x = x8 * 3
    target = pw.decompose(model, x).target
    sources = bias_sources(model, x, target, "0")
    bn = layers[1]
    shift = (bn.bias - bn.weight * bn.running_mean / (bn.running_var + bn.eps).sqrt()).detach().view(-1, 1, 1)
    expected = {
        "1": _jacobian_part(layers, 1, x, target, lambda o: shift.expand_as(o)),
        "2": _jacobian_part(layers, 2, x, target, lambda o: 6.0 * (o >= 6)),
        "5": _jacobian_part(layers, 5, x, target, lambda o: layers[5].bias.detach().view(-1, 1, 1).expand_as(o)),
        "6": _jacobian_part(layers, 6, x, target, lambda o: -1.0 * (o <= -1) + 2.0 * (o >= 2)),
        "9": _jacobian_part(layers, 9, x, target, lambda o: layers[9].bias.detach()),
        "10": _jacobian_part(layers, 10, x, target, lambda o: 0.5 * (o >= 0.5)),
        "11": _jacobian_part(layers, 11, x, target, lambda o: layers[11].bias.detach()),
    }
    for name, value in expected.items():
        torch.testing.assert_close(sources[name], value, rtol=1e-10, atol=1e-12, msg=name)


def test_maps_sum_to_the_parts_and_have_the_layer_grid(x8):
    sources = bias_sources(vgg_bn_like(), x8, "top2", "input", maps=True)
    assert set(sources.maps) == {"0", "1", "4", "5"}
    for name, grid in sources.maps.items():
        torch.testing.assert_close(grid.sum((-2, -1)), sources[name], rtol=1e-12, atol=1e-12)
    assert sources.maps["0"].shape == (3, 2, 16, 16) and sources.maps["5"].shape == (3, 2, 8, 8)


@pytest.mark.parametrize("target", [None, 2, [0, 1, 4], "top3"])
def test_targets_as_decompose_and_k_classes_equal_single_calls(target, x8):
    model = vgg_bn_like()
    sources = bias_sources(model, x8, target, "6")
    dec = pw.decompose(model, x8, target, ["6"])
    assert torch.equal(sources.target, dec.target) and sources.per_class == dec.per_class
    for value in sources.values():
        assert value.shape == dec.score.shape
    if sources.per_class:
        for j in range(dec.target.shape[1]):
            single = bias_sources(model, x8, dec.target[:, j], "6")
            for name in single:
                torch.testing.assert_close(sources[name][:, j], single[name], rtol=1e-12, atol=1e-12)


def test_batch_equals_one_by_one(x8):
    model = vgg_bn_like()
    batch = bias_sources(model, x8, None, "2")
    for i in range(x8.shape[0]):
        one = bias_sources(model, x8[i:i + 1], None, "2")
        for name in batch:
            torch.testing.assert_close(batch[name][i:i + 1], one[name], rtol=1e-12, atol=1e-12)


class Functional(nn.Module):
    """Constants added by functional code: numbers, a parameter, a concatenated constant, F.linear's bias,
    a functional ReLU6 and clamp, a reversed subtraction."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.offset = nn.Parameter(torch.tensor([-1.0, 1.0, 0.2, -0.2]).view(1, 4, 1, 1))
        self.w = nn.Parameter(torch.randn(6, 20) * 0.5)
        self.b = nn.Parameter(torch.randn(6))

    def forward(self, x):
        h = F.pad(self.conv(x) + 0.5, (1, 0, 1, 0), value=0.3)
        h = F.relu6(h * 4.0) - self.offset
        h = torch.cat([h, torch.full_like(h[:, :1], 0.25)], dim=1)
        h = 1.0 - torch.clamp(h, -0.5, 6.5)
        h = F.adaptive_avg_pool2d(h, 2).flatten(1)
        return F.linear(h, self.w, self.b)


def test_functional_constants_are_attributed(x8):
    torch.manual_seed(11)
    model = Functional().double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", pw.ExactnessWarning)
        warnings.filterwarnings("ignore", message="the audit could not check")
        for layer in ["input", "conv"]:
            sources = _check_sum(model, x8 * 2, None, layer)
    assert {"conv", "model (constant)", "model (padding)", "offset", "model (relu6)", "model (clamp)", "b"} <= \
        set(sources) | {"conv"}
    assert sources["model (padding)"].abs().max() > 0
    assert sources["model (relu6)"].abs().max() > 0 and sources["model (clamp)"].abs().max() > 0
    assert sources.remainder.abs().max() < 1e-12


class Unmodelled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = self.conv(x)
        h = torch.addcmul(h, torch.ones_like(h), torch.ones_like(h), value=0.3)  # a constant no rule covers
        return self.fc(F.adaptive_avg_pool2d(h, 8).flatten(1))


def test_what_no_rule_covers_is_the_remainder_with_a_warning(x8):
    torch.manual_seed(12)
    model = Unmodelled().double().eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the audit could not check")  # addcmul is unknown to it too
        with pytest.warns(pw.ExactnessWarning, match="not attributed.*addcmul"):
            sources = bias_sources(model, x8, None, "conv")
        dec = pw.decompose(model, x8, None, ["conv"])
    assert sources.remainder.abs().min() > 1e-3
    torch.testing.assert_close(sources.total(), dec.bias["conv"], rtol=1e-12, atol=1e-12)
    attributed = sum(sources[n] for n in sources if n != REMAINDER)
    torch.testing.assert_close(sources.remainder, dec.bias["conv"] - attributed, rtol=1e-12, atol=1e-12)


def test_custom_leaf_module_offset_by_forward_ad_and_raw_reference():
    model = pw.zoo.load("mini_vgg_bn").double()
    x = pw.data.shapes(3, seed=5).images.double()
    sources = _check_sum(model, x, None, "input")
    dec = pw.decompose(model, x, None, ["input"], keep_gradients=True)
    std = model.normalize.std
    w_norm = dec.gradient("input") * std  # the gradient at the Normalize output, through the fixed layer
    torch.testing.assert_close(sources["normalize"], -(w_norm * model.normalize.mean / std).sum((1, 2, 3)),
                               rtol=1e-10, atol=1e-12)
    assert sources.kinds["normalize"] == B.OFFSET
    lite = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)).double().eval()
    norm = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    xr = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    raw = _check_sum(lite, xr, None, "input", reference="raw", normalization=norm)
    normalized = bias_sources(lite, xr, None, "input")
    torch.testing.assert_close(raw[B.NORMALIZATION], raw.bias - normalized.bias, rtol=1e-10, atol=1e-12)
    assert list(raw)[0] == B.NORMALIZATION


def test_hardsigmoid_offset_up_to_pytorchs_float32_slope():
    # PyTorch's hardsigmoid backward uses 1/6 rounded to float32 (0.16666667) even in float64, so the gradient,
    # hence decompose's bias, is off by ~3e-8 relative there: the parts agree with it to that level only.
    torch.manual_seed(16)
    model = nn.Sequential(nn.Linear(4, 16), nn.Hardsigmoid(), nn.Linear(16, 3)).double().eval()
    x = torch.randn(3, 4, dtype=torch.float64) * 3
    sources = bias_sources(model, x, None, "input")
    assert sources.kinds["1"] == B.CAP and sources["1"].abs().min() > 0
    torch.testing.assert_close(sources.total() - sources.remainder, pw.decompose(model, x).bias["input"],
                               rtol=1e-6, atol=1e-7)


def test_more_module_kinds():
    torch.manual_seed(13)
    model = nn.Sequential(nn.ConstantPad2d(1, 0.7), nn.Conv2d(3, 6, 3), nn.Threshold(0.1, -0.4),
                          nn.Conv2d(6, 6, 3, padding=1), nn.Softshrink(0.3), nn.LeakyReLU(0.1),
                          nn.ConvTranspose2d(6, 4, 2, stride=2), nn.PReLU(), nn.AvgPool2d(4), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 8), nn.BatchNorm1d(8), nn.Hardshrink(0.2), nn.Linear(8, 3))
    model = _randomise_bn(model, 14).double().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    sources = _check_sum(model, x, None, "input")
    for name, kind in {"0": B.PADDING, "2": B.CAP, "4": B.CAP, "6": B.BIAS, "11": B.BN_SHIFT}.items():
        assert sources.kinds[name] == kind and sources[name].abs().max() > 0, name


def test_efficientnet_lite0_real_weights_float64():
    model = pw.load_model("efficientnet_lite0").double()
    x = pw.load_image(pw.data.sample_photo("coffee"), model=model).double()
    for layer in ["stem", "_blocks.5._act1", "stage6"]:
        sources = _check_sum(model, x, None, layer)
    kinds_ = sources.by_kind()
    assert set(kinds_) <= {B.BIAS, B.BN_SHIFT, B.CAP, B.UNATTRIBUTED}
    stem = bias_sources(model, x, None, "stem")
    assert stem.by_kind()[B.CAP].abs().max() > 0  # ReLU6 caps matter on a real network
    assert stem["_fc"].abs().max() > 0


def test_every_module_kind_has_an_offset_rule():
    for kind in kinds.KINDS:
        if kind.modules and kind.category != kinds.SMOOTH:
            assert kind.name in B.MODULE_OFFSETS, kind.name
    assert set(B.MODULE_OFFSETS) <= {k.name for k in kinds.KINDS}


def test_errors_hooks_removed_and_flags_left_alone(x8):
    model = vgg_bn_like()
    with pytest.raises(ValueError, match="names several layers|unknown layer"):
        bias_sources(model, x8, None, "all")
    with pytest.raises(ValueError, match="target classes"):
        bias_sources(model, x8, 9, "2")
    flags = [p.requires_grad for p in model.parameters()]
    bias_sources(model, x8, None, "2")
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.spare = nn.Linear(3 * 16 * 16, 2), nn.ReLU()

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(RuntimeError, match="did not run"):
        bias_sources(Unused().double(), x8, None, "spare")
    assert not torch.overrides._get_current_function_mode_stack()


def test_top_and_by_kind(x8):
    sources = bias_sources(vgg_bn_like(), x8, None, "input")
    top = sources.top(3, example=1)
    assert len(top) == 3 and abs(top[0][1]) >= abs(top[1][1]) >= abs(top[2][1])
    torch.testing.assert_close(torch.stack(list(sources.by_kind().values())).sum(0), sources.bias)


# ----------------------------------------------------------------------------------------------- Fig. 3


def test_bias_curve_equals_decompose_and_averages_as_stated(x8):
    model = vgg_bn_like()
    curve = bias_curve(model, x8, "top2", batch_size=2)
    dec = pw.decompose(model, x8, "top2", ["input", "all"])
    assert curve.layers == dec.layers and curve.bias.shape == (3, 2, len(dec.layers))
    for i, name in enumerate(dec.layers):
        torch.testing.assert_close(curve.bias[:, :, i], dec.bias[name])
    ratios = curve.ratios()
    assert torch.isnan(ratios[dec.score <= 0]).all()
    positive = dec.score > 0
    for i, name in enumerate(dec.layers):
        per_image = torch.stack([(dec.bias[name][n][positive[n]] / dec.score[n][positive[n]]).mean()
                                 for n in range(3)])
        torch.testing.assert_close(curve.summary("mean")[i], per_image.nanmean())
        expected = dec.bias[name][positive].sum() / dec.score[positive].sum()
        torch.testing.assert_close(curve.summary("ratio_of_means")[i], expected)
    assert curve.skipped() == int((~positive).sum())
    labels = torch.tensor([0, 3, 1])
    by_label = bias_curve(model, [(x8[:2], labels[:2]), (x8[2:], labels[2:])])
    assert torch.equal(by_label.target[:, 0], labels)
    with pytest.raises(ValueError, match="pairs"):
        bias_curve(model, [x8], labels)


def test_non_finite_inputs_are_refused_as_decompose_refuses_them(x8):
    bad = x8.clone()
    bad[2, 1, 3, 3] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(examples \[2\]\)"):
        bias_sources(vgg_bn_like(), bad, None, "1")


class SharedAndChanged(nn.Module):
    """One BatchNorm and one Linear run twice, BatchNorm's beta also added by functional code, and (optionally) a
    shortcut value changed in place after the add that reads it."""

    def __init__(self, in_place: bool):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn, self.bn2 = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 3)
        self.in_place = in_place

    def forward(self, x):
        a = torch.relu(self.bn(self.conv1(x)))
        h = self.conv2(a)  # the layer
        out = h + a  # a bypasses the layer ...
        if self.in_place:
            a.mul_(2.0)  # ... and is changed afterwards: its part must use the value that was added
        out = torch.relu(self.bn(out)) + self.bn2(out) + self.bn2.bias.view(1, -1, 1, 1)
        z = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.head(torch.relu(self.fc(torch.relu(self.fc(z)))))


@pytest.mark.parametrize("frozen,in_place", [(False, False), (False, True), (True, False)])
def test_shared_parameters_in_place_changes_and_one_example_agree_with_the_batch(x8, frozen, in_place, monkeypatch):
    torch.manual_seed(12)
    model = _randomise_bn(SharedAndChanged(in_place), 12).double().eval()
    if frozen:  # no parameter gradients to read: every part from a hook
        model.requires_grad_(False)
    batch = _check_sum(model, x8, None, "conv2")
    assert batch.kinds["model (shortcut)"] == B.SHORTCUT and batch["model (shortcut)"].abs().min() > 0
    assert all(batch[name].abs().min() > 1e-4 for name in ("bn", "bn2", "fc", "head"))
    forwards = []
    original = B._forward
    monkeypatch.setattr(B, "_forward", lambda *a: forwards.append(a[4]) or original(*a))
    for i in range(x8.shape[0]):  # one example: parts from parameter gradients where that is safe
        with warnings.catch_warnings():
            warnings.simplefilter("error", pw.ExactnessWarning)
            one = _check_sum(model, x8[i:i + 1], None, "conv2")
        assert list(one) == list(batch)
        for name in batch:
            torch.testing.assert_close(one[name], batch[name][i:i + 1], rtol=1e-10, atol=1e-12)
    # bn2's beta is also added by functional code, so its gradient mixes two uses: the remainder shows it and
    # the call runs again with hooks only; a value changed in place also makes it run again (with copies)
    assert forwards == [False, True] * x8.shape[0] if not frozen else forwards == [False] * x8.shape[0]


class CappedChain(nn.Module):
    """BatchNorm -> ReLU6/Hardtanh -> (zero padding) -> bias-free convolution -> BatchNorm, as in MobileNets and
    EfficientNet-Lite; with ``leak`` a BatchNorm output also reaches the score around its cap."""

    def __init__(self, leak: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.bn0, self.act0 = nn.BatchNorm2d(6), nn.ReLU6()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(6, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU6(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), nn.BatchNorm2d(6)
        self.act2 = nn.Hardtanh(-1.0, 2.0)
        self.conv3, self.bn3 = nn.Conv2d(6, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.leak = leak

    def forward(self, x):
        h = self.act0(self.bn0(self.stem(x)))
        b1 = self.bn1(self.conv1(F.pad(h, (1, 1, 1, 1))))  # zero padding in functional code
        extra = b1.mean((1, 2, 3)).unsqueeze(1) if self.leak else None  # a second use of bn1's output
        h = self.act2(self.bn2(self.conv2(self.act1(b1))))
        h = self.bn3(self.conv3(h))
        out = self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))
        return out if extra is None else out + extra


@pytest.mark.parametrize("leak", [False, True])
def test_caps_between_batchnorms_from_parameter_gradients_at_one_example(x8, leak, monkeypatch):
    torch.manual_seed(4)
    model = _randomise_bn(CappedChain(leak), 6).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(4.0)  # saturate many units on both sides of the caps
    x = x8 * 2
    batch = _check_sum(model, x, None, "stem")
    assert all(batch[name].abs().min() > 0 for name in ("act0", "act1", "act2"))
    spec = B.resolve_one(model, "stem")
    modules = dict(model.named_modules())
    # a second use of bn1's output would mix into the parameter gradients act1's part is read from: act1 is then
    # read from a hook (found before the backward pass, from how many times each node is used)
    linked = {"act0", "act2"} if leak else {"act0", "act1", "act2"}
    tracer, _ = B._forward(model, modules, [spec], x[:1], False)
    assert {s.name for s in tracer.sources if s.between} == linked
    recorder, _, _ = B._forward_graph(model, modules, [spec], x[:1], False, False)  # the graph route links the same
    assert {s.name for s in recorder.sources if s.between} == linked
    tracer.release()
    recorder.release()
    forwards = []
    traced, graph = B._forward, B._forward_graph
    monkeypatch.setattr(B, "_forward", lambda *a: forwards.append(B.COPY if a[4] else B.TRACE) or traced(*a))
    monkeypatch.setattr(B, "_forward_graph", lambda *a: forwards.append(B.GRAPH) or graph(*a))
    for i in range(x.shape[0]):
        with warnings.catch_warnings():
            warnings.simplefilter("error", pw.ExactnessWarning)
            one = _check_sum(model, x[i:i + 1], None, "stem")
        for name in batch:
            torch.testing.assert_close(one[name], batch[name][i:i + 1], rtol=1e-10, atol=1e-12)
    assert forwards == [B.GRAPH] * x.shape[0]  # one forward pass each, no rerun


def test_one_example_equals_the_batch_on_resnet18(resnet18):
    """Twenty BatchNorms and the classifier's bias read from parameter gradients at once, against hooks."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for layer in ["input", "layer1.0.relu@0"]:
        batch = bias_sources(resnet18, x, "top2", layer)
        for i in range(2):
            one = _check_sum(resnet18, x[i:i + 1], batch.target[i:i + 1], layer)
            for name in batch:
                torch.testing.assert_close(one[name], batch[name][i:i + 1], rtol=1e-10, atol=1e-12)
