"""A model carries its preprocessing: every loader attaches it, load_image(model=) applies it, the library reads it
(reference="raw", fidelity, robustness, the explorer) and warns when a batch was made for another normalisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

import pwawidgets as pw
from pwawidgets import data, datasets, metrics, robustness
from pwawidgets.calls import input_normalization
from pwawidgets.preprocessing import IMAGENET, normalization_of, preprocessing_of

LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3
# load_image works in float32, the manual pipeline in float64: 2e-5 normalised units is 1/200 of a grey level


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.sample_photo("chelsea")


@pytest.fixture(scope="module")
def lite() -> nn.Module:
    return pw.load_model("efficientnet_lite0")


def _manual(image: np.ndarray, size: int, crop: int | None, mean, std, interpolation="bilinear") -> torch.Tensor:
    """The documented pipeline written out with torchvision's functions: [0, 1] floats, resize, crop, normalise."""
    x = torch.from_numpy(image).permute(2, 0, 1).double() / 255
    x = TF.resize(x, [size], interpolation=TF.InterpolationMode(interpolation), antialias=True)
    if crop is not None:
        x = TF.center_crop(x, [crop, crop])
    x = x.clamp(0, 1)
    m = torch.tensor(mean, dtype=torch.float64).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(-1, 1, 1)
    return ((x - m) / s)[None]


# ----------------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("name", ["vgg19", "resnet101"])
def test_torchvision_models_carry_their_weights_transforms(name):
    model = pw.load_model(name, pretrained=False)
    t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    p = model.preprocessing
    assert (p.size, p.crop) == (t.resize_size[0], t.crop_size[0])
    assert (p.mean, p.std) == (tuple(t.mean), tuple(t.std)) and p.interpolation == t.interpolation.value
    assert "random weights" in p.name and ("IMAGENET1K_V2" if name == "resnet101" else "IMAGENET1K_V1") in p.name
    assert (p.size, p.crop) == ((232, 224) if name == "resnet101" else (256, 224))  # torchvision's own values


def test_efficientnet_lite0_mini_zoo_and_a_checkpoint(tmp_path, lite):
    assert lite.preprocessing.normalization == (LITE_MEAN, LITE_STD)
    assert (lite.preprocessing.size, lite.preprocessing.crop) == (256, 224)
    mini = pw.load_model("mini_vgg_bn")
    p = mini.preprocessing
    assert (p.size, p.crop, p.raw) == (data.IMAGE_SIZE, data.IMAGE_SIZE, True) and p.size == 64
    assert pw.zoo.load("mini_resnet").preprocessing == p  # the zoo's classes carry it, whoever loads them
    path = tmp_path / "mini.pt"
    torch.save(mini.state_dict(), path)
    again = pw.load_model("mini_vgg_bn", pretrained=path)
    assert again.preprocessing.normalization == p.normalization and str(path) in again.preprocessing.name


