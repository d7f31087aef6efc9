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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .core import Decomposition, decompose, resize_maps
from .layers import INPUT, check_model, layer_presets, resolve_one
from .placement import model_device, model_dtype
from .precision import exact_math
from .preprocessing import check_inputs_fit

Target = int | Sequence[int] | torch.Tensor | None

__all__ = [
    "METHODS",
    "Method",
    "attribute",
    "default_layer",
    "gradcam",
    "gradcam_from",
    "gradient_from",
    "maps_from",
    "resize_maps",
]


@dataclass(frozen=True)
class Method:
    """One attribution method: how to compute it and how to read its values."""

    name: str
    label: str
    compute: Callable[[nn.Module, torch.Tensor, torch.Tensor, str], torch.Tensor]
    grid: str  # "layer" or "input"
    scale: str  # "score", "gradient" or "unit"
    source: str  # "pwawidgets", "captum" or "pytorch-grad-cam"
    default: str  # default layer: "input" or "last" (the last preset block)
    description: str
    accepts_input: bool = True  # can run at layer "input"


# ------------------------------------------------------------------------------------------------ helpers


def default_layer(model: nn.Module, which: str = "last") -> str:
    """``"input"``, or the last preset block of the model (``conv5`` on a VGG, ``layer4`` on a ResNet)."""
    if which == INPUT:
        return INPUT
    blocks = layer_presets(model).get("blocks", {})
    if not blocks:
        raise ValueError("this model has no preset blocks: name a layer, e.g. a module from model.named_modules()")
    return list(blocks)[-1]


def _module(model: nn.Module, layer: str) -> nn.Module:
    """The module a layer name refers to, for libraries that hook modules (Captum, pytorch-grad-cam)."""
    spec = resolve_one(model, layer)
    if spec.module is None:
        raise ValueError(f"{layer!r} is the input, not a module")
    if spec.call is not None:
        raise ValueError(f"{layer!r} names one call of a module that runs several times; Captum and "
                         "pytorch-grad-cam hook whole modules: pick a module that runs once (e.g. a preset)")
    return model.get_submodule(spec.module)


