"""Where the bias comes from: every part against an independent oracle (the network frozen at its activation
pattern, :mod:`bias_oracle`), in float64; what no rule covers is the remainder, with a warning."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from bias_oracle import Fill, Frozen, Pad, Residual, Where, part
from torch import nn

import pwawidgets as pw
from pwawidgets.bias import NORMALIZATION, REMAINDER, bias_sources, bias_sources_at
from pwawidgets.precision import ExactnessWarning

TOL = 1e-10


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.6 - 0.3)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
    return model.double().eval()


def vgg_bn_like() -> nn.Module:
    torch.manual_seed(0)
    return _randomise(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(32, 5)), 1)


def capped_net() -> nn.Module:
    """ReLU6 (in place) between two BatchNorms, Hardtanh caps, many saturated units."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True), nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.Hardtanh(-1.0, 2.0, inplace=True), nn.Flatten(), nn.Linear(8 * 4 * 4, 16),
        nn.Hardtanh(0.0, 0.5), nn.Linear(16, 4))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(6.0)  # drive many units past the caps
    return _randomise(model, 4)


def fill_net() -> nn.Module:
    """Constants from torch.where, masked_fill and F.pad(value != 0), and a residual block."""
    torch.manual_seed(5)
    return _randomise(nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), Where(0.5), nn.Conv2d(6, 6, 3, padding=1), Fill(0.5), Pad(0.3),
        Residual(6), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 5, 3)), 6)


def _x(batch: int = 3, size: int = 8, seed: int = 5) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _check(model, x, layer, target=None, on_names=None, **kwargs):
    """bias_sources at ``layer`` against the oracle: the bias, each part, the remainder ~0, and decompose."""
    sources = bias_sources(model, x, target, layer, **kwargs)
    frozen = Frozen(model, x, None if layer == "input" else layer)
    t = sources.target
    scale = sources.score.abs().max() + 1
    bias = part(frozen(), t)
    torch.testing.assert_close(sources.bias, bias, rtol=0, atol=TOL * scale)
    torch.testing.assert_close(pw.decompose(model, x, target, [layer], **kwargs).bias[layer], bias, rtol=0,
                               atol=TOL * scale)
    names = frozen.after if on_names is None else on_names
    for name in names:
        expected = part(frozen({name}), t)
        got = sources.parts.get(name, torch.zeros_like(expected))
        torch.testing.assert_close(got, expected, rtol=0, atol=TOL * scale, msg=f"part of {name!r}")
    assert set(sources) - {REMAINDER} <= set(frozen.after), set(sources) - set(frozen.after)
    assert float(sources.remainder.abs().max()) <= TOL * float(scale)
    return sources


@pytest.mark.parametrize("layer", ["input", "2", "6", "10"])
def test_vgg_bn_like_every_part_against_the_frozen_network(layer):
    sources = _check(vgg_bn_like(), _x(), layer)
    assert sources.kinds["0" if layer == "input" else "12"] == "conv/linear bias"


@pytest.mark.parametrize("layer", ["input", "2", "3", "9"])
def test_caps_saturated_in_place_and_between_batchnorms(layer):
    model, x = capped_net(), _x()
    sources = _check(model, x, layer)
    if layer == "input":  # the caps hold many units, so their parts are large: the test sees them
        assert sources.kinds["2"] == "activation cap" and float(sources["2"].abs().max()) > 0.1
        assert float(sources["12"].abs().max()) > 0.01


@pytest.mark.parametrize("layer", ["input", "1", "5.relu"])
def test_where_masked_fill_pad_and_a_shortcut_around_the_layer(layer):
    model, x = fill_net(), _x(size=8)
    sources = _check(model, x, layer)
    if layer != "5.relu":
        for name in ("3", "4"):
            assert float(sources[name].abs().max()) > 1e-3, name
    else:
        assert sources.kinds["5"] == "added tensor (shortcut)" and float(sources["5"].abs().max()) > 1e-3
    if layer == "input":
        assert sources.kinds["1"] == "constant (where, fill, cat)" and float(sources["1"].abs().max()) > 1e-3


