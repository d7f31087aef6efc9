"""The exact piece-wise affine decomposition (Chen et al., ICIP 2019).

At an input X, a network made of ReLU, max/avg pooling, eval BatchNorm, convolutions and linear layers is
affine on the region around X. For any layer tensor h and class c:

    score_c = sum_i w_i h_i + b,    w = d score_c / d h,    b = score_c - w . h

``w_i h_i`` is the contribution of unit i (signed, on the score's scale); ``b`` is the part of the score that
no unit of that layer explains. One forward pass serves every layer; one backward pass per class.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .audit import require_piecewise_affine
from .layers import LayerCapture, LayerSpec, check_model, resolve_layers
from .placement import model_device, model_dtype
from .precision import check_precision, exact_math

Target = int | Sequence[int] | torch.Tensor | str | None
Normalization = tuple[Sequence[float], Sequence[float]]


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


def _check_model(model: nn.Module, allow_non_affine: bool, strict: bool, modules: dict[str, nn.Module]) -> None:
    require_piecewise_affine(model, allow_non_affine, strict, modules)


def _prepare_inputs(model: nn.Module, inputs: torch.Tensor, wants_input: bool) -> torch.Tensor:
    """The batch on the model's device: floats in the model's dtype (a leaf that requires grad), or integer
    indices as they are (for models that start with an embedding)."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}; see pwawidgets.load_image")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs of shape {tuple(inputs.shape)}: give a batch with at least one example, (B, ...)")
    device = model_device(model, inputs.device)
    if inputs.dtype in (torch.uint8, torch.int8):
        raise TypeError("a uint8 image tensor: convert it to floats in [0, 1] (x.float() / 255) and normalise it as "
                        "the model expects, or load it with pwawidgets.load_image")
    if inputs.dtype == torch.bool or inputs.is_complex():
        raise TypeError(f"inputs of dtype {inputs.dtype}: give real floats (or integer indices for an embedding)")
    x = inputs.detach()
    if x.is_inference():  # made under torch.inference_mode: autograd cannot use it
        x = x.clone()
    if not x.is_floating_point():
        if wants_input:
            raise ValueError("integer inputs (token indices) have no contributions: the input is not a continuous "
                             "variable. Decompose at a layer after the embedding (e.g. its module name).")
        return x.to(device)
    return x.to(device=device, dtype=model_dtype(model, x.dtype)).requires_grad_(True)


def _normalization(model: nn.Module, normalization: Normalization | None, reference: str, wants_input: bool):
    if reference not in ("normalized", "raw"):
        raise ValueError("reference must be 'normalized' or 'raw'")
    if reference != "raw" or not wants_input:
        return None
    norm = normalization or getattr(model, "normalization", None)
    if norm is None:
        raise ValueError(
            "reference='raw' needs the input normalisation: pass normalization=(mean, std), e.g. "
            "pwawidgets.IMAGENET_NORMALIZATION for torchvision models"
        )
    try:
        mean, std = (torch.as_tensor(v, dtype=torch.float64).flatten() for v in norm)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"normalization must be (mean, std), one value per channel each; got {norm!r}") from exc
    if mean.shape != std.shape or not bool(torch.isfinite(std).all() & (std > 0).all()):
        raise ValueError(f"normalization must be (mean, std) of equal length with every std > 0; got {norm!r}")
    return norm


def _check_raw_input(x: torch.Tensor, norm: Normalization) -> None:
    channels = len(torch.as_tensor(norm[0]).flatten())
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"reference='raw' works on image batches (B, C, H, W) with C = {channels} channels (one "
                         f"per normalisation value); the input has shape {tuple(x.shape)}")


def _logits(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor) and output.dim() == 2 and output.shape[1] > 0:
        return output
    if isinstance(output, torch.Tensor):
        what = f"a tensor of shape {tuple(output.shape)}"
    elif isinstance(output, (tuple, list)):
        what = f"a {type(output).__name__} of {len(output)}"
    elif isinstance(output, Mapping):
        what = f"a mapping with keys {list(output)[:5]}"
    else:
        what = type(output).__name__
    raise ValueError(f"the model returned {what}; decompose needs logits of shape (batch, classes). Wrap the model "
                     "in a module whose forward returns that tensor (e.g. the 'logits' entry).")