def _targets(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """One class per example as a ``(B,)`` long tensor on ``x``'s device (None: the predicted class)."""
    batch = x.shape[0]
    if target is None:
        with torch.no_grad():
            return model(x.clone()).argmax(dim=1)
    if isinstance(target, bool) or (isinstance(target, torch.Tensor) and target.dtype == torch.bool):
        raise TypeError("target must hold integer class indices, not booleans")
    if isinstance(target, str):
        raise ValueError(f"target {target!r}: attribute() takes one class per example (an int, one int per example "
                         "or None); for the top-k classes use decompose(..., target='top5') and maps_from")
    t = torch.as_tensor(target, device=x.device)
    if t.is_floating_point():
        raise TypeError("target must hold integer class indices")
    if t.dim() == 0:
        t = t.long().expand(batch).clone()
    elif t.dim() == 1 and t.numel() == batch:
        t = t.long()
    else:
        raise ValueError(f"target of shape {tuple(t.shape)} for a batch of {batch}: attribute() takes one class per "
                         "example (for k classes at once use decompose(..., target=(B, k)) and maps_from)")
    with torch.no_grad():  # the number of classes, from one example
        n_classes = model(x[:1].clone()).shape[-1]
    if int(t.min()) < 0 or int(t.max()) >= n_classes:
        raise ValueError(f"target classes must lie in [0, {n_classes - 1}], got {t.unique().tolist()[:10]}")
    return t



def _spatial(t: torch.Tensor, what: str) -> torch.Tensor:
    """``(B, C, H, W)`` summed over channels to ``(B, H, W)``."""
    if t.dim() != 4:
        raise ValueError(f"{what} has shape {tuple(t.shape)}: no spatial map (need B x C x H x W)")
    return t.sum(dim=1)


@contextlib.contextmanager
def _as_found(model: nn.Module) -> Iterator[None]:
    """Run a library call in full float32 precision (TF32 off, as :func:`~pwawidgets.decompose` does) and leave
    the model as found: every submodule's mode (pytorch-grad-cam calls ``eval()``) and parameter ``.grad``
    (it calls ``backward``)."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        with exact_math():
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


def maps_from(decomposition: Decomposition, method: str, layer: str) -> torch.Tensor:
    """Maps of one of :data:`FROM_DECOMPOSITION` at ``layer``, read from a decomposition, no new pass."""
    if not isinstance(decomposition, Decomposition):
        raise TypeError(f"maps_from reads a Decomposition (from pwawidgets.decompose), got "
                        f"{type(decomposition).__name__}")
    if method == "ours":
        return decomposition.maps(layer)
    if method == "gradcam":
        return gradcam_from(decomposition, layer)
    if method == "gradcam_relu":
        return gradcam_from(decomposition, layer, relu=True)
    if method == "gradient":
        return gradient_from(decomposition, layer)
    raise ValueError(f"{method!r} cannot be read from a decomposition; one of {', '.join(FROM_DECOMPOSITION)}")


# --------------------------------------------------------------------------------------------- methods


def _ours(model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: str) -> torch.Tensor:
    return decompose(model, x, t, [layer]).maps(layer)


def gradcam(
    model: nn.Module, inputs: torch.Tensor, target: Target = None, layer: str | None = None, relu: bool = False
) -> torch.Tensor:
    """Grad-CAM at any layer (default: the last preset block), signed unless ``relu``: ``(B, [k,] H_l, W_l)``.

    ``target`` as in :func:`pwawidgets.decompose` (a ``(B, k)`` tensor gives ``k`` maps per example).
    """
    layer = layer or default_layer(model)
    dec = decompose(model, inputs, target, [layer], keep_gradients=True)
    return gradcam_from(dec, layer, relu=relu)


def _captum_gradcam(model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: str) -> torch.Tensor:
    from captum.attr import LayerGradCam

    with _as_found(model):
        out = LayerGradCam(model, _module(model, layer)).attribute(x, target=t, relu_attributions=False)
    return _spatial(out, f"Grad-CAM at {layer!r}")


def _gradient(model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: str) -> torch.Tensor:
    from captum.attr import LayerGradientXActivation, Saliency

    with _as_found(model):
        if layer == INPUT:
            out = Saliency(_fresh_input(model)).attribute(x.clone().requires_grad_(True), target=t, abs=False)
        else:
            lga = LayerGradientXActivation(model, _module(model, layer), multiply_by_inputs=False)
            out = lga.attribute(x, target=t)
    return _spatial(out, f"the gradient at {layer!r}")


def _gradient_x_input(model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: str) -> torch.Tensor:
    from captum.attr import InputXGradient, LayerGradientXActivation

    with _as_found(model):
        if layer == INPUT:
            out = InputXGradient(_fresh_input(model)).attribute(x.clone().requires_grad_(True), target=t)
        else:
            out = LayerGradientXActivation(model, _module(model, layer)).attribute(x, target=t)
    return _spatial(out, f"gradient x input at {layer!r}")


def _fresh_input(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model called on a copy of its input, so that one that edits its input in place still has a gradient."""
    return lambda t: model(t.clone())


def _bias_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None]


