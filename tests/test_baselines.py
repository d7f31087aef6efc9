"""Baselines: our one-pass Grad-CAM against Captum, the common interface, pytorch-grad-cam methods."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import no_inplace
from torch import nn

import pwawidgets as pw
from pwawidgets import baselines as B
from pwawidgets.layers import layer_presets

TARGETS = [3, 998]


def _presets(model: nn.Module) -> dict[str, str]:
    return layer_presets(model)["blocks"]


@pytest.fixture
def images64(images64: torch.Tensor) -> torch.Tensor:
    """Two 32 x 32 examples are enough here (batch = one-by-one is tested on them)."""
    return images64[:2, :, 16:48, 16:48].contiguous()


@pytest.fixture(params=["vgg11", "resnet18"])
def net(request: pytest.FixtureRequest) -> nn.Module:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("relu", [False, True])
def test_gradcam_from_equals_captum_layergradcam(net: nn.Module, images64: torch.Tensor, relu: bool) -> None:
    from captum.attr import LayerGradCam

    target = torch.tensor(TARGETS)
    dec = pw.decompose(net, images64, target, ["input", "blocks"], keep_gradients=True)
    for alias, module in _presets(net).items():
        ours = B.gradcam_from(dec, alias, relu=relu)
        captum = LayerGradCam(net, net.get_submodule(module)).attribute(
            images64, target=target, relu_attributions=relu)[:, 0]
        assert ours.shape == captum.shape
        scale = float(B.gradcam_from(dec, alias).abs().max())  # the unrectified map's scale
        assert scale > 0
        torch.testing.assert_close(ours, captum.detach(), atol=1e-12 * scale, rtol=1e-9)


def test_gradcam_per_class_equals_single_calls(vgg11: nn.Module, images64: torch.Tensor) -> None:
    top = torch.tensor([[3, 7], [998, 0]])
    dec = pw.decompose(vgg11, images64, top, ["conv2", "conv4"], keep_gradients=True)
    for layer in ("conv2", "conv4"):
        both = B.gradcam_from(dec, layer)
        assert both.shape[:2] == (2, 2)
        for j in range(2):
            single = B.gradcam(vgg11, images64, top[:, j], layer)
            torch.testing.assert_close(both[:, j], single, rtol=1e-9, atol=1e-15)


def test_inplace_relu_what_each_library_sees(vgg11: nn.Module, images64: torch.Tensor) -> None:
    """Captum on a ReLU(inplace) module = on a non-inplace copy = ours; on the conv before it, the conv's output."""
    from captum.attr import LayerGradCam

    target = torch.tensor(TARGETS)
    copy = no_inplace(vgg11)
    relu_name = _presets(vgg11)["conv3"]
    conv_name = f"features.{int(relu_name.split('.')[1]) - 1}"
    assert isinstance(vgg11.get_submodule(conv_name), nn.Conv2d)
    assert vgg11.get_submodule(relu_name).inplace
    dec = pw.decompose(vgg11, images64, target, [conv_name, "conv3"], keep_gradients=True)
    on_relu = LayerGradCam(vgg11, vgg11.get_submodule(relu_name)).attribute(images64, target)[:, 0].detach()
    on_copy = LayerGradCam(copy, copy.get_submodule(relu_name)).attribute(images64, target)[:, 0].detach()
    on_conv = LayerGradCam(vgg11, vgg11.get_submodule(conv_name)).attribute(images64, target)[:, 0].detach()
    torch.testing.assert_close(on_relu, on_copy, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(B.gradcam_from(dec, "conv3"), on_relu, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(B.gradcam_from(dec, conv_name), on_conv, rtol=1e-9, atol=1e-15)
    assert (dec.activations[conv_name] < 0).any()  # the conv output really has negative values
    assert not torch.allclose(on_conv, on_relu)  # two different layers, two different maps


def test_pytorch_grad_cam_mixes_layers_on_a_cpu_before_inplace_relu(vgg11: nn.Module,
                                                                   images64: torch.Tensor) -> None:
    """Documented pitfall: on a conv followed by ReLU(inplace), pytorch-grad-cam's activations are rectified."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    conv_name = f"features.{int(_presets(vgg11)['conv3'].split('.')[1]) - 1}"
    dec = pw.decompose(vgg11, images64, torch.tensor(TARGETS), [conv_name, "conv3"], keep_gradients=True)
    cam = GradCAM(vgg11, [vgg11.get_submodule(conv_name)])
    try:
        cam(images64, [ClassifierOutputTarget(c) for c in TARGETS])
        acts = cam.activations_and_grads.activations[0]
        grads = cam.activations_and_grads.gradients[0]
    finally:
        cam.activations_and_grads.release()
        for p in vgg11.parameters():
            p.grad = None
    torch.testing.assert_close(acts, dec.activations["conv3"])  # rectified: the ReLU's output
    torch.testing.assert_close(grads, dec.gradients[conv_name])  # but the gradient of the conv's output
    assert not torch.allclose(acts, dec.activations[conv_name])


def test_ours_and_gradient_x_input_agree(net: nn.Module, images64: torch.Tensor) -> None:
    """The contributions are gradient x input: Captum's InputXGradient/LayerGradientXActivation give them too."""
    target = torch.tensor(TARGETS)
    for layer in ["input", list(_presets(net))[2]]:
        ours = B.attribute("ours", net, images64, target, layer)
        captum = B.attribute("gradient_x_input", net, images64, target, layer)
        torch.testing.assert_close(ours, captum, rtol=1e-9, atol=1e-12 * float(captum.abs().max()))


def test_gradient_is_the_channel_summed_derivative(vgg11: nn.Module, images64: torch.Tensor) -> None:
    target = torch.tensor(TARGETS)
    x = images64.clone().requires_grad_(True)
    scores = vgg11(x).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(scores, x)
    torch.testing.assert_close(B.attribute("gradient", vgg11, images64, target, "input"), grad.sum(1))
    dec = pw.decompose(vgg11, images64, target, ["conv4"], keep_gradients=True)
    at_layer = B.attribute("gradient", vgg11, images64, target, "conv4")
    torch.testing.assert_close(at_layer, dec.gradients["conv4"].sum(1))
    torch.testing.assert_close(B.gradient_from(dec, "conv4"), at_layer)


def test_attribute_batch_equals_one_by_one(resnet18: nn.Module, images64: torch.Tensor) -> None:
    target = torch.tensor(TARGETS)
    for method, layer in (("ours", "layer3"), ("gradcam_captum", "layer2")):
        batch = B.attribute(method, resnet18, images64, target, layer)
        for i in range(2):
            single = B.attribute(method, resnet18, images64[i:i + 1], int(target[i]), layer)
            torch.testing.assert_close(batch[i:i + 1], single, rtol=1e-9, atol=1e-15)


def test_default_target_is_the_prediction(vgg11: nn.Module, images64: torch.Tensor) -> None:
    predicted = vgg11(images64).argmax(1)
    for method in ("gradcam", "gradcam_captum", "hirescam"):
        torch.testing.assert_close(B.attribute(method, vgg11, images64, None, "conv5"),
                                   B.attribute(method, vgg11, images64, predicted, "conv5"), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B.attribute("gradcam", vgg11, images64, None, "conv5"),
                               B.gradcam(vgg11, images64, predicted, "conv5"))


def test_layer_none_means_the_input_and_cams_refuse_it_naming_the_presets(vgg11: nn.Module,
                                                                          images64: torch.Tensor) -> None:
    for method in ("ours", "gradient", "gradient_x_input"):
        torch.testing.assert_close(B.attribute(method, vgg11, images64, 1), B.attribute(method, vgg11, images64, 1,
                                                                                        "input"))
    assert B.attribute("ours", vgg11, images64, 1).shape == (2, 32, 32)
    for method in [m for m, spec in B.METHODS.items() if not spec.accepts_input]:
        with pytest.raises(ValueError, match=r"needs a feature layer.*conv5.*layer_presets"):
            B.attribute(method, vgg11, images64, 1)
    with pytest.raises(ValueError, match=r"Grad-CAM needs a feature layer.*conv1"):
        B.gradcam(vgg11, images64, 1)


@pytest.mark.parametrize("target", [None, 4, [3, 1]])
def test_targets_cost_no_extra_forward_pass(small_cnn: nn.Module, target) -> None:
    """Each method reads its targets from the logits of its own forward pass (it used to run one or two more)."""
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    calls: list[int] = []
    handle = small_cnn.register_forward_hook(lambda *a: calls.append(1))
    try:
        for method in ("ours", "gradcam", "gradcam_captum", "gradient", "gradient_x_input", "gradcam_plusplus",
                       "hirescam", "fullgrad"):
            calls.clear()
            B.attribute(method, small_cnn, x, target, "5")
            assert len(calls) == 1, method
    finally:
        handle.remove()


def test_hirescam_is_our_map_rectified_and_rescaled(vgg11: nn.Module, images64: torch.Tensor) -> None:
    """HiResCAM = sum_k grad * activation = our layer map; pytorch-grad-cam then rectifies and min-max scales."""
    target = torch.tensor(TARGETS)
    library = B.attribute("hirescam", vgg11, images64, target, "conv4")
    ours = B.attribute("ours", vgg11, images64, target, "conv4").clamp_min(0)
    up = F.interpolate(ours[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    expected = (up - lo) / (hi - lo)
    assert library.shape == (2, 32, 32)
    torch.testing.assert_close(library, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", [m for m, spec in B.METHODS.items() if spec.source == "pytorch-grad-cam"])
def test_grad_cam_library_methods(method: str, small_cnn: nn.Module) -> None:
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    small_cnn.train()
    small_cnn.eval()
    out = B.attribute(method, small_cnn, x, [1, 4], layer="5")
    assert out.shape == (2, 16, 16)
    assert out.min() >= 0 and out.max() <= 1 + 1e-6  # the library's [0, 1] convention
    assert out.amax(dim=(1, 2)).min() > 0.99
    assert all(p.grad is None for p in small_cnn.parameters())  # left as found
    assert not small_cnn.training


def test_fullgrad_on_torchvision_models(net: nn.Module, images64: torch.Tensor) -> None:
    out = B.attribute("fullgrad", net, images64[:1], 3)
    assert out.shape == (1, 32, 32) and torch.isfinite(out).all()
    assert all(p.grad is None for p in net.parameters())


def test_fullgrad_needs_biases() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match="FullGrad needs"):
        B.attribute("fullgrad", model, torch.randn(1, 3, 8, 8), 0)


def test_clear_errors(vgg11: nn.Module, images64: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="unknown method 'gradcamm'.*gradcam"):
        B.attribute("gradcamm", vgg11, images64)
    with pytest.raises(ValueError, match="needs a feature layer"):
        B.attribute("gradcam_plusplus", vgg11, images64, 0, "input")
    with pytest.raises(ValueError, match="one class per example"):
        B.attribute("ours", vgg11, images64, torch.zeros(2, 2, dtype=torch.long), "conv2")
    dec = pw.decompose(vgg11, images64, 0, ["conv2"])
    with pytest.raises(ValueError, match="keep_gradients=True"):
        B.gradcam_from(dec, "conv2")
    with pytest.raises(ValueError, match="cannot be read"):
        B.from_decomposition(dec, "fullgrad", "conv2")


def test_resize_maps_keeps_values() -> None:
    maps = torch.arange(8.0).reshape(2, 2, 2)
    assert B.resize_maps(maps, 2) is maps
    big = B.resize_maps(maps, (4, 6))
    assert big.shape == (2, 4, 6)
    assert big.min() == 0 and big.max() == 7


def test_library_calls_run_without_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Captum and pytorch-grad-cam run inside exact_math for the inputs' device, as decompose does (TF32 would blur
    them on a GPU). On this CPU the flags are left alone; exact_math itself is tested for CUDA in test_precision."""
    seen: list[object] = []
    devices: list[object] = []
    real = B.exact_math

    def recording(device=None):
        devices.append(device)
        return real(device)

    monkeypatch.setattr(B, "exact_math", recording)

    def flag() -> object:
        cudnn = torch.backends.cudnn
        return cudnn.conv.fp32_precision if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision") \
            else cudnn.allow_tf32

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(flag())
            return self.head(self.relu(self.conv(x)))

    with pw.exact_math("cpu"):
        exact = flag()
    before = flag()
    model = Probe().eval()
    for method in ("gradcam_captum", "gradient", "hirescam"):
        seen.clear()
        devices.clear()
        B.attribute(method, model, torch.randn(1, 3, 8, 8), 1, "relu")
        assert seen and all(s == exact for s in seen), method
        assert devices == [torch.device("cpu")], method
    assert flag() == before  # restored


def test_library_calls_leave_every_submodule_mode_and_the_output_streams_alone(small_cnn: nn.Module) -> None:
    import sys

    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    small_cnn[13].train()  # a model whose parts differ in mode (dropout on, the rest in eval)
    streams = []
    handle = small_cnn[0].register_forward_hook(lambda *a: streams.append((sys.stdout, sys.stderr)))
    try:
        for method in ("gradcam_plusplus", "gradient", "gradcam_captum"):
            B.attribute(method, small_cnn, x, 1, layer="5")
    finally:
        handle.remove()
        modes = [m.training for m in small_cnn.modules()]
        small_cnn.eval()
    assert modes == [i == 14 for i in range(len(modes))]  # index 0 is the Sequential itself: only dropout trains
    assert all(out is sys.stdout and err is sys.stderr for out, err in streams)  # nothing redirected


def test_one_layer_and_one_class_per_example(vgg11: nn.Module, images64: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="names several layers"):
        B.attribute("gradcam_captum", vgg11, images64[:1], 0, layer="all")
    for method in ("ours", "gradient", "hirescam"):
        for target in ("top2", torch.zeros(1, 2, dtype=torch.long), [[1, 2]]):
            with pytest.raises(ValueError, match="one class per example.*from_decomposition"):
                B.attribute(method, vgg11, images64[:1], target, "conv2")
    # one class given as "top1" or (B, 1) is one class per example
    top = vgg11(images64[:1]).argmax(1)
    for target in ("top1", top[:, None]):
        torch.testing.assert_close(B.attribute("ours", vgg11, images64[:1], target, "conv2"),
                                   B.attribute("ours", vgg11, images64[:1], top, "conv2"))


def test_attribute_checks_targets_dtypes_and_leaves_inputs_alone(small_cnn: nn.Module) -> None:
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for method in ("gradient", "gradcam_plusplus", "ours"):
        with pytest.raises(ValueError, match=r"\[0, 4\]"):
            B.attribute(method, small_cnn, x, 99, layer="5")
    with pytest.raises(TypeError, match="booleans"):
        B.attribute("gradient", small_cnn, x, True, layer="5")
    out = B.attribute("ours", small_cnn.float(), x, 1, layer="5")  # float64 inputs, float32 model
    small_cnn.double()
    assert out.dtype == torch.float32
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside torch.inference_mode"):
        B.attribute("gradient", small_cnn, x, 1)
    with pytest.raises(TypeError, match="reads a Decomposition"):
        B.from_decomposition({"input": x}, "ours", "input")

    class InPlace(nn.Module):
        def __init__(self, body: nn.Module):
            super().__init__()
            self.body = body

        def forward(self, t):
            t.mul_(2.0)
            return self.body(t)

    before = x.clone()
    B.attribute("gradient", InPlace(small_cnn).eval(), x, None, layer="input")
    assert torch.equal(x, before)