def test_k_classes_batch_and_several_layers_at_once():
    model, x = vgg_bn_like(), _x(batch=4)
    many = bias_sources_at(model, x, "top3", ["input", "2", "6"])
    for layer, sources in many.items():
        assert sources.score.shape == (4, 3) and sources.per_class
        one = _check(model, x, layer, "top3")
        assert list(one) == list(sources)
        for name in one:
            torch.testing.assert_close(sources[name], one[name], rtol=0, atol=1e-12)
    # a constant after layer "2" but before "6" counts for "2" only
    assert "4" in many["2"] and "4" not in many["6"]
    for b in range(4):  # examples are independent
        single = bias_sources(model, x[b:b + 1], many["input"].target[b:b + 1], "input")
        for name in single:
            torch.testing.assert_close(single[name][0], many["input"][name][b], rtol=0, atol=1e-12)


def test_raw_reference_adds_the_normalisation_as_a_part():
    model, x = vgg_bn_like(), _x()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    sources = bias_sources(model, x, None, "input", reference="raw", normalization=(mean, std))
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    frozen = Frozen(model, x, None, raw_zero=(-m / s).expand_as(x))
    t = sources.target
    torch.testing.assert_close(sources.bias, part(frozen(), t), rtol=0, atol=1e-10)
    torch.testing.assert_close(sources[NORMALIZATION], part(frozen(set()), t), rtol=0, atol=1e-10)
    # the frozen network is linear in its constants, the input's (the normalisation) included
    torch.testing.assert_close(sources["0"], part(frozen({"0"}) - frozen(set()), t), rtol=0, atol=1e-10)
    assert float(sources.remainder.abs().max()) < 1e-10


def test_pixel_maps_sum_to_the_parts():
    model, x = fill_net(), _x()
    sources = bias_sources(model, x, "top2", "input", pixel_maps=True)
    for name in ("0", "1", "3"):
        grid = sources.pixel_map(name)
        assert grid.shape[:2] == (3, 2) and grid.dim() == 4
        torch.testing.assert_close(grid.flatten(2).sum(-1), sources[name], rtol=0, atol=1e-12)
    with pytest.raises(KeyError, match="no pixel map"):
        sources.pixel_map("9")
    with pytest.raises(ValueError, match="pixel_maps=True"):
        bias_sources(model, x, None, "input").pixel_map("0")


def test_what_no_rule_covers_is_the_remainder_with_a_warning():
    class Unknown(nn.Module):
        def forward(self, h):
            return torch.addcmul(torch.full_like(h, 0.25), h, torch.ones_like(h))  # no rule for addcmul

    model = _randomise(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Unknown(), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(4 * 8 * 8, 3)), 7)
    x = _x()
    with pytest.warns(ExactnessWarning, match="addcmul"):
        sources = bias_sources(model, x, None, "input")
    # the oracle of the missing constant: the network after it at 0.25 everywhere, with the ReLU frozen
    with torch.no_grad():
        h = model[0](x)
        mask = (h + 0.25 > 0).double()
        missing = model[4]((torch.full_like(h, 0.25) * mask).flatten(1))
        missing = missing - model[4].bias
    torch.testing.assert_close(sources.remainder, missing.gather(1, sources.target[:, None])[:, 0], rtol=0,
                               atol=1e-10)


def test_efficientnet_lite0_real_weights():
    model = pw.load_model("efficientnet_lite0").double().eval()
    x = _x(batch=1, size=64)
    names = ["_bn0", "_blocks.0._bn2", "_blocks.15._act1", "_fc"]
    sources = _check(model, x, "input", on_names=names)
    assert len(sources) > 40 and sources.kinds["_blocks.15._act1"] == "activation cap"


@pytest.mark.parametrize("name, layer", [("mini_vgg_bn", "conv1"), ("mini_resnet", "stem")])
def test_mini_zoo(name, layer):
    model = pw.load_model(name).double().eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    module = pw.layers.resolve_one(model, layer).module
    _check(model, x, module)


