"""load_model(): torchvision weights API, local checkpoints, offline errors, presets."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

import pwawidgets as pw
from pwawidgets import models


@pytest.mark.parametrize("name", ["vgg19", "vgg19_bn", "resnet101"])
def test_paper_models_random_weights_and_presets(name):
    model = pw.load_model(name, pretrained=False)
    assert not model.training and model.pretrained is False
    assert len(model.class_names) == 1000 and model.class_names[0] == "tench"
    assert model.normalization == pw.IMAGENET_NORMALIZATION
    blocks = pw.layer_presets(model)["blocks"]
    expected = ["conv1", "conv2", "conv3", "conv4", "conv5"] if "vgg" in name else \
        ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert list(blocks) == expected
    modules = dict(model.named_modules())
    if "vgg" in name:  # each block tensor is the ReLU right before a max-pool
        for target in blocks.values():
            idx = int(target.split(".")[1])
            assert isinstance(modules[target], torch.nn.ReLU)
            assert isinstance(model.features[idx + 1], torch.nn.MaxPool2d)
    assert pw.audit(model).ok


def test_local_checkpoint_is_loaded(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = pw.load_model("resnet18", pretrained=path)
    assert model.pretrained is True
    for (k, a), b in zip(source.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_offline_pretrained_gives_instructions(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert not models.has_cached_weights("vgg19")
    with pytest.raises(pw.WeightsUnavailableError) as info:
        pw.load_model("vgg19")
    message = str(info.value)
    assert "download.pytorch.org" in message and str(tmp_path) in message and "pretrained=False" in message


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'vgg99'.*mini_vgg"):
        pw.load_model("vgg99", pretrained=False)


def test_imagenet_categories_offline():
    names = pw.imagenet_categories()
    assert len(names) == 1000 and "bull mastiff" in names and "cauliflower" in names
