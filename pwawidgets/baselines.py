"""Baselines next to the exact contributions: Grad-CAM, gradients, CAM variants and FullGrad, one interface.

``attribute(method, model, inputs, target, layer)`` returns a signed ``(B, H, W)`` tensor for every method in
:data:`METHODS`: no forced ReLU, no min-max; the caller picks the sign view and the normalisation
(:mod:`pwawidgets.viz`). What differs between methods is recorded in each :class:`Method`:

- ``grid``: ``"layer"`` maps live on the layer's grid (``H_l x W_l``; resize them with :func:`resize_maps`),
  ``"input"`` maps come at the input's size (pytorch-grad-cam upsamples them itself);
- ``scale``: ``"score"`` maps are on the class score's scale (``ours`` sums to ``score - bias``),
  ``"gradient"`` maps are derivatives, ``"unit"`` maps were rectified and min-max normalised to [0, 1] per
  image by pytorch-grad-cam (its fixed convention: they are not signed and their values compare only within
  one image).

Targets: one class per example, read by the package's one parser (:func:`pwawidgets.calls.parse_targets`) from
the logits of the forward pass each method makes anyway (no extra pass). Layers: None means ``"input"``; the
methods that cannot work at the input (the CAM family) refuse None and name the model's presets.

Grad-CAM comes from our own decomposition: ``decompose(..., keep_gradients=True)`` already holds the layer
tensors ``A`` and gradients ``dS/dA`` of every requested layer after one forward pass, so
:func:`gradcam_from` gives Grad-CAM at every layer without another pass:
``alpha_k = mean_ij dS/dA_k(i, j)``, ``map = sum_k alpha_k A_k`` (``relu=True`` for the published ReLU).
It equals Captum's ``LayerGradCam(..., relu_attributions=False)`` on the same module (tested).

Precision: every method here runs with TF32 off (:func:`pwawidgets.exact_math`), as the decomposition does. On
Ampere/Hopper GPUs PyTorch otherwise runs float32 convolutions in TF32: measured on an H200 with a random VGG-11,
Captum's Grad-CAM then differed from the float32 one by 1-7 % of its maximum, enough to blur a comparison.

In-place ReLU, measured with torchvision's VGG/ResNet (``ReLU(inplace=True)``):

- on a ReLU module or a ResNet stage (the presets), Captum, pytorch-grad-cam and our capture all see the same
  tensor: nothing later overwrites it;
- on a *convolution followed by an in-place ReLU*, Captum hands the network a clone and keeps the
  convolution's real output (negative values included), as our capture does; pytorch-grad-cam keeps
  ``output.cpu().detach()``, which on a CPU shares memory with the tensor the ReLU then overwrites: on a CPU
  its CAMs there mix the *rectified* activations with the gradient of the *convolution's* output (neither
  layer), on a GPU (where ``.cpu()`` copies) they use the real output (both checked, the GPU on an H200). Use
  ReLU outputs (the presets) as target layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .calls import Target, check_one_per_example, logits_of, parse_targets
from .core import Decomposition, decompose, resize_maps
from .layers import INPUT, check_model, layer_presets, resolve_one
from .placement import model_device, model_dtype
from .precision import exact_math
from .preprocessing import check_inputs_fit

__all__ = [
    "FROM_DECOMPOSITION",
    "METHODS",
    "Method",
    "attribute",
    "from_decomposition",
    "gradcam",
    "gradcam_from",
    "gradient_from",
    "resize_maps",
]


@dataclass(frozen=True)
class Method:
    """One attribution method: how to compute it and how to read its values."""

    name: str
    label: str
    compute: Callable[[nn.Module, torch.Tensor, Target, str], torch.Tensor]  # model, inputs, target, layer
    grid: str  # "layer" or "input"
    scale: str  # "score", "gradient" or "unit"
    source: str  # "pwawidgets", "captum" or "pytorch-grad-cam"
    description: str
    accepts_input: bool = True  # can run at layer "input"


# ------------------------------------------------------------------------------------------------ helpers


def feature_layer(model: nn.Module, layer: str | None, what: str) -> str:
    """``layer`` for a method that cannot work at the input: None and ``"input"`` are refused, naming the presets."""
    if layer is not None and layer != INPUT:
        return layer
    blocks = list(layer_presets(model).get("blocks", {}))
    hint = (f"e.g. one of the preset blocks {blocks} (pwawidgets.layer_presets(model))" if blocks
            else "a module name from model.named_modules() (this model has no presets)")
    raise ValueError(f"{what} needs a feature layer, not the input: pass layer=..., {hint}")


def _module(model: nn.Module, layer: str) -> nn.Module:
    """The module a layer name refers to, for libraries that hook modules (Captum, pytorch-grad-cam)."""
    spec = resolve_one(model, layer)
    if spec.module is None:
        raise ValueError(f"{layer!r} is the input, not a module")
    if spec.call is not None:
        raise ValueError(f"{layer!r} names one call of a module that runs several times; Captum and "
                         "pytorch-grad-cam hook whole modules: pick a module that runs once (e.g. a preset)")
    return model.get_submodule(spec.module)


class _Targeted(nn.Module):
    """The model, whose first call (the forward pass the library makes anyway) reads the targets from its logits,
    one class per example; later calls (Score-CAM's masked copies) keep them. ``select``: return the targets'
    logits ``(B, 1)`` (for Captum, with ``target=0``) instead of all of them."""

    def __init__(self, model: nn.Module, target: Target, select: bool):
        super().__init__()
        self.model, self.target, self.select = model, target, select
        self.targets: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = logits_of(self.model(x))
        if self.targets is None:
            targets = parse_targets(self.target, logits.detach(), one_per_example=True)[0][:, 0]
            if not bool(((targets >= 0) & (targets < logits.shape[1])).all()):  # a target on an accelerator
                raise ValueError(f"target classes must lie in [0, {logits.shape[1] - 1}]")
            self.targets = targets
        return logits.gather(1, self.targets[:, None]) if self.select else logits


def _spatial(t: torch.Tensor, what: str) -> torch.Tensor:
    """``(B, C, H, W)`` summed over channels to ``(B, H, W)``."""
    if t.dim() != 4:
        raise ValueError(f"{what} has shape {tuple(t.shape)}: no spatial map (need B x C x H x W)")
    return t.sum(dim=1)


@contextlib.contextmanager
def _as_found(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run a library call in full float32 precision (TF32 off, as :func:`~pwawidgets.decompose` does) and leave
    the model as found: every submodule's mode (pytorch-grad-cam calls ``eval()``) and parameter ``.grad``
    (it calls ``backward``)."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        with exact_math(device):
            yield
    finally:
        for p, g in grads:
            p.grad = g
        for m, training in modes:
            m.training = training


# --------------------------------------------------------------------------- maps from one decomposition


def gradcam_from(decomposition: Decomposition, layer: str, relu: bool = False) -> torch.Tensor:
    """Grad-CAM at ``layer`` from a decomposition made with ``keep_gradients=True``: ``(B, [k,] H_l, W_l)``.

    ``alpha_k = mean_ij w_k(i, j)`` (spatial mean of the gradient), ``map = sum_k alpha_k h_k``; ``relu=True``
    applies the published ReLU to the map.
    """
    if decomposition.gradients is None:
        raise ValueError("Grad-CAM needs the gradients: decompose(..., keep_gradients=True)")
    grads = decomposition.gradient(layer)
    acts = decomposition.activation(layer)
    if acts.dim() != 4:
        raise ValueError(f"layer {layer!r} has shape {tuple(acts.shape)}: Grad-CAM needs B x C x H x W")
    if decomposition.per_class:
        acts = acts.unsqueeze(1)
    alpha = grads.mean(dim=(-2, -1), keepdim=True)
    cam = (alpha * acts).sum(dim=-3)
    return cam.clamp_min(0) if relu else cam


def gradient_from(decomposition: Decomposition, layer: str) -> torch.Tensor:
    """The gradient ``w = dS/dh`` at ``layer`` summed over channels: ``(B, [k,] H_l, W_l)``."""
    if decomposition.gradients is None:
        raise ValueError("the gradient map needs decompose(..., keep_gradients=True)")
    grads = decomposition.gradient(layer)
    lead = 2 if decomposition.per_class else 1
    if grads.dim() != lead + 3:
        raise ValueError(f"layer {layer!r} has gradients of shape {tuple(grads.shape)}: no spatial map")
    return grads.sum(dim=lead)


FROM_DECOMPOSITION: tuple[str, ...] = ("ours", "gradcam", "gradcam_relu", "gradient")


def from_decomposition(decomposition: Decomposition, method: str, layer: str) -> torch.Tensor:
    """Maps of one of :data:`FROM_DECOMPOSITION` at ``layer``, read from a decomposition, no new pass:
    ``(B, [k,] H_l, W_l)``, with the class axis of a decomposition that has one (:attr:`Decomposition.class_axis`)."""
    if not isinstance(decomposition, Decomposition):
        raise TypeError(f"from_decomposition reads a Decomposition (from pwawidgets.decompose), got "
                        f"{type(decomposition).__name__}")
    if method == "ours":
        return decomposition.pixel_map(layer)
    if method == "gradcam":
        return gradcam_from(decomposition, layer)
    if method == "gradcam_relu":
        return gradcam_from(decomposition, layer, relu=True)
    if method == "gradient":
        return gradient_from(decomposition, layer)
    raise ValueError(f"{method!r} cannot be read from a decomposition; one of {', '.join(FROM_DECOMPOSITION)}")


# --------------------------------------------------------------------------------------------- methods


def _one_class(dec: Decomposition) -> Decomposition:
    return dec.column(0) if dec.per_class else dec  # a "top1" or (B, 1) target: one class, no class axis


def _ours(model: nn.Module, x: torch.Tensor, target: Target, layer: str) -> torch.Tensor:
    return _one_class(decompose(model, x, target, [layer])).pixel_map(layer)


def gradcam(
    model: nn.Module, inputs: torch.Tensor, target: Target = None, layer: str | None = None, relu: bool = False
) -> torch.Tensor:
    """Grad-CAM at a feature layer (None is refused: Grad-CAM needs one), signed unless ``relu``:
    ``(B, [k,] H_l, W_l)``.

    ``target`` as in :func:`pwawidgets.decompose` (a ``(B, k)`` tensor gives ``k`` maps per example).
    """
    layer = feature_layer(model, layer, "Grad-CAM")
    dec = decompose(model, inputs, target, [layer], keep_gradients=True)
    return gradcam_from(dec, layer, relu=relu)


def _gradcam_one(model: nn.Module, x: torch.Tensor, target: Target, layer: str) -> torch.Tensor:
    return gradcam_from(_one_class(decompose(model, x, target, [layer], keep_gradients=True)), layer)


def _captum_gradcam(model: nn.Module, x: torch.Tensor, target: Target, layer: str) -> torch.Tensor:
    from captum.attr import LayerGradCam

    with _as_found(model, x.device):
        net = _Targeted(model, target, select=True)
        out = LayerGradCam(net, _module(model, layer)).attribute(x, target=0, relu_attributions=False)
    return _spatial(out, f"Grad-CAM at {layer!r}")


def _gradient(model: nn.Module, x: torch.Tensor, target: Target, layer: str) -> torch.Tensor:
    from captum.attr import LayerGradientXActivation, Saliency

    with _as_found(model, x.device):
        net = _Targeted(model, target, select=True)
        if layer == INPUT:
            out = Saliency(_fresh_input(net)).attribute(x.clone().requires_grad_(True), target=0, abs=False)
        else:
            lga = LayerGradientXActivation(net, _module(model, layer), multiply_by_inputs=False)
            out = lga.attribute(x, target=0)
    return _spatial(out, f"the gradient at {layer!r}")


def _gradient_x_input(model: nn.Module, x: torch.Tensor, target: Target, layer: str) -> torch.Tensor:
    from captum.attr import InputXGradient, LayerGradientXActivation

    with _as_found(model, x.device):
        net = _Targeted(model, target, select=True)
        if layer == INPUT:
            out = InputXGradient(_fresh_input(net)).attribute(x.clone().requires_grad_(True), target=0)
        else:
            out = LayerGradientXActivation(net, _module(model, layer)).attribute(x, target=0)
    return _spatial(out, f"gradient x input at {layer!r}")


def _fresh_input(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model called on a copy of its input, so that one that edits its input in place still has a gradient."""
    return lambda t: model(t.clone())


def _bias_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None]


