"""The exact piece-wise affine decomposition (Chen et al., ICIP 2019).

At an input X, a network made of ReLU, max/avg pooling, eval BatchNorm, convolutions and linear layers is
affine on the region around X. For any layer tensor h and class c:

    score_c = sum_i w_i h_i + b,    w = d score_c / d h,    b = score_c - w . h

``w_i h_i`` is the contribution of unit i (signed, on the score's scale); ``b`` is the part of the score that
no unit of that layer explains. One forward pass serves every layer; one backward pass per class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .audit import require_piecewise_affine
from .calls import (
    LayerPass,
    Normalization,
    Scores,
    Target,
    check_after_passes,
    check_raw_input,
    input_normalization,
    layer_pass,
    left_as_found,
    logits_of,
    prepare_inputs,
    select_scores,
)
from .layers import LayerCapture, check_model, resolve_layers
from .placement import model_dtype
from .precision import check_precision, exact_math


@dataclass
class Decomposition:
    """Result of :func:`decompose`.

    Shapes: with one class per example, ``score`` is ``(B,)``, ``contributions[name]`` has the shape of the
    layer tensor ``(B, ...)`` and ``bias[name]`` is ``(B,)``. With ``k`` classes per example (a ``(B, k)``
    target), a class axis follows the batch axis: ``(B, k)``, ``(B, k, ...)``, ``(B, k)``.

    ``score == contributions.sum() + bias`` holds by the definition of the bias; what makes it an exact
    explanation is that the network is affine around the input, which :func:`pwawidgets.verify` checks.
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
    notes: list[str] = field(default_factory=list)

    def maps(self, name: str, size: int | tuple[int, int] | None = None, mode: str = "bilinear") -> torch.Tensor:
        """Pixel map of a layer: contributions summed over channels, ``(B, [k,] H_l, W_l)``.

        With ``size`` the map is resized (bilinear by default) for overlays: the values stay per layer cell,
        they are not rescaled, so rank on the layer grid (``size=None``) when counting cells.
        """
        contrib = self.contribution(name)
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
        lead = 2 if self.per_class else 1
        return self.contribution(name).flatten(lead).sum(-1)

    def contribution(self, name: str) -> torch.Tensor:
        """``w * h`` at one layer, with a clear error for a layer that was not decomposed."""
        return self._get(self.contributions, name)

    def activation(self, name: str) -> torch.Tensor:
        """The layer tensor ``h`` (as the layer handed it on), ``(B, ...)``."""
        return self._get(self.activations, name)

    def gradient(self, name: str) -> torch.Tensor:
        """``w`` at one layer (needs ``keep_gradients=True``)."""
        if self.gradients is None:
            raise ValueError("gradients were not kept: decompose(..., keep_gradients=True)")
        return self._get(self.gradients, name)

    def _get(self, table: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
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


# ------------------------------------------------------------------------------------------ checks of a call


# ------------------------------------------------------------------------------------------ the passes


CONTRIBUTIONS, GRADIENTS, TOTALS = "contributions", "gradients", "totals"


def _backward(scores: torch.Tensor, layers: list[LayerPass], keep: str) -> None:
    """One backward pass per class. Fills, class by class, the totals ``sum_i w_i h_i``, ``(B, k)``, and keeps
    either the contributions or the gradients, ``(B, k, ...)`` each, or (``keep=TOTALS``) nothing more."""
    k = scores.shape[1]
    for layer in layers:
        h = layer.value
        layer.stored = None if keep == TOTALS else h.new_empty((h.shape[0], k, *h.shape[1:]))
        layer.totals = h.new_empty((h.shape[0], k))
    nodes = [layer.node for layer in layers]
    for j in range(k):
        # Examples are independent in eval mode, so the gradient of the batch sum is per-example.
        grads = torch.autograd.grad(scores[:, j].sum(), nodes, retain_graph=j < k - 1, allow_unused=True)
        for layer, g in zip(layers, grads, strict=True):
            if g is None:
                raise ValueError(
                    f"the score does not depend on layer {layer.name!r} through autograd: forward() cuts it off "
                    "(detach(), .data, torch.no_grad() or a branch that does not reach the output). The whole score "
                    "would land in the bias. Remove the cut, or decompose at a layer after it."
                )
            if layer.scale is not None:
                g = g / layer.scale
            if keep == GRADIENTS:
                layer.stored[:, j] = g
                contrib = g * layer.value
            elif keep == CONTRIBUTIONS:
                contrib = torch.mul(g, layer.value, out=layer.stored[:, j])
            else:
                contrib = g * layer.value
            layer.totals[:, j] = contrib.flatten(1).sum(-1)  # pairwise summation in the working dtype


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


def _assemble(layers: list[LayerPass], result: Scores, keep_gradients: bool, reference: str) -> Decomposition:
    score = result.scores.detach()
    stored = {layer.name: result.squeeze(layer.stored) for layer in layers}
    activations = {layer.name: layer.value for layer in layers}
    bias = {layer.name: result.squeeze(score - layer.totals) for layer in layers}
    contributions = LazyContributions(stored, activations, result.per_class) if keep_gradients else stored
    return Decomposition(
        layers=[layer.name for layer in layers],
        score=result.squeeze(score),
        target=result.squeeze(result.targets),
        logits=result.logits,
        contributions=contributions,
        bias=bias,
        activations=activations,
        gradients=stored if keep_gradients else None,
        reference=reference,
        per_class=result.per_class,
    )


@dataclass
class _Request:
    """What a caller asked of :func:`_run`: the decomposition's options."""

    target: Target
    layers: str | Sequence[str] | None
    reference: str = "normalized"
    normalization: Normalization | None = None
    allow_non_affine: bool = False
    strict: bool = False


def _run(model: nn.Module, inputs: torch.Tensor, request: _Request, keep: str) -> tuple[list[LayerPass], Scores]:
    """Checks, one forward pass, one backward pass per class: the layer passes (with what ``keep`` asks to keep)
    and the scores, checked for non-finite values and targets out of range."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("the decomposition needs autograd: call it outside torch.inference_mode()")
    model = check_model(model)
    modules = dict(model.named_modules())
    specs, wants_all = resolve_layers(model, request.layers, modules)
    if not specs and not wants_all:
        raise ValueError("no layer asked for: give 'input', a preset ('blocks', 'all') or module names")
    wants_input = any(s.module is None for s in specs)
    norm = input_normalization(model, request.normalization, request.reference, wants_input)
    require_piecewise_affine(model, request.allow_non_affine, request.strict, modules)
    x = prepare_inputs(model, inputs, wants_input)
    if norm is not None:
        check_raw_input(x, norm)
    check_precision(model_dtype(model, x.dtype), request.strict)

    with (left_as_found(model, modules, x.device), exact_math(x.device), torch.enable_grad(),
          LayerCapture(model, specs, wants_all, modules) as capture):
        # the model gets a copy, so that one that normalises its input in place leaves the leaf x alone
        try:
            output = model(x.clone() if x.requires_grad else x)
        except RuntimeError as exc:
            raise RuntimeError(f"the model could not run on inputs of shape {tuple(x.shape)} ({x.dtype}): {exc}\n"
                               "Check the size and channels it expects (224 px RGB for the ImageNet networks, "
                               "64 px for the mini zoo).") from exc
        logits = logits_of(output)
        if wants_all:
            named = {s.name for s in specs}
            specs = specs + [s for s in capture.relu_specs() if s.name not in named]
        if not specs:
            raise ValueError("layers='all' found no activation module (ReLU and kin) in the forward pass")
        result, in_range = select_scores(request.target, logits)
        passes = [layer_pass(s, x if s.module is None else capture.tensor(s), norm) for s in specs]
        _backward(result.scores, passes, keep)
    check_after_passes(x, result, in_range)  # only now, so that nothing waits on an accelerator before them
    return passes, result


def decompose(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    layers: str | Sequence[str] | None = None,
    *,
    reference: str = "normalized",
    normalization: Normalization | None = None,
    keep_gradients: bool = False,
    allow_non_affine: bool = False,
    strict: bool = False,
) -> Decomposition:
    """Exact decomposition ``score = sum(contributions) + bias`` at each requested layer.

    Args:
        model: a classifier returning logits ``(B, C)``; piece-wise affine (see :func:`pwawidgets.audit`)
            and in eval mode. Its mode and ``requires_grad`` flags are left as found.
        inputs: ``(B, ...)`` batch of floats, moved to the model's device and dtype; or integer indices for a
            model that starts with an embedding (then decompose at a layer after it).
        target: class per example: an int, one int per example, a ``(B, k)`` tensor of ``k`` classes each,
            ``"top5"`` (the 5 highest logits of each example, from the same forward pass; any ``"top<k>"``),
            or None for the predicted class. The score is the logit (pre-softmax).
        layers: layer names, preset names (``"blocks"``, ``"all"``) or ``"input"`` (default); see
            :mod:`pwawidgets.layers`.
        reference: input space of the ``"input"`` contributions: ``"normalized"`` (the tensor the model
            receives; default) or ``"raw"`` (pixels in [0, 1] before normalisation, which needs
            ``normalization`` or a model carrying a ``preprocessing``: :func:`pwawidgets.preprocessing_of`). The
            bias absorbs the difference: ``b_raw = b_normalized - sum_i w_i mean_i / std_i``.
        keep_gradients: also return ``w`` per layer in ``.gradients``; the contributions are then computed
            from ``w`` and ``h`` when read, so the result holds no extra full-size tensor.
        allow_non_affine: decompose a model that :func:`audit` rejects (the result is then not exact).
        strict: raise instead of warning when exactness is not guaranteed (fp16/bf16, unverified operations).
    """
    request = _Request(target, layers, reference, normalization, allow_non_affine, strict)
    passes, result = _run(model, inputs, request, GRADIENTS if keep_gradients else CONTRIBUTIONS)
    return _assemble(passes, result, keep_gradients, reference)


def layer_biases(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target = None,
    layers: str | Sequence[str] = ("input", "all"),
    *,
    reference: str = "normalized",
    normalization: Normalization | None = None,
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The bias at every layer of ``layers``, as :func:`decompose` computes it, without keeping contributions:
    ``(names, bias (B, k, L), score (B, k), target (B, k))``, always with a class axis.

    The same forward pass and backward passes as :func:`decompose`; each class's gradients are reduced to
    ``w . h`` at once, so memory is that of the forward pass plus one class's gradients, whatever the number of
    layers (Fig. 3 over every ReLU of a large network)."""
    request = _Request(target, layers, reference, normalization)
    passes, result = _run(model, inputs, request, TOTALS)
    scores = result.scores.detach()
    bias = scores.unsqueeze(-1) - torch.stack([p.totals for p in passes], dim=-1)
    return [p.name for p in passes], bias, scores, result.targets
