"""load_model(): torchvision weights API, local checkpoints, offline errors, presets."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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
    expected = {"vgg19": 256, "vgg19_bn": 256, "resnet101": 232}[name]  # their default weights' transforms
    assert (model.preprocessing.size, model.preprocessing.crop) == (expected, 224)
    assert model.preprocessing.normalization == pw.IMAGENET_NORMALIZATION
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
    # the shipped list is torchvision's, name for name and in its order
    for name in ("vgg19", "resnet101"):
        assert pw.imagenet_categories(name) == names
    assert names == list(torchvision.models.get_model_weights("vgg19").DEFAULT.meta["categories"])


def test_the_offline_course_never_imports_torchvision():
    """Importing torchvision costs about 170 MB (it pulls in torch._dynamo), on a 2 GB Binder: EfficientNet-Lite0,
    the mini zoo, images and the decomposition must not need it, and it still comes when a torchvision name does."""
    script = """
import sys
import pwawidgets as pw
from pwawidgets import data
from pwawidgets.models import PAPER_MODELS, has_cached_weights
lite = pw.load_model("efficientnet_lite0")
x = pw.load_image(data.sample_photo("coffee"), model=lite)
pw.decompose(lite, x, None, ["blocks"])
pw.decompose(pw.load_model("mini_resnet"), data.shapes(2, seed=0).images, None, ["blocks"])
print(lite.class_names[int(lite(x).argmax())], [has_cached_weights(n) for n in PAPER_MODELS])
print("torchvision" in sys.modules, "torch._dynamo" in sys.modules)
pw.load_model("vgg19", pretrained=False)
print("torchvision" in sys.modules)
"""
    env = {**os.environ, "TORCH_HOME": tempfile.mkdtemp()}  # no cached weights, as on Binder
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split("\n")[:3] == ["espresso [False, False, False]", "False False", "True"], out.stdout


# ------------------------------------------------------------------------------------- EfficientNet-Lite0


def test_efficientnet_lite0_offline_and_from_a_checkpoint(tmp_path):
    model = pw.load_model("efficientnet_lite0")
    assert model.pretrained is True and model.model_name == "efficientnet_lite0" and not model.training
    assert model.preprocessing.normalization == ((127 / 255,) * 3, (128 / 255,) * 3)
    assert model.class_names[0] == "tench"
    assert list(pw.layer_presets(model)["blocks"]) == ["stem", *(f"stage{k}" for k in range(1, 8)), "head"]
    assert models.has_cached_weights("efficientnet_lite0")
    assert models.verify_cached_weights("efficientnet_lite0") == models.weights_cache_path("efficientnet_lite0")
    path = tmp_path / "lite0.pth"
    torch.save(model.state_dict(), path)
    again = pw.load_model("efficientnet_lite0", pretrained=path)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_best_available_imagenet(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert models.best_available_imagenet() == "efficientnet_lite0"
    models.weights_cache_path("vgg19").parent.mkdir(parents=True)
    models.weights_cache_path("vgg19").touch()  # empty: an interrupted download does not count
    assert models.best_available_imagenet() == "efficientnet_lite0"
    models.weights_cache_path("resnet101").write_bytes(b"x")
    assert models.best_available_imagenet() == "resnet101"
    assert models.best_available_imagenet(("vgg19", "resnet101")) == "resnet101"
    assert models.best_available_imagenet(("vgg19",)) == "efficientnet_lite0"


# ----------------------------------------------------------------------------------------- cached files


@pytest.fixture
def resnet18_cache(monkeypatch, tmp_path):
    """torchvision's cache moved to tmp_path; no download is possible."""
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    path = models.weights_cache_path("resnet18")
    path.parent.mkdir(parents=True)
    return path


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x80\x02 not a pickle"])
def test_empty_or_corrupt_cached_weights(resnet18_cache, content):
    resnet18_cache.write_bytes(content)
    assert models.has_cached_weights("resnet18") is bool(content)
    with pytest.raises(pw.WeightsUnavailableError) as info:
        pw.load_model("resnet18")
    message = str(info.value)
    assert str(resnet18_cache) in message and "delete" in message
    assert "python -m pwawidgets fetch resnet18" in message
    with pytest.raises(pw.WeightsUnavailableError, match="fetch resnet18"):
        models.verify_cached_weights("resnet18")


def test_cached_weights_checksum(resnet18_cache):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18_cache)
    with pytest.raises(pw.WeightsUnavailableError, match="(?s)SHA-256 does not match.*delete"):
        models.verify_cached_weights("resnet18")


def test_bad_local_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        pw.load_model("resnet18", pretrained=tmp_path / "missing.pth")
    empty = tmp_path / "empty.pth"
    empty.touch()
    with pytest.raises(pw.WeightsUnavailableError, match="empty"):
        pw.load_model("mini_vgg", pretrained=empty)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(pw.WeightsUnavailableError, match="not a state_dict"):
        pw.load_model("efficientnet_lite0", pretrained=not_a_dict)
    other = tmp_path / "mini_vgg.pth"
    torch.save(pw.zoo.build("mini_vgg").state_dict(), other)
    with pytest.raises(RuntimeError, match="does not fit 'mini_resnet'.*another architecture"):
        pw.load_model("mini_resnet", pretrained=other)
    with pytest.raises(TypeError, match="pretrained must be True, False or the path"):
        pw.load_model("mini_vgg", pretrained=1)


# ---------------------------------------------------------------------------------------------- names


def test_unknown_name_lists_every_kind():
    with pytest.raises(models.UnknownModelError) as info:
        pw.load_model("efficientnet_lite1")
    message = str(info.value)
    assert "\n" not in message and "did you mean 'efficientnet_lite0'" in message
    for name in ("efficientnet_lite0", "mini_vgg", "mini_vgg_bn", "mini_resnet", "vgg19", "resnet101", "alexnet"):
        assert name in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", [None, 19, torchvision.models.vgg11])
def test_name_must_be_a_string(name):
    with pytest.raises(TypeError, match="model name must be a string"):
        pw.load_model(name)


# ------------------------------------------------------------------------------------------ random state


@pytest.mark.parametrize("load", [
    lambda: pw.zoo.load("mini_resnet"),
    lambda: pw.load_model("mini_vgg"),
    lambda: pw.load_model("efficientnet_lite0"),
    lambda: pw.load_model("mini_vgg_bn", pretrained=pw.zoo.weights_path("mini_vgg_bn")),
])
def test_pretrained_loading_leaves_the_global_rng_alone(load):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load()
    assert torch.equal(torch.rand(3), expected)


def test_random_weights_draw_from_the_seed():
    torch.manual_seed(5)
    a = pw.load_model("mini_vgg", pretrained=False)
    torch.manual_seed(5)
    b = pw.load_model("mini_vgg", pretrained=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert a.pretrained is False


def test_devices_checkpoint_layouts_and_categories(tmp_path):
    import torch

    with pytest.raises(ValueError, match="unknown device 'banana'"):
        pw.load_model("mini_vgg", device="banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no usable CUDA GPU"):
            pw.load_model("mini_vgg", device="cuda")
    state = pw.load_model("mini_vgg").state_dict()
    for layout in ({"state_dict": state}, {f"module.{k}": v for k, v in state.items()}):
        torch.save(layout, tmp_path / "ckpt.pt")
        loaded = pw.load_model("mini_vgg", pretrained=tmp_path / "ckpt.pt")
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert pw.imagenet_categories("efficientnet_lite0") == pw.imagenet_categories()
    with pytest.raises(ValueError, match="not an ImageNet network"):
        pw.imagenet_categories("mini_vgg")