def test_preprocessing_of_looks_through_wrappers_and_refuses_other_values():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    assert preprocessing_of(net) is None
    net.preprocessing = pw.Preprocessing(2, 2, (0.5,) * 3, (0.25,) * 3, name="tiny")
    assert preprocessing_of(nn.DataParallel(net)) is net.preprocessing
    assert preprocessing_of(torch.compile(net)) is net.preprocessing
    net.preprocessing = ((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(TypeError, match="pwawidgets.Preprocessing"):
        preprocessing_of(net)


@pytest.mark.parametrize("kwargs, match", [
    ({"size": 0}, "size must be a positive integer"), ({"crop": 300}, "crop=300 is larger than size=256"),
    ({"std": (1, 0, 1)}, "every std > 0"), ({"mean": (0, 0)}, "one value per channel"),
    ({"interpolation": "lanczos"}, "interpolation must be one of"),
])
def test_a_bad_preprocessing_is_refused_naming_the_field(kwargs, match):
    args = {"size": 256, "crop": 224, "mean": (0, 0, 0), "std": (1, 1, 1)} | kwargs
    with pytest.raises(ValueError, match=match):
        pw.Preprocessing(**args)


# ----------------------------------------------------------------------------------------------- load_image


def test_load_image_with_a_model_equals_the_manual_pipeline(photo, lite):
    x = pw.load_image(photo, model=lite)
    assert x.preprocessing == lite.preprocessing and x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(x.double(), _manual(photo, 256, 224, LITE_MEAN, LITE_STD), rtol=0, atol=2e-5)
    resnet = pw.load_model("resnet101", pretrained=False)
    y = pw.load_image(photo, model=resnet)
    torch.testing.assert_close(y.double(), _manual(photo, 232, 224, *pw.IMAGENET_NORMALIZATION), rtol=0, atol=2e-5)
    # torchvision's own transforms (they resize 8-bit pixels, so they differ by rounding, well under a grey level)
    theirs = torchvision.models.get_model_weights("resnet101").DEFAULT.transforms()(Image.fromarray(photo))
    gap = (y[0] - theirs) * torch.tensor(pw.IMAGENET_NORMALIZATION[1]).view(-1, 1, 1)
    assert float(gap.abs().mean()) < 1 / 255
    mini = pw.load_model("mini_vgg")
    z = pw.load_image(photo, model=mini)
    torch.testing.assert_close(z.double(), _manual(photo, 64, 64, (0,) * 3, (1,) * 3), rtol=0, atol=2e-5)


def test_explicit_arguments_override_and_a_conflicting_normalisation_warns(photo, lite):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = pw.load_image(photo, size=97, crop=None, model=lite)  # another size: no warning
    torch.testing.assert_close(x.double(), _manual(photo, 97, None, LITE_MEAN, LITE_STD), rtol=0, atol=2e-5)
    assert x.preprocessing.normalization == lite.preprocessing.normalization and "size=97" in x.preprocessing.name
    with pytest.warns(pw.PreprocessingWarning, match=r"not the model's: efficientnet_lite0.*0\.498"):
        y = pw.load_image(photo, normalization=pw.IMAGENET_NORMALIZATION, model=lite)
    assert y.preprocessing.normalization == pw.IMAGENET_NORMALIZATION
    with pytest.warns(pw.PreprocessingWarning, match="raw pixels"):
        pw.load_image(photo, normalize=False, model=lite)
    without = pw.load_image(photo)
    assert without.preprocessing == IMAGENET
    torch.testing.assert_close(without.double(), _manual(photo, 256, 224, *pw.IMAGENET_NORMALIZATION), rtol=0,
                               atol=2e-5)


def test_load_image_refuses_a_model_without_preprocessing_before_reading(tmp_path):
    with pytest.raises(ValueError, match=r"carries no preprocessing: set model.preprocessing"):
        pw.load_image(tmp_path / "missing.png", model=nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model must be a torch nn.Module"):
        pw.load_image(tmp_path / "missing.png", model="vgg19")
    one_channel = nn.Linear(2, 2)
    one_channel.preprocessing = pw.Preprocessing(8, 8, (0.5,), (0.5,))
    with pytest.raises(ValueError, match=r"1 channel\(s\)"):
        pw.load_image(np.zeros((8, 8, 3)), model=one_channel)


def test_display_image_undoes_the_model_preprocessing(photo, lite):
    x = pw.load_image(photo, model=lite)
    expected = _manual(photo, 256, 224, (0,) * 3, (1,) * 3)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(pw.display_image(x[:1].clone(), model=lite), expected, atol=1e-5)
    np.testing.assert_allclose(pw.display_image(x), expected, atol=1e-5)  # read from x.preprocessing
    assert np.abs(pw.display_image(x.clone()) - expected).max() > 0.1  # no record, no model: ImageNet's, not Lite0's


# ------------------------------------------------------------------------------------ the mismatch warning


def test_a_batch_made_for_another_model_warns_naming_both(photo, lite):
    vgg = pw.load_model("vgg11", pretrained=False)
    x = pw.load_image(photo, model=vgg)
    with pytest.warns(pw.PreprocessingWarning, match=r"normalised for vgg11.*expects efficientnet_lite0") as caught:
        pw.decompose(lite, x, 0, ["input"])
    assert caught[0].filename == __file__  # points at the caller
    with pytest.warns(pw.PreprocessingWarning, match="expects efficientnet_lite0"):
        pw.bias_sources(lite, x, 0, "stem")
    with pytest.warns(pw.PreprocessingWarning, match="expects efficientnet_lite0"):
        robustness.fgsm(lite, x, 0, 1 / 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pw.decompose(lite, pw.load_image(photo, model=lite), 0, ["input"])  # its own: silent
        pw.decompose(lite, x.clone(), 0, ["input"])  # no record: nothing to compare


def test_fidelity_and_robustness_read_the_model_preprocessing():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double()
    model.preprocessing = pw.Preprocessing(4, 4, (0.5, 0.25, 0.0), (0.25, 0.5, 1.0))
    torch.testing.assert_close(metrics.fill_value("black", normalization_of(model)),
                               torch.tensor([-2.0, -0.5, 0.0], dtype=torch.float64))
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    delta = robustness.fgsm(model, x, 0, 0.1).delta
    torch.testing.assert_close(delta.abs().amax((0, 2, 3)), torch.tensor([0.4, 0.2, 0.1], dtype=torch.float64))
    with pytest.raises(ValueError, match="model.preprocessing = pwawidgets.Preprocessing"):
        metrics.fill_value("black", normalization_of(nn.Linear(2, 2)))


def test_raw_reference_reads_the_model_preprocessing(photo):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    net = net.double().eval()
    net.preprocessing = pw.Preprocessing(16, 16, (0.2, 0.4, 0.6), (0.5, 0.25, 0.125))
    assert input_normalization(net, None, "raw", True) == net.preprocessing.normalization
    x = pw.load_image(photo, model=net).double()
    raw = pw.decompose(net, x, 1, ["input"], reference="raw", keep_gradients=True)
    # independent: the gradient with respect to raw pixels by autograd through the normalisation written out
    mean = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64).view(1, -1, 1, 1)
    pixels = (x * std + mean).requires_grad_(True)
    score = net((pixels - mean) / std)[0, 1]
    (grad,) = torch.autograd.grad(score, pixels)
    pixels = pixels.detach()
    torch.testing.assert_close(raw.contributions["input"][0], (grad * pixels)[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(raw.bias["input"][0], score.detach() - (grad * pixels).sum(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------- data sets, widget


def test_image_sets_load_for_the_model_and_keep_the_record(lite):
    photos = datasets.bundled_photos(["chelsea", "coffee"], model=lite)
    batch = photos.tensor()
    assert batch.preprocessing == lite.preprocessing
    torch.testing.assert_close(batch[:1], pw.load_image(data.sample_photo("chelsea"), model=lite))
    images, _ = next(photos.batches(2))
    assert images.preprocessing == lite.preprocessing
    with pytest.raises(ValueError, match="normalization must hold 3 means"):  # when the set is made, not later
        datasets.bundled_photos(["chelsea"], normalization=((0.5,), (0.5,)), model=lite)
    with pytest.warns(pw.PreprocessingWarning, match="not the model's"):
        datasets.bundled_photos(["chelsea"], normalization=pw.IMAGENET_NORMALIZATION, model=lite)


def test_explorer_takes_a_preprocessing_for_a_model_without_one(photo):
    from pwawidgets.widgets.contribution_explorer import ContributionExplorer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    prep = pw.Preprocessing(32, 32, (0.5,) * 3, (0.25,) * 3, name="my 32 px net")
    explorer = ContributionExplorer(net, photo, preprocessing=prep, class_names=["a", "b", "c"])
    assert explorer.state.preprocess.preprocessing == prep and explorer.message == ""
    torch.testing.assert_close(explorer.state.inputs.cpu(), _manual(photo, 32, 32, (0.5,) * 3, (0.25,) * 3).float(),
                               rtol=0, atol=2e-5)
    with pytest.warns(pw.PreprocessingWarning, match="carries no preprocessing"):
        ContributionExplorer(net, photo, class_names=["a", "b", "c"])
    with pytest.raises(TypeError, match="preprocessing is a pwawidgets.Preprocessing"):
        ContributionExplorer(net, photo, preprocessing=((0.5,) * 3, (0.25,) * 3))


def test_explorer_notes_a_ready_tensor_made_for_another_model(photo):
    from pwawidgets.widgets.contribution_inputs import prepare, preprocessing_for

    mini = pw.load_model("mini_vgg")
    p = preprocessing_for(mini)
    x, notes = prepare(pw.load_image(photo, size=64, crop=64), p)  # ImageNet-normalised, for a raw-pixel net
    assert len(notes) == 1 and "normalised for ImageNet default" in notes[0] and "mini zoo" in notes[0]
    assert prepare(pw.load_image(photo, model=mini), p)[1] == []