def test_compiled_model_and_training_mode_left_as_found():
    model, x = vgg_bn_like(), _x()
    compiled = torch.compile(model)
    expected = bias_sources(model, x, None, "2")
    got = bias_sources(compiled, x, None, "2")
    assert list(got) == list(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bias_sources(model, x, None, "2", allow_non_affine=True)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_a_forward_under_no_grad_is_a_clear_error():
    class NoGrad(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = vgg_bn_like()

        def forward(self, x):
            with torch.no_grad():
                return self.net(x)

    model = NoGrad()
    for call in (pw.decompose, bias_sources):
        with pytest.raises(ValueError, match="torch.no_grad"):
            call(model, _x(), None, "input")


def test_summary_top_by_kind_and_errors():
    model, x = vgg_bn_like(), _x()
    sources = bias_sources(model, x, None, "input")
    text = repr(sources)
    assert "remainder" in text and sources.top(1)[0][0] in text
    torch.testing.assert_close(sources.parts_sum(), sources.bias, rtol=0, atol=1e-12)
    kinds_ = sources.by_kind()
    assert set(kinds_) == {"conv/linear bias", "BatchNorm shift", "not attributed"}
    with pytest.raises(ValueError, match="'all' is not supported"):
        bias_sources_at(model, x, None, "all")
    with pytest.raises(ValueError, match="names several layers|unknown layer|no 'blocks' preset"):
        bias_sources(model, x, None, "blocks")
    with pytest.raises(ValueError, match="reference='raw'"):
        bias_sources(model, x, None, "input", reference="raw")
    flags = [p.requires_grad for p in model.parameters()]
    before = x.clone()
    bias_sources(model, x, None, "input")
    assert torch.equal(x, before) and flags == [p.requires_grad for p in model.parameters()]


def test_functional_padding_of_zero_and_reflection_add_nothing():
    class Pads(nn.Module):
        def forward(self, h):
            return F.pad(F.pad(h, (1, 1, 1, 1)), (1, 1, 1, 1), mode="reflect")

    model = _randomise(nn.Sequential(nn.Conv2d(3, 4, 3), Pads(), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(4 * 10 * 10, 3)), 8)
    sources = bias_sources(model, _x(), None, "input")
    assert list(sources) == ["0", "4", REMAINDER]


def test_torchvision_shortcut_added_in_place_around_a_layer_inside_the_block():
    import torchvision

    torch.manual_seed(0)
    model = _randomise(torchvision.models.resnet18(weights=None, num_classes=7), 9)
    x = _x(batch=2, size=32)
    sources = bias_sources(model, x, None, "layer1.0.relu@0")
    assert sources.kinds["layer1.0"] == "added tensor (shortcut)"
    # its part: <dS/d(out after `out += identity`), identity>; the add passes the gradient on to bn2's output, and
    # the identity is the block's input, the max-pool's output
    dec = pw.decompose(model, x, sources.target, ["layer1.0.bn2", "maxpool"], keep_gradients=True)
    expected = (dec.gradient("layer1.0.bn2") * dec.activation("maxpool")).flatten(1).sum(1)
    torch.testing.assert_close(sources["layer1.0"], expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(sources.bias, pw.decompose(model, x, None, ["layer1.0.relu@0"]).bias["layer1.0.relu@0"],
                               rtol=0, atol=1e-10)
    assert float(sources.remainder.abs().max()) < 1e-10
    assert "layer1.0.bn2" in sources and "layer1.0.bn1" not in sources  # bn1 comes before the layer


def test_a_module_reused_with_shared_parameters_is_named_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.act = nn.ReLU6()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            h = self.act(self.stem(x))
            h = self.act(self.conv(self.act(self.conv(h))))
            return self.fc(h.flatten(1))

    model = _randomise(Twice(), 10)
    with torch.no_grad():
        model.conv.weight.mul_(8)  # saturate many units
    x = _x()
    sources = bias_sources(model, x, None, "stem")
    assert {"act@0", "conv@0", "act@1", "conv@1", "act@2", "fc"} <= set(sources) and "stem" not in sources
    dec = pw.decompose(model, x, sources.target, ["conv@1", "act@2"], keep_gradients=True)
    bias = (dec.gradient("conv@1").sum((2, 3)) * model.conv.bias).sum(1)
    torch.testing.assert_close(sources["conv@1"], bias, rtol=0, atol=1e-10)
    capped = dec.activation("act@2") == 6  # the units ReLU6 holds at 6
    assert capped.any()
    cap = (dec.gradient("act@2") * capped * 6.0).flatten(1).sum(1)
    torch.testing.assert_close(sources["act@2"], cap, rtol=0, atol=1e-10)
    assert float(sources.remainder.abs().max()) < 1e-10
