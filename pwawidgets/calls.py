"""What every decomposition-like call checks and prepares: the inputs, the input normalisation, the logits,
the target classes and the layer tensors gradients are taken at. Shared by :mod:`pwawidgets.core`,
:mod:`pwawidgets.bias` and :mod:`pwawidgets.robustness`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .layers import LayerSpec
from .placement import model_device, model_dtype
from .preprocessing import check_inputs_fit, normalization_of

Target = int | Sequence[int] | torch.Tensor | str | None
Normalization = tuple[Sequence[float], Sequence[float]]


Inputs = torch.Tensor | tuple[torch.Tensor, ...]


def prepare_inputs(model: nn.Module, inputs: Inputs, wants_input: bool) -> tuple[torch.Tensor, ...]:
    """The batch on the model's device, as a tuple of one tensor per model input: floats in the model's dtype (leaves
    that require grad), or integer indices as they are (for models that start with an embedding). A batch made by
    ``load_image`` for another normalisation than the model's gives a
    :class:`~pwawidgets.preprocessing.PreprocessingWarning`. Every tensor of a tuple must have the same batch size."""
    several = isinstance(inputs, tuple)
    parts = inputs if several else (inputs,)
    if several and not parts:
        raise ValueError("inputs is an empty tuple: give a tensor, or a tuple of tensors (one per model input)")
    for i, part in enumerate(parts):
        where = f"inputs[{i}]" if several else "inputs"
        if not isinstance(part, torch.Tensor):
            raise TypeError(f"{where} must be a tensor, got {type(part).__name__}; see pwawidgets.load_image"
                            + ("; pass other arguments as additional_forward_args" if several else ""))
        if part.dim() == 0 or part.shape[0] == 0:
            raise ValueError(f"{where} of shape {tuple(part.shape)}: give a batch with at least one example, (B, ...)")
    batches = [part.shape[0] for part in parts]
    if len(set(batches)) > 1:
        raise ValueError(f"the tensors of inputs disagree on the batch size (axis 0): {batches}; every input tensor "
                         "holds the same examples, one per row")
    return tuple(_prepare_one(model, part, wants_input, f"inputs[{i}]" if several else "inputs")
                 for i, part in enumerate(parts))


def _prepare_one(model: nn.Module, inputs: torch.Tensor, wants_input: bool, where: str) -> torch.Tensor:
    check_inputs_fit(model, inputs)
    device = model_device(model, inputs.device)
    if inputs.dtype in (torch.uint8, torch.int8):
        raise TypeError(f"{where} is a uint8 image tensor: convert it to floats in [0, 1] (x.float() / 255) and "
                        "normalise it as the model expects, or load it with pwawidgets.load_image")
    if inputs.dtype == torch.bool or inputs.is_complex():
        raise TypeError(f"{where} of dtype {inputs.dtype}: give real floats (or integer indices for an embedding)")
    x = inputs.detach()
    if x.is_inference():  # made under torch.inference_mode: autograd cannot use it
        x = x.clone()
    if not x.is_floating_point():
        if wants_input:
            raise ValueError(f"integer {where} (token indices) have no contributions: the input is not a continuous "
                             "variable. Decompose at a layer after the embedding (e.g. its module name).")
        return x.to(device)
    return x.to(device=device, dtype=model_dtype(model, x.dtype)).requires_grad_(True)


def forward_args(additional_forward_args: object) -> tuple:
    """``additional_forward_args`` as the tuple of arguments passed to ``forward`` after the inputs, as in Captum: None
    is none, a tuple is the arguments, anything else is one argument. They are constants of the decomposition."""
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)


def input_normalization(model: nn.Module, normalization: Normalization | None, reference: str, wants_input: bool):
    """``(mean, std)`` for ``reference="raw"`` at the input: ``normalization`` when given, else the model's
    preprocessing (:func:`~pwawidgets.preprocessing.preprocessing_of`); None when no raw input is asked."""
    if reference not in ("normalized", "raw"):
        raise ValueError("reference must be 'normalized' or 'raw'")
    if reference != "raw" or not wants_input:
        return None
    norm = normalization_of(model, normalization)
    if norm is None:
        raise ValueError(
            "reference='raw' needs the input normalisation: pass normalization=(mean, std), or give the model its "
            "preprocessing (model.preprocessing = pwawidgets.Preprocessing(...); pwawidgets.load_model does)"
        )
    return norm


def check_raw_input(x: torch.Tensor, norm: Normalization) -> None:
    channels = len(torch.as_tensor(norm[0]).flatten())
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"reference='raw' works on image batches (B, C, H, W) with C = {channels} channels (one "
                         f"per normalisation value); the input has shape {tuple(x.shape)}")


def logits_of(output) -> torch.Tensor:
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


# --------------------------------------------------------------------------------------------- targets


@dataclass
class Scores:
    """The classes asked for, as a ``(B, k)`` index, their logits, and whether a class axis is kept."""

    targets: torch.Tensor
    scores: torch.Tensor
    logits: torch.Tensor
    per_class: bool

    def squeeze(self, t: torch.Tensor) -> torch.Tensor:
        """Drop the class axis when one class per example was asked."""
        return t if self.per_class else t.squeeze(1)


def check_one_per_example(target: Target, caller: str) -> None:
    """Refuse, from its form alone (before any pass), a target of more than one class per example."""
    several = ""
    if isinstance(target, str) and target.startswith("top") and target[3:].isdigit() and int(target[3:]) > 1:
        several = f"target {target!r}"
    elif isinstance(target, torch.Tensor) and target.dim() == 2 and target.shape[1] > 1:
        several = f"a target of shape {tuple(target.shape)}"
    elif isinstance(target, (list, tuple)) and any(isinstance(t, (list, tuple)) and len(t) > 1 for t in target):
        several = "a target of several classes per example"
    if several:
        raise ValueError(f"{several}: {caller} takes one class per example (an int, one int per example or None); "
                         "for k classes at once use decompose(..., target='top5') and baselines.from_decomposition")


def parse_targets(target: Target, logits: torch.Tensor, *, one_per_example: bool = False
                  ) -> tuple[torch.Tensor, bool]:
    """The one target parser of the package: targets as a ``(B, k)`` long tensor of its own (never a view of the
    caller's), and whether the caller asked for a class axis.

    ``target``: an int, one int per example, a ``(B, k)`` tensor of ``k`` classes each, ``"top<k>"`` (the ``k``
    highest ``logits`` of each example) or None (the predicted class). ``one_per_example`` refuses more than one
    class per example (``k = 1`` is accepted)."""
    batch, n_classes = logits.shape
    if one_per_example:
        check_one_per_example(target, "this call")
    if target is None:
        return logits.argmax(dim=1, keepdim=True), False
    forms = "an int, one int per example" + ("" if one_per_example else ", a (batch, k) tensor, 'top5'") + " or None"
    if isinstance(target, str):
        k = int(target[3:]) if target.startswith("top") and target[3:].isdigit() else 0
        if not 0 < k <= n_classes:
            raise ValueError(f"target {target!r}: use 'top1'..'top{n_classes}', {forms}")
        return logits.topk(k, dim=1).indices, True
    if isinstance(target, bool) or (isinstance(target, torch.Tensor) and target.dtype == torch.bool):
        raise TypeError("target must hold integer class indices, not booleans")
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"target {target!r}: give {forms}") from exc
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError("target must hold integer class indices")
    if t.device.type == "cpu":  # checked here, before anything waits on the device
        _check_range(t, n_classes)
    t = t.to(logits.device)
    if t.dim() == 0:
        return t.expand(batch, 1).long().clone(), False
    if t.dim() == 1:
        if t.numel() != batch:
            raise ValueError(f"target has {t.numel()} entries for a batch of {batch}: give one per example")
        return t[:, None].long().clone(), False
    if t.dim() == 2 and t.shape[0] == batch and t.shape[1] > 0:
        return t.long().clone(), True
    raise ValueError(f"target of shape {tuple(t.shape)} for a batch of {batch}: expected an int, (batch,) or "
                     "(batch, k) with k >= 1")


def _check_range(t: torch.Tensor, n_classes: int) -> None:
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise ValueError(f"target classes must lie in [0, {n_classes - 1}], got {t.unique().tolist()[:10]}")


def select_scores(target: Target, logits: torch.Tensor, *, one_per_example: bool = False
                  ) -> tuple[Scores, torch.Tensor | None]:
    """The scores asked for (:func:`parse_targets`); and, for a target tensor on an accelerator, a range check to
    read later (reading it now would make the host wait before the backward passes)."""
    targets, per_class = parse_targets(target, logits.detach(), one_per_example=one_per_example)
    in_range = None
    if isinstance(target, torch.Tensor) and target.device.type != "cpu":
        in_range = ((targets >= 0) & (targets < logits.shape[1])).all()
        targets = targets.clamp(0, logits.shape[1] - 1)
    return Scores(targets, logits.gather(1, targets), logits.detach(), per_class), in_range


# ------------------------------------------------------------------------------------------ layer tensors


@dataclass
class LayerPass:
    """One requested layer during the passes: its name, the graph node, its value and the input scale."""

    name: str
    node: torch.Tensor  # the tensor gradients are taken with respect to
    value: torch.Tensor  # what the contributions multiply (raw pixels for reference="raw")
    scale: torch.Tensor | None = None  # d/d(raw) = d/d(normalised) / std
    mean: torch.Tensor | None = None  # raw = normalised * std + mean
    stored: torch.Tensor | None = None  # (B, k, ...) contributions, or gradients when they are kept
    totals: torch.Tensor | None = None  # (B, k)
    part: int | None = None  # which tensor of a tuple (several model inputs, or a module returning a tuple)


def layer_passes(spec: LayerSpec, node: torch.Tensor | tuple[torch.Tensor, ...], norm: Normalization | None
                 ) -> list[LayerPass]:
    """The passes of one layer: one, or one per tensor (``part``) where the layer is a tuple of tensors."""
    if isinstance(node, tuple):
        return [LayerPass(spec.name, t, t.detach(), part=i) for i, t in enumerate(node)]
    value = node.detach()
    if spec.module is None and norm is not None:
        mean = torch.as_tensor(norm[0], dtype=value.dtype, device=value.device).view(1, -1, 1, 1)
        std = torch.as_tensor(norm[1], dtype=value.dtype, device=value.device).view(1, -1, 1, 1)
        return [LayerPass(spec.name, node, value * std + mean, std, mean)]
    return [LayerPass(spec.name, node, value)]


def check_after_passes(xs: tuple[torch.Tensor, ...], result: Scores, in_range: torch.Tensor | None) -> None:
    """After the passes: no NaN or infinite input, every target class in range, finite scores. Read only then, so
    that nothing waits on an accelerator before the backward passes."""
    for i, x in enumerate(xs):
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero().flatten().tolist()
            where = f"inputs[{i}]" if len(xs) > 1 else "inputs"
            raise ValueError(f"{where} hold NaN or infinite values (examples {bad[:10]}): the scores are not numbers")
    if in_range is not None and not bool(in_range):
        raise ValueError(f"target classes must lie in [0, {result.logits.shape[1] - 1}]")
    if not bool(torch.isfinite(result.scores).all()):
        raise ValueError("the model's scores hold NaN or infinite values: check the model and its weights")


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
