"""The exact piece-wise affine decomposition (Chen et al., ICIP 2019).

At an input X, a network made of ReLU, max/avg pooling, eval BatchNorm, convolutions and linear layers is
affine on the region around X. For any layer tensor h and class c:

    score_c = sum_i w_i h_i + b,    w = d score_c / d h,    b = score_c - w . h

``w_i h_i`` is the contribution of unit i (signed, on the score's scale); ``b`` is the part of the score that
no unit of that layer explains. One forward pass serves every layer; one backward pass per class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .exactness import ExactnessWarning, audit, exact_math
from .layers import LayerCapture, LayerSpec, resolve_layers

Target = int | Sequence[int] | torch.Tensor | str | None


@dataclass
class Decomposition:
    """Result of :func:`decompose`.

    Shapes: with one class per example, ``score`` is ``(B,)``, ``contributions[name]`` has the shape of the
    layer tensor ``(B, ...)`` and ``bias[name]`` is ``(B,)``. With ``k`` classes per example (a ``(B, k)``
    target), a class axis follows the batch axis: ``(B, k)``, ``(B, k, ...)``, ``(B, k)``.
    """

    layers: list[str]
    score: torch.Tensor
    target: torch.Tensor
    logits: torch.Tensor
    contributions: Mapping[str, torch.Tensor]  # a dict, or computed on reading when gradients are kept
    bias: dict[str, torch.Tensor]
    activations: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor] | None = None
    reference: str = "normalized"
    per_class: bool = False
    residual: float = 0.0
    notes: list[str] = field(default_factory=list)

    def maps(self, name: str, size: int | tuple[int, int] | None = None, mode: str = "bilinear") -> torch.Tensor:
        """Pixel map of a layer: contributions summed over channels, ``(B, [k,] H_l, W_l)``.

        With ``size`` the map is resized (bilinear by default) for overlays: the values stay per layer cell,
        they are not rescaled, so rank on the layer grid (``size=None``) when counting cells.
        """
        contrib = self._get(self.contributions, name)
        lead = 2 if self.per_class else 1
        if contrib.dim() < lead + 3:
            raise ValueError(f"layer {name!r} has shape {tuple(contrib.shape)}: no spatial map (need C x H x W)")
        summed = contrib.sum(dim=lead)
        return summed if size is None else resize_maps(summed, size, mode)

    def bias_ratio(self, name: str) -> torch.Tensor:
        """``bias / score`` at one layer; NaN where the score is zero (a ratio of nothing)."""
        score = self.score
        ratio = self._get(self.bias, name) / score
        return torch.where(score == 0, torch.full_like(ratio, math.nan), ratio)

    def total(self, name: str) -> torch.Tensor:
        """Sum of all contributions of a layer (so ``total + bias == score``)."""
        contrib = self._get(self.contributions, name)
        lead = 2 if self.per_class else 1
        return contrib.flatten(lead).sum(-1)

    def gradient(self, name: str) -> torch.Tensor:
        """``w`` at one layer (needs ``keep_gradients=True``)."""
        if self.gradients is None:
            raise ValueError("gradients were not kept: decompose(..., keep_gradients=True)")
        return self._get(self.gradients, name)

    def _get(self, table: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        if name not in table:
            raise KeyError(f"layer {name!r} was not decomposed; decomposed layers: {self.layers}")
        return table[name]


def resize_maps(maps: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize maps ``(..., H, W)`` to ``size`` (bilinear by default); values are not rescaled."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(flat, size=size, mode=mode, **kwargs).reshape(*maps.shape[:-2], *size)


def _model_device_dtype(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        param = next(model.buffers(), None)
    if param is None:
        return inputs.device, inputs.dtype
    dtype = param.dtype if param.is_floating_point() else inputs.dtype
    return param.device, dtype


def _check_precision(dtype: torch.dtype, strict: bool) -> None:
    if dtype in (torch.float16, torch.bfloat16):
        msg = (
            f"{dtype} loses exactness: the decomposition is only as exact as the arithmetic. "
            "Use model.float() (or .double()) for exact contributions."
        )
        if strict:
            raise ValueError(msg)
        warnings.warn(msg, ExactnessWarning, stacklevel=3)


def _targets(target: Target, logits: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Targets as a ``(B, k)`` long tensor, and whether the caller asked for a class axis."""
    batch, n_classes = logits.shape
    if target is None:
        t = logits.argmax(dim=1, keepdim=True)
        per_class = False
    elif isinstance(target, str):
        k = int(target[3:]) if target.startswith("top") and target[3:].isdigit() else 0
        if not 0 < k <= n_classes:
            raise ValueError(f"target {target!r}: use 'top1'..'top{n_classes}', an int, a tensor or None")
        t, per_class = logits.topk(k, dim=1).indices, True
    else:
        t = torch.as_tensor(target)
        if t.device.type == "cpu":  # check here, before anything waits on the device
            _check_range(t, n_classes)
        t = t.to(logits.device)
        if t.is_floating_point():
            raise TypeError("target must hold integer class indices")
        if t.dim() == 0:
            t, per_class = t.expand(batch, 1), False
        elif t.dim() == 1:
            if t.numel() != batch:
                raise ValueError(f"target has {t.numel()} entries for a batch of {batch}: give one per example")
            t, per_class = t[:, None], False
        elif t.dim() == 2 and t.shape[0] == batch:
            per_class = True
        else:
            raise ValueError(f"target of shape {tuple(t.shape)}: expected an int, (batch,) or (batch, k)")
    return t.long(), per_class