def _grad_cam_library(class_name: str) -> Callable[[nn.Module, torch.Tensor, Target, str], torch.Tensor]:
    def compute(model: nn.Module, x: torch.Tensor, target: Target, layer: str) -> torch.Tensor:
        import pytorch_grad_cam

        cls = getattr(pytorch_grad_cam, class_name)
        if class_name == "FullGrad":
            if not _bias_layers(model):
                raise ValueError("FullGrad needs Conv2d or BatchNorm2d layers with a bias; this model has none")
            target_layers: list[nn.Module] = []
        else:
            target_layers = [_module(model, layer)]
        net = _Targeted(model, target, select=False)
        # each example's class, read when the library calls it, after the first forward pass has set the targets
        targets = [lambda output, i=i: output[net.targets[i]] for i in range(x.shape[0])]
        with _as_found(model, x.device):
            cam = cls(net, target_layers)
            try:
                out = cam(x, targets)
            finally:
                cam.activations_and_grads.release()
        return torch.as_tensor(out, dtype=x.dtype, device=x.device)

    return compute


_UNIT = "rectified and min-max normalised to [0, 1] per image by pytorch-grad-cam, at the input's size"

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ours", "contributions (ours)", _ours, "layer", "score", "pwawidgets",
               "exact contributions w.h summed over channels; score = sum + bias"),
        Method("gradcam", "Grad-CAM", _gradcam_one, "layer", "score", "pwawidgets",
               "Grad-CAM from one decomposition pass: sum_k mean(dS/dA_k) A_k, signed (no ReLU)", accepts_input=False),
        Method("gradcam_captum", "Grad-CAM (Captum)", _captum_gradcam, "layer", "score", "captum",
               "Captum LayerGradCam(relu_attributions=False); equals 'gradcam'", accepts_input=False),
        Method("gradient", "gradient", _gradient, "layer", "gradient", "captum",
               "dS/dh summed over channels (Captum Saliency(abs=False) at the input, "
               "LayerGradientXActivation(multiply_by_inputs=False) at a layer)"),
        Method("gradient_x_input", "gradient x input", _gradient_x_input, "layer", "score", "captum",
               "Captum InputXGradient / LayerGradientXActivation summed over channels: the same numbers as "
               "'ours', computed by Captum"),
        Method("gradcam_plusplus", "Grad-CAM++", _grad_cam_library("GradCAMPlusPlus"), "input", "unit",
               "pytorch-grad-cam", f"Grad-CAM++, {_UNIT}", accepts_input=False),
        Method("xgradcam", "XGrad-CAM", _grad_cam_library("XGradCAM"), "input", "unit", "pytorch-grad-cam",
               f"XGrad-CAM, {_UNIT}", accepts_input=False),
        Method("hirescam", "HiResCAM", _grad_cam_library("HiResCAM"), "input", "unit", "pytorch-grad-cam",
               f"HiResCAM (gradient x activation, summed over channels), {_UNIT}", accepts_input=False),
        Method("layercam", "LayerCAM", _grad_cam_library("LayerCAM"), "input", "unit", "pytorch-grad-cam",
               f"LayerCAM, {_UNIT}", accepts_input=False),
        Method("eigencam", "Eigen-CAM", _grad_cam_library("EigenCAM"), "input", "unit", "pytorch-grad-cam",
               f"Eigen-CAM (first principal component, ignores the class), {_UNIT}",
               accepts_input=False),
        Method("scorecam", "Score-CAM", _grad_cam_library("ScoreCAM"), "input", "unit", "pytorch-grad-cam",
               f"Score-CAM (one forward pass per channel: slow on a CPU), {_UNIT}", accepts_input=False),
        Method("fullgrad", "FullGrad", _grad_cam_library("FullGrad"), "input", "unit", "pytorch-grad-cam",
               f"FullGrad (|grad x input| plus |bias x grad| of every Conv2d/BatchNorm2d bias; the layer "
               f"is ignored), {_UNIT}"),
    )
}