def _grad_cam_library(class_name: str) -> Callable[[nn.Module, torch.Tensor, torch.Tensor, str], torch.Tensor]:
    def compute(model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: str) -> torch.Tensor:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = getattr(pytorch_grad_cam, class_name)
        if class_name == "FullGrad":
            if not _bias_layers(model):
                raise ValueError("FullGrad needs Conv2d or BatchNorm2d layers with a bias; this model has none")
            target_layers: list[nn.Module] = []
        else:
            target_layers = [_module(model, layer)]
        targets = [ClassifierOutputTarget(int(c)) for c in t.tolist()]
        with _as_found(model):
            cam = cls(model, target_layers)
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
        Method("ours", "contributions (ours)", _ours, "layer", "score", "pwawidgets", INPUT,
               "exact contributions w.h summed over channels; score = sum + bias"),
        Method("gradcam", "Grad-CAM", gradcam, "layer", "score", "pwawidgets", "last",
               "Grad-CAM from one decomposition pass: sum_k mean(dS/dA_k) A_k, signed (no ReLU)"),
        Method("gradcam_captum", "Grad-CAM (Captum)", _captum_gradcam, "layer", "score", "captum", "last",
               "Captum LayerGradCam(relu_attributions=False); equals 'gradcam'", accepts_input=False),
        Method("gradient", "gradient", _gradient, "layer", "gradient", "captum", INPUT,
               "dS/dh summed over channels (Captum Saliency(abs=False) at the input, "
               "LayerGradientXActivation(multiply_by_inputs=False) at a layer)"),
        Method("gradient_x_input", "gradient x input", _gradient_x_input, "layer", "score", "captum", INPUT,
               "Captum InputXGradient / LayerGradientXActivation summed over channels: the same numbers as "
               "'ours', computed by Captum"),
        Method("gradcam_plusplus", "Grad-CAM++", _grad_cam_library("GradCAMPlusPlus"), "input", "unit",
               "pytorch-grad-cam", "last", f"Grad-CAM++, {_UNIT}", accepts_input=False),
        Method("xgradcam", "XGrad-CAM", _grad_cam_library("XGradCAM"), "input", "unit", "pytorch-grad-cam",
               "last", f"XGrad-CAM, {_UNIT}", accepts_input=False),
        Method("hirescam", "HiResCAM", _grad_cam_library("HiResCAM"), "input", "unit", "pytorch-grad-cam",
               "last", f"HiResCAM (gradient x activation, summed over channels), {_UNIT}", accepts_input=False),
        Method("layercam", "LayerCAM", _grad_cam_library("LayerCAM"), "input", "unit", "pytorch-grad-cam",
               "last", f"LayerCAM, {_UNIT}", accepts_input=False),
        Method("eigencam", "Eigen-CAM", _grad_cam_library("EigenCAM"), "input", "unit", "pytorch-grad-cam",
               "last", f"Eigen-CAM (first principal component, ignores the class), {_UNIT}",
               accepts_input=False),
        Method("scorecam", "Score-CAM", _grad_cam_library("ScoreCAM"), "input", "unit", "pytorch-grad-cam",
               "last", f"Score-CAM (one forward pass per channel: slow on a CPU), {_UNIT}", accepts_input=False),
        Method("fullgrad", "FullGrad", _grad_cam_library("FullGrad"), "input", "unit", "pytorch-grad-cam",
               INPUT, f"FullGrad (|grad x input| plus |bias x grad| of every Conv2d/BatchNorm2d bias; the layer "
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
        target: an int, one int per example, or None for the predicted class.
        layer: a layer name as in :func:`pwawidgets.decompose` (``"input"``, ``"conv4"``, ``"layer3"``, a
            module name); None: the method's default (the input, or the last preset block for CAMs).
    Returns:
        ``(B, H_l, W_l)`` on the layer's grid (``METHODS[method].grid == "layer"``) or ``(B, H, W)`` at the
        input's size (``"input"``), on the model's device.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attribution methods need gradients: call attribute outside torch.inference_mode()")
    model = check_model(model)
    spec = METHODS[method]
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
        raise ValueError("inputs must be a (B, 3, H, W) float tensor; see pwawidgets.load_image")
    check_inputs_fit(model, inputs)
    x = inputs.detach().to(model_device(model, inputs.device), model_dtype(model, inputs.dtype))
    if x.is_inference():
        x = x.clone()
    layer = layer or default_layer(model, spec.default)
    resolve_one(model, layer)  # one layer, with a clear error for presets, 'all' and unknown names
    if layer == INPUT and not spec.accepts_input:
        raise ValueError(f"{spec.label} needs a feature layer (e.g. {default_layer(model)!r}), not the input")
    with exact_math():
        t = _targets(model, x, target)
    # a copy: a model that edits its input in place must not edit the caller's tensor
    return spec.compute(model, x.clone(), t, layer).detach()