def _check_range(t: torch.Tensor, n_classes: int) -> None:
    if t.numel() and not t.is_floating_point() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise ValueError(f"target classes must lie in [0, {n_classes - 1}], got {t.unique().tolist()[:10]}")


def _raw_pixel_view(
    x: torch.Tensor, normalization: tuple[Sequence[float], Sequence[float]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw pixels ``p = x * std + mean`` of a normalised input, and ``std`` (``d/dp = d/dx / std``)."""
    mean = torch.as_tensor(normalization[0], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(normalization[1], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * std + mean, std


def decompose(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    layers: str | Sequence[str] | None = None,
    *,
    reference: str = "normalized",
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    keep_gradients: bool = False,
    allow_non_affine: bool = False,
    strict: bool = False,
) -> Decomposition:
    """Exact decomposition ``score = sum(contributions) + bias`` at each requested layer.

    Args:
        model: a classifier returning logits ``(B, C)``; piece-wise affine (see :func:`pwawidgets.audit`)
            and in eval mode. Its mode and ``requires_grad`` flags are left as found.
        inputs: ``(B, ...)`` batch, moved to the model's device and dtype.
        target: class per example: an int, one int per example, a ``(B, k)`` tensor of ``k`` classes each,
            ``"top5"`` (the 5 highest logits of each example, from the same forward pass; any ``"top<k>"``),
            or None for the predicted class. The score is the logit (pre-softmax).
        layers: layer names, preset names (``"blocks"``, ``"all"``) or ``"input"`` (default); see
            :mod:`pwawidgets.layers`.
        reference: input space of the ``"input"`` contributions: ``"normalized"`` (the tensor the model
            receives; default) or ``"raw"`` (pixels in [0, 1] before normalisation, which needs
            ``normalization`` or a model carrying a ``normalization`` attribute). The bias absorbs the
            difference: ``b_raw = b_normalized - sum_i w_i mean_i / std_i``.
        keep_gradients: also return ``w`` per layer in ``.gradients``; the contributions are then computed
            from ``w`` and ``h`` when read, so the result holds no extra full-size tensor.
        allow_non_affine: decompose a model that :func:`audit` rejects (the result is then not exact).
        strict: raise instead of warning when exactness is lost (fp16/bf16).
    """
    if reference not in ("normalized", "raw"):
        raise ValueError("reference must be 'normalized' or 'raw'")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}; see pwawidgets.load_image")
    modules = dict(model.named_modules())
    report = audit(model, modules)
    if not report.ok:
        if not allow_non_affine:
            raise ValueError(f"{report}\nPass allow_non_affine=True to decompose anyway (not exact).")
        warnings.warn(f"decomposing a model that is not piece-wise affine:\n{report}", ExactnessWarning, 2)
    norm = _normalization(model, normalization, reference)
    specs, wants_all = resolve_layers(model, layers, modules)
    device, dtype = _model_device_dtype(model, inputs)
    _check_precision(dtype, strict)
    x = inputs.detach().to(device=device, dtype=dtype).requires_grad_(True)

    with exact_math(device), torch.enable_grad(), LayerCapture(model, specs, wants_all, modules) as capture:
        logits = model(x)
        if not (isinstance(logits, torch.Tensor) and logits.dim() == 2):
            raise ValueError("the model must return logits of shape (batch, classes)")
        if wants_all:
            specs = specs + [s for s in capture.relu_specs() if s.name not in {p.name for p in specs}]
        tensors = [x if s.module is None else capture.tensor(s) for s in specs]
        targets, per_class = _targets(target, logits.detach())
        in_range = None
        if isinstance(target, torch.Tensor) and target.device.type != "cpu":
            # checked after the backward passes, so that nothing waits on the device before them
            in_range = ((targets >= 0) & (targets < logits.shape[1])).all()
            targets = targets.clamp(0, logits.shape[1] - 1)
        scores = logits.gather(1, targets)
        views = [_raw_pixel_view(h.detach(), norm) if s.module is None and norm is not None else (h.detach(), None)
                 for s, h in zip(specs, tensors, strict=True)]
        stored, totals = _per_class(scores, tensors, views, keep_gradients)
    if in_range is not None and not bool(in_range):
        raise ValueError(f"target classes must lie in [0, {logits.shape[1] - 1}]")

    return _assemble(specs, views, stored, totals, keep_gradients, scores, targets, logits, per_class, reference)


def _per_class(scores: torch.Tensor, tensors: list[torch.Tensor], views, keep_gradients: bool):
    """One backward pass per class. Fills, class by class, either the contributions or (with
    ``keep_gradients``) the gradients, ``(B, k, ...)`` each, and the totals ``sum_i w_i h_i``, ``(B, k)``."""
    k = scores.shape[1]
    stored = [h.new_empty((h.shape[0], k, *h.shape[1:])) for h, _ in views]
    totals = [h.new_empty((h.shape[0], k)) for h, _ in views]
    for j in range(k):
        # Examples are independent in eval mode, so the gradient of the batch sum is per-example.
        grads = torch.autograd.grad(scores[:, j].sum(), tensors, retain_graph=j < k - 1, allow_unused=True)
        for i, (g, (h, scale)) in enumerate(zip(grads, views, strict=True)):
            if g is None:
                g = torch.zeros_like(h)
            elif scale is not None:
                g = g / scale
            if keep_gradients:
                stored[i][:, j] = g
                contrib = g * h
            else:
                contrib = torch.mul(g, h, out=stored[i][:, j])
            totals[i][:, j] = contrib.flatten(1).sum(-1)  # pairwise summation in the working dtype
    return stored, totals


class LazyContributions(Mapping):
    """``contributions[name] = w * h``, computed when read from the kept gradients and activations, so that a
    decomposition with ``keep_gradients=True`` holds one full-size tensor per layer and class, not two."""

    def __init__(self, gradients: dict[str, torch.Tensor], activations: dict[str, torch.Tensor], per_class: bool):
        self._gradients, self._activations, self._per_class = gradients, activations, per_class

    def __getitem__(self, name: str) -> torch.Tensor:
        h = self._activations[name]
        return self._gradients[name] * (h.unsqueeze(1) if self._per_class else h)

    def __iter__(self):
        return iter(self._gradients)

    def __len__(self) -> int:
        return len(self._gradients)


def _normalization(model: nn.Module, normalization, reference: str):
    if reference != "raw":
        return None
    norm = normalization or getattr(model, "normalization", None)
    if norm is None:
        raise ValueError(
            "reference='raw' needs the input normalisation: pass normalization=(mean, std), e.g. "
            "pwawidgets.IMAGENET_NORMALIZATION for torchvision models"
        )
    return norm


def _assemble(specs: list[LayerSpec], views, stored, totals, keep_gradients, scores, targets, logits, per_class,
              reference) -> Decomposition:
    score = scores.detach()
    stored_table, bias_table, activation_table = {}, {}, {}
    errors = []

    def squeeze(t: torch.Tensor) -> torch.Tensor:  # drop the class axis when one class per example was asked
        return t if per_class else t.squeeze(1)

    for i, (spec, (h, _)) in enumerate(zip(specs, views, strict=True)):
        bias = score - totals[i]
        err = ((totals[i].double() + bias.double()) - score.double()).abs() / score.double().abs().clamp_min(1e-30)
        errors.append(err.max())
        stored_table[spec.name] = squeeze(stored[i])
        bias_table[spec.name] = squeeze(bias)
        activation_table[spec.name] = h
    contributions = LazyContributions(stored_table, activation_table, per_class) if keep_gradients else stored_table
    return Decomposition(
        layers=[s.name for s in specs],
        score=squeeze(score),
        target=squeeze(targets),
        logits=logits.detach(),
        contributions=contributions,
        bias=bias_table,
        activations=activation_table,
        gradients=stored_table if keep_gradients else None,
        reference=reference,
        per_class=per_class,
        residual=float(torch.stack(errors).max()) if errors else 0.0,
    )