@contextlib.contextmanager
def left_as_found(model: nn.Module, modules: dict[str, nn.Module], device: torch.device) -> Iterator[None]:
    """For a model with parts in training mode (decomposed only with ``allow_non_affine``): put its buffers (BatchNorm
    running statistics) and the random state (dropout) back afterwards."""
    if not any(m.training for m in modules.values()):
        yield
        return
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


# --------------------------------------------------------------------------------------------- targets


@dataclass
class _Scores:
    """The classes asked for, as a ``(B, k)`` index, their logits, and whether a class axis is kept."""

    targets: torch.Tensor
    scores: torch.Tensor
    logits: torch.Tensor
    per_class: bool

    def squeeze(self, t: torch.Tensor) -> torch.Tensor:
        """Drop the class axis when one class per example was asked."""
        return t if self.per_class else t.squeeze(1)


def _targets(target: Target, logits: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Targets as a ``(B, k)`` long tensor, and whether the caller asked for a class axis."""
    batch, n_classes = logits.shape
    if target is None:
        return logits.argmax(dim=1, keepdim=True), False
    if isinstance(target, str):
        k = int(target[3:]) if target.startswith("top") and target[3:].isdigit() else 0
        if not 0 < k <= n_classes:
            raise ValueError(f"target {target!r}: use 'top1'..'top{n_classes}', an int, a tensor or None")
        return logits.topk(k, dim=1).indices, True
    if isinstance(target, bool) or (isinstance(target, torch.Tensor) and target.dtype == torch.bool):
        raise TypeError("target must hold integer class indices, not booleans")
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"target {target!r}: give an int, one int per example, a (batch, k) tensor, 'top5' or "
                        "None") from exc
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError("target must hold integer class indices")
    if t.device.type == "cpu":  # checked here, before anything waits on the device
        _check_range(t, n_classes)
    t = t.to(logits.device)
    if t.dim() == 0:
        return t.expand(batch, 1).long(), False
    if t.dim() == 1:
        if t.numel() != batch:
            raise ValueError(f"target has {t.numel()} entries for a batch of {batch}: give one per example")
        return t[:, None].long(), False
    if t.dim() == 2 and t.shape[0] == batch and t.shape[1] > 0:
        return t.long(), True
    raise ValueError(f"target of shape {tuple(t.shape)}: expected an int, (batch,) or (batch, k) with k >= 1")


def _check_range(t: torch.Tensor, n_classes: int) -> None:
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise ValueError(f"target classes must lie in [0, {n_classes - 1}], got {t.unique().tolist()[:10]}")


def _scores(target: Target, logits: torch.Tensor) -> tuple[_Scores, torch.Tensor | None]:
    """The scores asked for; and, for a target tensor on an accelerator, a range check to read later (reading
    it now would make the host wait before the backward passes)."""
    targets, per_class = _targets(target, logits.detach())
    in_range = None
    if isinstance(target, torch.Tensor) and target.device.type != "cpu":
        in_range = ((targets >= 0) & (targets < logits.shape[1])).all()
        targets = targets.clamp(0, logits.shape[1] - 1)
    return _Scores(targets, logits.gather(1, targets), logits.detach(), per_class), in_range


# ------------------------------------------------------------------------------------------ the passes


@dataclass
class _Layer:
    """One requested layer during the passes: its name, the graph node, its value and the input scale."""

    name: str
    node: torch.Tensor  # the tensor gradients are taken with respect to
    value: torch.Tensor  # what the contributions multiply (raw pixels for reference="raw")
    scale: torch.Tensor | None = None  # d/d(raw) = d/d(normalised) / std
    stored: torch.Tensor | None = None  # (B, k, ...) contributions, or gradients when they are kept
    totals: torch.Tensor | None = None  # (B, k)


def _layer(spec: LayerSpec, node: torch.Tensor, norm: Normalization | None) -> _Layer:
    value = node.detach()
    if spec.module is None and norm is not None:
        mean = torch.as_tensor(norm[0], dtype=value.dtype, device=value.device).view(1, -1, 1, 1)
        std = torch.as_tensor(norm[1], dtype=value.dtype, device=value.device).view(1, -1, 1, 1)
        return _Layer(spec.name, node, value * std + mean, std)
    return _Layer(spec.name, node, value)


def _backward(scores: torch.Tensor, layers: list[_Layer], keep_gradients: bool) -> None:
    """One backward pass per class. Fills, class by class, either the contributions or (with ``keep_gradients``)
    the gradients, ``(B, k, ...)`` each, and the totals ``sum_i w_i h_i``, ``(B, k)``."""
    k = scores.shape[1]
    for layer in layers:
        h = layer.value
        layer.stored = h.new_empty((h.shape[0], k, *h.shape[1:]))
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
            if keep_gradients:
                layer.stored[:, j] = g
                contrib = g * layer.value
            else:
                contrib = torch.mul(g, layer.value, out=layer.stored[:, j])
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


def _assemble(layers: list[_Layer], result: _Scores, keep_gradients: bool, reference: str) -> Decomposition:
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
            ``normalization`` or a model carrying a ``normalization`` attribute). The bias absorbs the
            difference: ``b_raw = b_normalized - sum_i w_i mean_i / std_i``.
        keep_gradients: also return ``w`` per layer in ``.gradients``; the contributions are then computed
            from ``w`` and ``h`` when read, so the result holds no extra full-size tensor.
        allow_non_affine: decompose a model that :func:`audit` rejects (the result is then not exact).
        strict: raise instead of warning when exactness is not guaranteed (fp16/bf16, unverified operations).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("decompose needs autograd: call it outside torch.inference_mode()")
    model = check_model(model)
    modules = dict(model.named_modules())
    specs, wants_all = resolve_layers(model, layers, modules)
    if not specs and not wants_all:
        raise ValueError("no layer asked for: give 'input', a preset ('blocks', 'all') or module names")
    wants_input = any(s.module is None for s in specs)
    norm = _normalization(model, normalization, reference, wants_input)
    _check_model(model, allow_non_affine, strict, modules)
    x = _prepare_inputs(model, inputs, wants_input)
    if norm is not None:
        _check_raw_input(x, norm)
    check_precision(model_dtype(model, x.dtype), strict)

    with (left_as_found(model, modules, x.device), exact_math(x.device), torch.enable_grad(),
          LayerCapture(model, specs, wants_all, modules) as capture):
        # the model gets a copy, so that one that normalises its input in place leaves the leaf x alone
        try:
            output = model(x.clone() if x.requires_grad else x)
        except RuntimeError as exc:
            raise RuntimeError(f"the model could not run on inputs of shape {tuple(x.shape)} ({x.dtype}): {exc}\n"
                               "Check the size and channels it expects (224 px RGB for the ImageNet networks, "
                               "64 px for the mini zoo).") from exc
        logits = _logits(output)
        if wants_all:
            named = {s.name for s in specs}
            specs = specs + [s for s in capture.relu_specs() if s.name not in named]
        if not specs:
            raise ValueError("layers='all' found no activation module (ReLU and kin) in the forward pass")
        result, in_range = _scores(target, logits)
        passes = [_layer(s, x if s.module is None else capture.tensor(s), norm) for s in specs]
        _backward(result.scores, passes, keep_gradients)
    # read only now, so that nothing waits on an accelerator before the backward passes
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"inputs hold NaN or infinite values (examples {bad[:10]}): the scores are not numbers")
    if in_range is not None and not bool(in_range):
        raise ValueError(f"target classes must lie in [0, {logits.shape[1] - 1}]")
    if not bool(torch.isfinite(result.scores).all()):
        raise ValueError("the model's scores hold NaN or infinite values: check the model and its weights")
    return _assemble(passes, result, keep_gradients, reference)
