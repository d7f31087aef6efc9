"""Layer names, presets, capture under in-place operations, one-layer resolution and output substitution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pwawidgets as pw
from pwawidgets.layers import INPUT, LayerCapture, LayerSpec, resolve_layers, resolve_one, substitute


def test_presets_of_vgg_resnet_and_declared_blocks(vgg11, resnet18):
    vgg = pw.layer_presets(vgg11)["blocks"]
    assert list(vgg) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert all(isinstance(vgg11.get_submodule(m), nn.ReLU) for m in vgg.values())
    assert pw.layer_presets(resnet18)["blocks"] == {"stem": "maxpool", "layer1": "layer1", "layer2": "layer2",
                                                    "layer3": "layer3", "layer4": "layer4"}
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    model.block_layers = {"hidden": "1"}
    assert pw.layer_presets(model) == {"blocks": {"hidden": "1"}}
    assert pw.layer_presets(nn.Sequential(nn.Linear(2, 2))) == {}


def test_resolve_names_aliases_calls_and_duplicates(vgg11, resnet18):
    specs, wants_all = resolve_layers(vgg11, ["input", "blocks", "conv2", "features.0"])
    assert not wants_all
    assert [s.name for s in specs] == ["input", "conv1", "conv2", "conv3", "conv4", "conv5", "features.0"]
    assert specs[0] == LayerSpec(INPUT, None)
    specs, wants_all = resolve_layers(resnet18, ["layer1.0.relu@1", "all"])
    assert wants_all and specs == [LayerSpec("layer1.0.relu@1", "layer1.0.relu", 1)]
    assert resolve_layers(vgg11, None)[0] == [LayerSpec(INPUT, None)]
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*'blocks' or one of"):
        resolve_layers(vgg11, ["conv9"])
    with pytest.raises(TypeError, match="strings"):
        resolve_layers(vgg11, [3])


def test_resolve_one(resnet18):
    assert resolve_one(resnet18, None).module is None
    assert resolve_one(resnet18, "layer2").module == "layer2"
    with pytest.raises(ValueError, match="names several layers.*layer1"):
        resolve_one(resnet18, "blocks")
    with pytest.raises(ValueError, match="names several layers"):
        resolve_one(resnet18, "all")
    with pytest.raises(TypeError, match="a layer name is a string"):
        resolve_one(resnet18, 2)


def test_capture_keeps_the_value_before_an_in_place_overwrite():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True)).double()
    x = torch.tensor([[1.0, -2.0, 3.0]], dtype=torch.float64)
    with LayerCapture(model, [LayerSpec("lin", "0")]) as capture:
        model(x)
        h = capture.tensor(LayerSpec("lin", "0"))
    with torch.no_grad():
        assert (h < 0).any()  # the linear output before the in-place ReLU rectified it
        torch.testing.assert_close(h, model[0](x))
    assert not model[0]._forward_hooks


def test_capture_errors_for_modules_that_run_zero_or_several_times(resnet18, images64):
    spec = LayerSpec("layer1.0.relu", "layer1.0.relu")
    with LayerCapture(resnet18, [spec, LayerSpec("fc", "fc")]) as capture:
        resnet18(images64[:1])
        with pytest.raises(ValueError, match="ran 2 times"):
            capture.tensor(spec)
        with pytest.raises(ValueError, match="ran only 2"):
            capture.tensor(LayerSpec("layer1.0.relu@5", "layer1.0.relu", 5))
    unused = nn.ModuleDict({"used": nn.Linear(2, 2), "unused": nn.Linear(2, 2)})
    with LayerCapture(unused, [LayerSpec("unused", "unused")]) as capture:
        unused["used"](torch.zeros(1, 2))
        with pytest.raises(RuntimeError, match="did not run"):
            capture.tensor(LayerSpec("unused", "unused"))


def test_all_relu_specs_in_execution_order(resnet18, images64):
    with LayerCapture(resnet18, [], capture_all_relus=True) as capture:
        resnet18(images64[:1])
    names = [s.name for s in capture.relu_specs()]
    assert names[:3] == ["relu", "layer1.0.relu@0", "layer1.0.relu@1"]
    assert len(names) == 1 + 8 * 2


def test_substitute_replaces_one_call_and_checks_calls(resnet18, images64):
    x = images64[:1]
    with torch.no_grad():
        base = resnet18(x)
        with substitute(resnet18, resolve_one(resnet18, "layer4"), lambda out: out * 0) as sub:
            zeroed = resnet18(x)
        assert sub.calls == 1
        torch.testing.assert_close(zeroed, resnet18.fc.bias.expand_as(zeroed))
        assert not torch.allclose(zeroed, base)
        with pytest.raises(ValueError, match="ran 2 times"), substitute(
                resnet18, resolve_one(resnet18, "layer1.0.relu"), lambda out: out):
            resnet18(x)
        with substitute(resnet18, resolve_one(resnet18, "layer1.0.relu@1"), lambda out: out * 0) as sub:
            resnet18(x)
        assert sub.calls == 2
    assert all(not m._forward_hooks for m in resnet18.modules())
    with pytest.raises(ValueError, match="not a module output"):
        substitute(resnet18, LayerSpec(INPUT, None), lambda out: out)


def test_blocks_on_your_own_model_says_how_to_declare_them():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError) as info:
        resolve_layers(model, "blocks")
    assert str(info.value).startswith("no 'blocks' preset is known for this model")
    assert 'model.block_layers = {"b1": "1", "b2": "3"}' in str(info.value) and "['1', '3']" in str(info.value)
    with pytest.raises(ValueError, match=r"unknown layer 'b2'.*declare one with model.block_layers"):
        resolve_layers(model, "b2")
    model.block_layers = {"b1": "1", "b2": "3"}  # what the message says to write
    assert [s.module for s in resolve_layers(model, "blocks")[0]] == ["1", "3"]
