"""PiecewiseAffineCAM: a pytorch-grad-cam CAM made of the exact contributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import HiResCAM
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import nn

import pwawidgets as pw
from pwawidgets.integrations.common import spread
from pwawidgets.integrations.gradcam import PiecewiseAffineCAM, SignedCAM


@pytest.fixture(scope="module")
def mini() -> nn.Module:
    return pw.load_model("mini_vgg_bn").double().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(3, 3, 64, 64, dtype=torch.float64)


def _targets(classes) -> list[ClassifierOutputTarget]:
    return [ClassifierOutputTarget(int(c)) for c in classes]


def _w_times_h(model: nn.Module, layer: nn.Module, x: torch.Tensor, classes) -> torch.Tensor:
    """Independent reference: the layer's output from a hook, its gradient from autograd, summed over channels."""
    kept = []
    # the hook hands on a clone, so the tensor kept is the one the rest of the network reads
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.append(out.clone()) or kept[-1])
    try:
        logits = model(x)
    finally:
        handle.remove()
    score = logits.gather(1, torch.as_tensor(classes)[:, None]).sum()
    (w,) = torch.autograd.grad(score, kept[-1])
    return (w * kept[-1]).sum(1).detach()


@pytest.mark.parametrize("layers", [["features.20"], ["features.13", "features.20"]])
def test_unit_maps_equal_hirescam(mini: nn.Module, images: torch.Tensor, layers: list[str]) -> None:
    modules = [mini.get_submodule(name) for name in layers]
    classes = [1, 4, 5]
    ours = PiecewiseAffineCAM(mini, modules)(input_tensor=images, targets=_targets(classes))
    with HiResCAM(mini, modules) as hires:
        theirs = hires(input_tensor=images, targets=_targets(classes))
    assert ours.dtype == np.float32 and ours.shape == (3, 64, 64)
    assert ours.min() >= 0 and ours.max() <= 1
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6)


def test_aug_smooth_as_pytorch_grad_cam_does(mini: nn.Module, images: torch.Tensor) -> None:
    module = [mini.get_submodule("features.20")]
    ours = PiecewiseAffineCAM(mini, module)(input_tensor=images[:1], targets=None, aug_smooth=True)
    with HiResCAM(mini, module) as hires:
        theirs = hires(input_tensor=images[:1], targets=None, aug_smooth=True)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6)


def test_reshape_transform_is_applied_as_pytorch_grad_cam_does(mini: nn.Module, images: torch.Tensor) -> None:
    def transform(t: torch.Tensor) -> torch.Tensor:  # moves entries only
        return t.flip(-1).transpose(-1, -2)

    module = [mini.get_submodule("features.13")]
    ours = PiecewiseAffineCAM(mini, module, reshape_transform=transform)(input_tensor=images, targets=None)
    with HiResCAM(mini, module, reshape_transform=transform) as hires:
        theirs = hires(input_tensor=images, targets=None)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6)


def test_signed_maps_are_exact_and_sum_to_score_minus_bias(mini: nn.Module, images: torch.Tensor) -> None:
    classes = [2, 0, 5]
    layer = mini.get_submodule("features.13")  # an 16 x 16 grid for a 64 x 64 input: 4 x 4 pixels a cell
    x = images.clone()
    result = PiecewiseAffineCAM(mini, [layer], signed=True)(input_tensor=x, targets=_targets(classes))
    assert isinstance(result, SignedCAM)
    maps, bias = result
    assert maps.shape == (3, 64, 64) and bias.shape == (3,) and maps.dtype == np.float64
    reference = _w_times_h(mini, layer, images.clone(), classes).numpy()
    np.testing.assert_allclose(maps, np.kron(reference, np.ones((1, 4, 4))) / 16, rtol=1e-12, atol=1e-15)
    with torch.no_grad():
        logits = mini(images)[torch.arange(3), classes].numpy()
    np.testing.assert_allclose(maps.sum((1, 2)) + bias, logits, rtol=1e-11, atol=1e-11)
    assert maps.min() < 0  # unclipped
    assert torch.equal(x, images)


