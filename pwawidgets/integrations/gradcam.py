"""``PiecewiseAffineCAM``: the exact contributions as a pytorch-grad-cam CAM.

Called like every CAM of pytorch-grad-cam, it returns their ``(B, H, W)`` float32 maps in [0, 1]: the sum of
``w * h`` over the target layer's channels (our :func:`pwawidgets.decompose`), clipped at zero, min-max scaled per
image and resized to the input by pytorch-grad-cam's own ``scale_cam_image``; several target layers are averaged as
pytorch-grad-cam does. That is HiResCAM's map (tested), computed by the decomposition. Example::

    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import pwawidgets as pw
    from pwawidgets.integrations.gradcam import PiecewiseAffineCAM

    model = pw.load_model("mini_vgg_bn")  # the mini zoo: 64 px images, 6 classes
    x = torch.rand(2, 3, 64, 64)
    cam = PiecewiseAffineCAM(model, target_layers=[model.features[20]])
    maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(3), ClassifierOutputTarget(5)])  # (2, 64, 64)
    exact, bias = PiecewiseAffineCAM(model, [model.features[20]], signed=True)(input_tensor=x, targets=None)

``signed=True`` returns the exact map instead: ``SignedCAM(maps, bias)`` with ``maps`` unclipped and unscaled, each
layer cell's contribution shared evenly among the input pixels it covers, so that
``maps.sum((1, 2)) + bias == score`` (the class logit) up to rounding. Metrics that only rank pixels (ROAD) take
those maps as they are; metrics that multiply the image by the map (``CamMultImageConfidenceChange``) need the
[0, 1] maps.

Unlike pytorch-grad-cam's CAMs, the model's mode is left as found: a model in training mode stays so, and the call
then raises the decomposition's error (BatchNorm in training mode is not piece-wise affine): call ``model.eval()``
yourself. The model's parameter gradients are not touched (no ``backward``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ..core import Decomposition, decompose
from .common import layer_map, spread


class SignedCAM(NamedTuple):
    """What ``PiecewiseAffineCAM(..., signed=True)`` returns: ``maps`` ``(B, H, W)`` at the input's size, signed and
    on the score's scale, and ``bias`` ``(B,)``: ``maps.sum((1, 2)) + bias == score``."""

    maps: np.ndarray
    bias: np.ndarray