def attribute(
    method: str, model: nn.Module, inputs: torch.Tensor, target: Target = None, layer: str | None = None
) -> torch.Tensor:
    """The map of ``method`` (a key of :data:`METHODS`) for one class per example: ``(B, H, W)``, signed.

    Args:
        method: e.g. ``"ours"``, ``"gradcam"``, ``"gradient"``, ``"fullgrad"``; see :data:`METHODS`.
        model: a classifier in eval mode (left as found: mode and parameter gradients).
        inputs: a ``(B, 3, H, W)`` batch, e.g. from :func:`pwawidgets.load_image`.
        target: one class per example: an int, one int per example, ``"top1"``, a ``(B, 1)`` tensor, or None for
            the predicted class (read from the logits of the method's own forward pass).
        layer: a layer name as in :func:`pwawidgets.decompose` (``"input"``, ``"conv4"``, ``"layer3"``, a
            module name); None means ``"input"``, which the CAM family (``accepts_input=False``) refuses: name a
            layer, e.g. a preset block (:func:`pwawidgets.layer_presets`).
    Returns:
        ``(B, H_l, W_l)`` on the layer's grid (``METHODS[method].grid == "layer"``) or ``(B, H, W)`` at the
        input's size (``"input"``), on the model's device.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attribution methods need gradients: call attribute outside torch.inference_mode()")
    model = check_model(model)
    spec = METHODS[method]
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
        raise ValueError("inputs must be a (B, 3, H, W) float tensor; see pwawidgets.load_image")
    if not bool(torch.isfinite(inputs).all()):
        bad = (~torch.isfinite(inputs)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"inputs hold NaN or infinite values (examples {bad[:10]}): no map means anything there")
    check_inputs_fit(model, inputs)
    x = inputs.detach().to(model_device(model, inputs.device), model_dtype(model, inputs.dtype))
    if x.is_inference():
        x = x.clone()
    layer = INPUT if layer is None else layer
    if not spec.accepts_input:
        layer = feature_layer(model, layer, spec.label)
    resolve_one(model, layer)  # one layer, with a clear error for presets, 'all' and unknown names
    check_one_per_example(target, "attribute")
    # a copy: a model that edits its input in place must not edit the caller's tensor
    return spec.compute(model, x.clone(), target, layer).detach()