def test_spread_keeps_sums_on_uneven_grids() -> None:
    torch.manual_seed(1)
    maps = torch.randn(2, 7, 5, dtype=torch.float64)
    out = spread(maps, (64, 33))
    assert out.shape == (2, 64, 33)
    torch.testing.assert_close(out.sum((1, 2)), maps.sum((1, 2)), rtol=1e-13, atol=1e-13)
    # a pixel inside one cell holds that cell's value over the pixels it covers
    assert out[0, 0, 0].item() == pytest.approx(maps[0, 0, 0].item() / ((64 / 7) * (33 / 5)), rel=1e-13)


def test_metrics_of_pytorch_grad_cam_work_unchanged(mini: nn.Module, images: torch.Tensor) -> None:
    x = images.float()
    model = pw.load_model("mini_vgg_bn").eval()
    targets = _targets([1, 2, 3])
    unit = PiecewiseAffineCAM(model, [model.get_submodule("features.20")])(input_tensor=x, targets=targets)
    change = CamMultImageConfidenceChange()(x, unit, targets, model)
    with torch.no_grad():
        expected = (model(x * torch.from_numpy(unit)[:, None]) - model(x))[torch.arange(3), [1, 2, 3]]
    np.testing.assert_allclose(change, expected.numpy(), rtol=1e-5, atol=1e-5)
    overlay = show_cam_on_image(x[0].permute(1, 2, 0).numpy(), unit[0], use_rgb=True)
    assert overlay.shape == (64, 64, 3) and overlay.dtype == np.uint8

    # ROAD ranks pixels only: the signed maps give what any map with their ranking gives
    maps, _ = PiecewiseAffineCAM(model, [model.get_submodule("features.20")], signed=True)(
        input_tensor=x, targets=targets)
    ranked_alike = (maps - maps.min()) / (maps.max() - maps.min()) * 0.5 + 0.25
    scores = []
    for cams in (maps, ranked_alike):
        torch.manual_seed(0)  # the imputer's noise
        scores.append(ROADMostRelevantFirst(percentile=70)(x, cams, targets, model))
    np.testing.assert_array_equal(scores[0], scores[1])
    assert np.isfinite(scores[0]).all()


def test_the_model_is_left_as_found(images: torch.Tensor) -> None:
    model = pw.load_model("mini_vgg_bn").double().train()
    cam = PiecewiseAffineCAM(model, [model.get_submodule("features.20")])
    assert all(m.training for m in model.modules())  # pytorch-grad-cam's CAMs would have called model.eval()
    with pytest.raises(ValueError, match=r"model.eval\(\)"):
        cam(input_tensor=images, targets=None)
    assert all(m.training for m in model.modules())
    model.eval()
    cam(input_tensor=images, targets=None)
    assert all(p.grad is None for p in model.parameters())


def test_clear_errors(mini: nn.Module, images: torch.Tensor) -> None:
    layer = mini.get_submodule("features.20")
    with pytest.raises(ValueError, match="target_layers holds modules that are not submodules"):
        PiecewiseAffineCAM(mini, [nn.ReLU()])
    with pytest.raises(TypeError, match="target_layers must be a non-empty list"):
        PiecewiseAffineCAM(mini, layer)
    with pytest.raises(ValueError, match="signed=True needs one target layer"):
        PiecewiseAffineCAM(mini, [layer, mini.get_submodule("features.13")], signed=True)
    cam = PiecewiseAffineCAM(mini, [layer])
    with pytest.raises(TypeError, match="ClassifierOutputTarget"):
        cam(input_tensor=images, targets=[ClassifierOutputSoftmaxTarget(1)] * 3)
    with pytest.raises(ValueError, match="targets has 2 entries for a batch of 3"):
        cam(input_tensor=images, targets=_targets([1, 2]))
    with pytest.raises(ValueError, match="eigen_smooth"):
        cam(input_tensor=images, targets=None, eigen_smooth=True)
    with pytest.raises(ValueError, match="aug_smooth"):
        PiecewiseAffineCAM(mini, [layer], signed=True)(input_tensor=images, targets=None, aug_smooth=True)