class PiecewiseAffineCAM(BaseCAM):
    """A pytorch-grad-cam CAM made of the exact contributions ``w * h`` (see the module's docstring).

    Args:
        model: a piece-wise affine classifier returning logits, in eval mode (left as found).
        target_layers: modules of ``model`` whose outputs are decomposed; each must run once per forward pass.
        reshape_transform: as in pytorch-grad-cam, turns a layer tensor into ``(B, C, H, W)``; applied to the
            contributions ``w * h`` (for a transform that only moves or drops entries, the same as applying it to
            ``w`` and ``h``).
        signed: return :class:`SignedCAM` (exact maps and the bias) instead of [0, 1] maps; needs one target layer.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        signed: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.layer_names = _layer_names(model, target_layers)
        if signed and len(self.layer_names) != 1:
            raise ValueError(f"signed=True needs one target layer (each layer has its own bias); target_layers has "
                             f"{len(self.layer_names)}")
        modes = [(m, m.training) for m in model.modules()]
        super().__init__(model, list(target_layers), reshape_transform)
        for module, training in modes:  # BaseCAM calls model.eval(): put every module's mode back
            module.training = training
        self.activations_and_grads.release()  # BaseCAM's hooks: the decomposition captures the layers itself
        self.signed = signed

    def __del__(self) -> None:  # BaseCAM's hooks were released in __init__ (or never made: nothing to do)
        pass

    def __call__(
        self,
        input_tensor: torch.Tensor,
        targets: Sequence[ClassifierOutputTarget] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray | SignedCAM:
        """``(B, H, W)`` float32 maps in [0, 1], or :class:`SignedCAM` with ``signed=True``.

        ``targets``: one ``ClassifierOutputTarget(class)`` per example (the logit is decomposed), or None for the
        predicted classes. ``aug_smooth`` averages [0, 1] maps over flipped and scaled inputs as pytorch-grad-cam
        does (not with ``signed``); ``eigen_smooth`` is refused: the map is the decomposition itself.
        """
        if eigen_smooth:
            raise ValueError("eigen_smooth=True projects the map on a principal component: the result would not be "
                             "the decomposition. Leave it False (or use pytorch-grad-cam's HiResCAM for that).")
        if aug_smooth and self.signed:
            raise ValueError("aug_smooth=True averages maps of transformed inputs: not an exact map. Leave it False "
                             "with signed=True.")
        return super().__call__(input_tensor, targets, aug_smooth=aug_smooth)

    def forward(
        self, input_tensor: torch.Tensor, targets: Sequence[ClassifierOutputTarget] | None, eigen_smooth: bool = False
    ) -> np.ndarray | SignedCAM:
        if not isinstance(input_tensor, torch.Tensor) or input_tensor.dim() != 4:
            raise ValueError("input_tensor must be a (B, C, H, W) image batch tensor")
        classes = _classes(targets, input_tensor.shape[0])
        d = decompose(self.model, input_tensor, classes, self.layer_names)
        self.outputs = d.logits
        size = tuple(input_tensor.shape[-2:])
        maps = [self._map(d, name) for name in self.layer_names]
        if self.signed:
            exact = spread(maps[0], size)
            return SignedCAM(exact.cpu().numpy(), d.bias[self.layer_names[0]].cpu().numpy())
        # pytorch-grad-cam's own steps: clip, scale to [0, 1] and resize per layer, then average the layers
        per_layer = [scale_cam_image(np.maximum(m.cpu().numpy(), 0), size[::-1])[:, None] for m in maps]
        return self.aggregate_multi_layers(per_layer)

    def _map(self, d: Decomposition, name: str) -> torch.Tensor:
        if self.reshape_transform is None:
            return layer_map(d, name)
        contributions = self.reshape_transform(d.contribution(name))
        if contributions.dim() != 4:
            raise ValueError(f"reshape_transform turned layer {name!r} into shape {tuple(contributions.shape)}: "
                             "it must give (B, C, H, W)")
        if self.signed and contributions.numel() != d.contribution(name).numel():
            raise ValueError("reshape_transform drops entries of the layer tensor: the map would not sum to "
                             "score - bias. Use signed=False, or a transform that only moves entries.")
        return contributions.sum(dim=1)


def _layer_names(model: nn.Module, target_layers: Sequence[nn.Module]) -> list[str]:
    """The module names of ``target_layers`` in ``model``, as :func:`pwawidgets.decompose` takes them."""
    if isinstance(target_layers, nn.Module) or not isinstance(target_layers, (list, tuple)) or not target_layers:
        raise TypeError("target_layers must be a non-empty list of modules of the model, e.g. [model.layer4[-1]]")
    names = {id(module): name for name, module in model.named_modules() if name}
    missing = [type(m).__name__ for m in target_layers if id(m) not in names]
    if missing:
        raise ValueError(f"target_layers holds modules that are not submodules of the model: {missing}")
    return [names[id(m)] for m in target_layers]


def _classes(targets: Sequence[ClassifierOutputTarget] | None, batch: int) -> torch.Tensor | None:
    """One class index per example from pytorch-grad-cam targets (None: the predicted classes)."""
    if targets is None:
        return None
    if len(targets) != batch:
        raise ValueError(f"targets has {len(targets)} entries for a batch of {batch}: give one per example")
    wrong = {type(t).__name__ for t in targets if type(t) is not ClassifierOutputTarget}
    if wrong:
        raise TypeError(f"targets must be ClassifierOutputTarget(class): the decomposition explains a logit, which "
                        f"{sorted(wrong)} do not (softmax and losses are not piece-wise affine)")
    return torch.tensor([int(t.category) for t in targets])
