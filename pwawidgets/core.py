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
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .audit import AuditReport, Call, PassAudit
from .calls import (
    Inputs,
    LayerPass,
    Normalization,
    Scores,
    Target,
    check_after_passes,
    check_raw_input,
    forward_args,
    input_normalization,
    layer_passes,
    left_as_found,
    logits_of,
    prepare_inputs,
    select_scores,
)
from .layers import LayerCapture, LayerSpec, check_model, resolve_layers
from .placement import model_dtype
from .precision import check_precision, exact_math

Parts = torch.Tensor | tuple[torch.Tensor, ...]  # one tensor, or one per model input (or per module output)


@dataclass(repr=False)
class Decomposition:
    """Result of :func:`decompose`; it owns its tensors (none is a view of the caller's inputs or targets).

    Shapes: with one class per example, ``score`` is ``(B,)``, ``contributions[layer]`` has the shape of the
    layer tensor ``(B, ...)`` and ``bias[layer]`` is ``(B,)``. With ``k`` classes per example (a ``(B, k)`` or
    ``"top<k>"`` target) the *class axis* is axis 1 (:attr:`class_axis`), right after the batch axis: ``(B, k)``,
    ``(B, k, ...)``, ``(B, k)``; so ``contributions["input"]`` of a top-3 decomposition of RGB images is
    ``(B, 3 classes, 3 channels, H, W)``. :meth:`column` gives one class per example.

    With several model inputs (a tuple), ``contributions["input"]``, ``activations["input"]`` and
    ``gradients["input"]`` are tuples, one tensor per input in the same order; so are those of a layer whose module
    returns a tuple of tensors. ``bias[layer]`` is one tensor: the sum over every tensor of the tuple plus the bias is
    the score.

    ``exact`` is False when the model was decomposed with ``allow_non_affine`` although the audit rejects it, or
    in half precision; ``notes`` say why. Where it is True, :func:`pwawidgets.verify` checks the affine piece.
    """

    layers: list[str]
    score: torch.Tensor
    target: torch.Tensor
    logits: torch.Tensor
    contributions: Mapping[str, Parts]  # a dict, or computed on reading when gradients are kept
    bias: dict[str, torch.Tensor]
    activations: dict[str, Parts]
    gradients: dict[str, Parts] | None = None
    reference: str = "normalized"
    per_class: bool = False
    exact: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def class_axis(self) -> int | None:
        """1 when the result holds ``k`` classes per example (that axis of every tensor but ``logits`` and
        ``activations``), None with one class per example."""
        return 1 if self.per_class else None

    @property
    def classes(self) -> int:
        """How many classes each example explains (``k``; 1 without a class axis)."""
        return self.target.shape[1] if self.per_class else 1

    def pixel_map(self, layer: str, size: int | tuple[int, int] | None = None, mode: str = "bilinear"
                  ) -> torch.Tensor:
        """Pixel map of a layer: contributions summed over channels, ``(B, [k,] H_l, W_l)``.

        With ``size`` (an int or ``(height, width)``) the map is resized with ``mode`` (``"bilinear"``, ``"bicubic"``,
        ``"nearest"``, ``"nearest-exact"`` or ``"area"``) for overlays: the values stay per layer cell, they are not
        rescaled, so rank on the layer grid (``size=None``) when counting cells.
        """
        size = check_resize(size, mode)
        contrib = self.contribution(layer)
        lead = 2 if self.per_class else 1
        if isinstance(contrib, tuple):
            raise ValueError(f"layer {layer!r} is a tuple of {len(contrib)} tensors (several inputs): no single "
                             f"map; sum one of them over its channels, e.g. contribution({layer!r})[0].sum({lead})")
        if contrib.dim() < lead + 3:
            raise ValueError(f"layer {layer!r} has contributions of shape {tuple(contrib.shape)}: no spatial map "
                             f"(need {'B x k x ' if self.per_class else 'B x '}C x H x W)")
        summed = contrib.sum(dim=lead)
        return summed if size is None else resize_maps(summed, size, mode)

    def bias_ratio(self, layer: str) -> torch.Tensor:
        """``bias / score`` at one layer; NaN where the score is zero (a ratio of nothing)."""
        score = self.score
        ratio = self._get(self.bias, layer) / score
        return torch.where(score == 0, torch.full_like(ratio, math.nan), ratio)

    def contribution_sum(self, layer: str) -> torch.Tensor:
        """``sum_i w_i h_i`` at one layer, ``(B, [k])``: the part of the score the layer's units explain (the rest
        is ``bias[layer]``)."""
        lead = 2 if self.per_class else 1
        contrib = self.contribution(layer)
        parts = contrib if isinstance(contrib, tuple) else (contrib,)
        return sum(c.reshape(*c.shape[:lead], -1).sum(-1) for c in parts)

    def contribution(self, layer: str) -> Parts:
        """``w * h`` at one layer (a tuple for several inputs), with a clear error for a layer that was not
        decomposed."""
        return self._get(self.contributions, layer)

    def activation(self, layer: str) -> Parts:
        """The layer tensor ``h`` (as the layer handed it on), ``(B, ...)``: no class axis."""
        return self._get(self.activations, layer)

    def gradient(self, layer: str) -> Parts:
        """``w`` at one layer (needs ``keep_gradients=True``), ``(B, [k,] ...)``."""
        if self.gradients is None:
            raise ValueError("gradients were not kept: decompose(..., keep_gradients=True)")
        return self._get(self.gradients, layer)

    def column(self, j: int) -> Decomposition:
        """The ``j``-th class of each example as a decomposition with one class per example (no class axis)."""
        if not self.per_class:
            raise ValueError("this decomposition has one class per example (no class axis): nothing to select")
        if isinstance(j, bool) or not isinstance(j, int) or not -self.classes <= j < self.classes:
            raise ValueError(f"j must be an int in [0, {self.classes - 1}] (k = {self.classes} classes), got {j!r}")
        def pick(t: Parts) -> Parts:
            return tuple(p[:, j] for p in t) if isinstance(t, tuple) else t[:, j]

        gradients = None if self.gradients is None else {n: pick(g) for n, g in self.gradients.items()}
        contributions = (LazyContributions(gradients, self.activations, False) if gradients is not None
                         else {n: pick(c) for n, c in self.contributions.items()})
        return Decomposition(list(self.layers), self.score[:, j], self.target[:, j], self.logits, contributions,
                             {n: b[:, j] for n, b in self.bias.items()}, self.activations, gradients,
                             self.reference, False, self.exact, list(self.notes))

    def __repr__(self) -> str:
        batch = self.score.shape[0]
        if self.per_class:
            classes = (f"k={self.classes} classes per example on axis 1 (class_axis): score/target/bias (B, k), "
                       "contributions/gradients (B, k, ...); .column(j) for one")
        else:
            classes = "one class per example (no class axis)"
        lines = [f"Decomposition of {batch} example(s), {classes}",
                 f"  target {_brief(self.target)}, score {_brief(self.score)}",
                 f"  reference {self.reference!r}, gradients {'kept' if self.gradients is not None else 'not kept'}, "
                 f"{'exact' if self.exact else 'NOT exact'}"]
        lines += [f"  note: {n}" for n in self.notes]
        shown = self.layers[:12]
        width = max(len(n) for n in shown) if shown else 0
        for name in shown:
            h = self.activations[name]
            shape = [tuple(p.shape) for p in h] if isinstance(h, tuple) else tuple(h.shape)
            lines.append(f"  {name:<{width}}  h {shape}, bias {_brief(self.bias[name])}")
        if len(self.layers) > len(shown):
            lines.append(f"  ... and {len(self.layers) - len(shown)} more layers")
        return "\n".join(lines)

    def _get(self, table: Mapping[str, Parts], layer: str) -> Parts:
        if layer not in table:
            raise KeyError(f"layer {layer!r} was not decomposed; decomposed layers: {self.layers}")
        return table[layer]


def _brief(t: torch.Tensor, n: int = 4) -> str:
    """A few values of a small tensor, for summaries."""
    values = t.flatten()[:n].tolist()
    text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)
    return f"[{text}{', ...' if t.numel() > n else ''}] {tuple(t.shape)}"


RESIZE_MODES: tuple[str, ...] = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")


def check_resize(size: int | tuple[int, int] | None, mode: str) -> tuple[int, int] | None:
    """``size`` as ``(height, width)`` (None stays None), with clear errors for a bad ``size`` or ``mode``."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else size
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)):
        raise ValueError(f"size must be a positive int or (height, width) of positive ints, got {size!r}")
    return tuple(pair)


def resize_maps(maps: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize maps ``(..., H, W)`` to ``size`` (bilinear by default); values are not rescaled."""
    size = check_resize(size, mode)
    if size is None:
        raise ValueError("size must be a positive int or (height, width), got None")
    if maps.dim() < 2:
        raise ValueError(f"maps of shape {tuple(maps.shape)}: need (..., H, W)")
    if tuple(maps.shape[-2:]) == size:
        return maps
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(flat, size=size, mode=mode, **kwargs).reshape(*maps.shape[:-2], *size)


# ------------------------------------------------------------------------------------------ the passes


def _per_example(t: torch.Tensor) -> torch.Tensor:
    """The sum over every axis but the batch axis (pairwise summation in the working dtype); ``(B,)`` stays."""
    return t.reshape(t.shape[0], -1).sum(-1)


class Reader:
    """What a call keeps from the passes of :func:`run_passes`. This one keeps, per layer, the totals
    ``sum_i w_i h_i`` ``(B, k)`` only (so ``bias = score - totals``); subclasses keep more, or watch the forward.
    ``audit`` is the audit's report on the model, as the pass found it."""

    audit: AuditReport | None = None

    def watch(self, model: nn.Module, modules: dict[str, nn.Module], specs: list[LayerSpec], x: Parts
              ) -> contextlib.AbstractContextManager:
        """A context entered around the forward pass only (after the layer capture's hooks); ``x`` is the batch (a
        tuple for several inputs)."""
        return contextlib.nullcontext()

    def begin(self, layers: list[LayerPass], k: int) -> None:
        for layer in layers:
            layer.totals = layer.value.new_empty((layer.value.shape[0], k))

    def edges(self) -> list:
        """More gradient edges (``torch.autograd.graph.GradientEdge``) each backward pass reaches, after the layers'."""
        return []

    def read_edges(self, j: int, grads: Sequence[torch.Tensor | None]) -> None:
        """The gradients at :meth:`edges` for class column ``j`` (None where the score does not reach one)."""

    def read(self, j: int, layer: LayerPass, w: torch.Tensor) -> None:
        """``w = d score_j / d h`` at one layer (per raw pixel for ``reference="raw"``)."""
        layer.totals[:, j] = _per_example(w * layer.value)  # pairwise summation in the working dtype


class KeepContributions(Reader):
    """Also keeps the contributions ``w * h``, ``(B, k, ...)``."""

    def begin(self, layers: list[LayerPass], k: int) -> None:
        super().begin(layers, k)
        for layer in layers:
            h = layer.value
            layer.stored = h.new_empty((h.shape[0], k, *h.shape[1:]))

    def read(self, j: int, layer: LayerPass, w: torch.Tensor) -> None:
        contrib = torch.mul(w, layer.value, out=layer.stored[:, j])
        layer.totals[:, j] = _per_example(contrib)


class KeepGradients(KeepContributions):
    """Keeps the gradients ``w`` instead, ``(B, k, ...)`` (contributions are computed from them when read)."""

    def read(self, j: int, layer: LayerPass, w: torch.Tensor) -> None:
        layer.stored[:, j] = w
        layer.totals[:, j] = _per_example(w * layer.value)


def _backward(scores: torch.Tensor, layers: list[LayerPass], reader: Reader, unused_zero: bool = False) -> None:
    """One backward pass per class; the reader gets each layer's gradient. A layer the score does not reach is an
    error, or with ``unused_zero`` gets a zero gradient (its whole score lands in the bias) and a warning."""
    k = scores.shape[1]
    if not scores.requires_grad:
        raise ValueError("the scores do not depend on the inputs through autograd: forward() runs under "
                         "torch.no_grad() (or detaches its output). Remove that, so that gradients can be taken.")
    reader.begin(layers, k)
    nodes = [layer.node for layer in layers]
    edges = reader.edges()
    unused: list[str] = []
    for j in range(k):
        # Examples are independent in eval mode, so the gradient of the batch sum is per-example.
        grads = torch.autograd.grad(scores[:, j].sum(), nodes + edges, retain_graph=j < k - 1, allow_unused=True)
        reader.read_edges(j, grads[len(nodes):])
        for layer, g in zip(layers, grads[:len(nodes)], strict=True):
            if g is None and unused_zero:
                g = torch.zeros_like(layer.node)
                name = layer.name if layer.part is None else f"{layer.name}[{layer.part}]"
                unused += [name] if name not in unused else []
            elif g is None:
                raise ValueError(
                    f"the score does not depend on layer {layer.name!r} through autograd: forward() cuts it off "
                    "(detach(), .data, torch.no_grad() or a branch that does not reach the output). The whole score "
                    "would land in the bias. Remove the cut, or decompose at a layer after it."
                )
            reader.read(j, layer, g if layer.scale is None else g / layer.scale)
    if unused:
        warnings.warn(f"the score does not depend on layer(s) {unused} through autograd (an output the model computes "
                      "but does not use, or a cut): their contributions are zeros and the bias is the whole score",
                      UserWarning, stacklevel=3)


class LazyContributions(Mapping):
    """``contributions[name] = w * h``, computed when read from the kept gradients and activations, so that a
    decomposition with ``keep_gradients=True`` holds one full-size tensor per layer and class, not two."""

    def __init__(self, gradients: dict[str, Parts], activations: dict[str, Parts], per_class: bool):
        self._gradients, self._activations, self._per_class = gradients, activations, per_class

    def __getitem__(self, name: str) -> Parts:
        def times(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return w * (h.unsqueeze(1) if self._per_class else h)

        w, h = self._gradients[name], self._activations[name]
        return tuple(map(times, w, h)) if isinstance(w, tuple) else times(w, h)

    def __iter__(self):
        return iter(self._gradients)

    def __len__(self) -> int:
        return len(self._gradients)


def _owned(t: torch.Tensor, inputs: Inputs) -> torch.Tensor:
    """``t``, or a copy where it shares memory with one of the caller's ``inputs`` (an in-place edit of them later
    must not change the result)."""
    for x in inputs if isinstance(inputs, tuple) else (inputs,):
        if t.device == x.device and t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
            return t.clone()
    return t


def by_layer(passes: list[LayerPass]) -> dict[str, list[LayerPass]]:
    """The passes grouped by layer name, in order: one pass per layer, or one per tensor of a tuple (``part``)."""
    groups: dict[str, list[LayerPass]] = {}
    for p in passes:
        groups.setdefault(p.name, []).append(p)
    return groups


def _assemble(layers: list[LayerPass], result: Scores, keep_gradients: bool, reference: str,
              inputs: Inputs) -> Decomposition:
    score = result.scores.detach()
    groups = by_layer(layers)

    def pack(group: list[LayerPass], read) -> Parts:
        values = tuple(read(p) for p in group)
        return values if group[0].part is not None else values[0]

    stored = {n: pack(g, lambda p: result.squeeze(p.stored)) for n, g in groups.items()}
    activations = {n: pack(g, lambda p: _owned(p.value, inputs)) for n, g in groups.items()}
    bias = {n: result.squeeze(score - sum(p.totals for p in g)) for n, g in groups.items()}
    contributions = LazyContributions(stored, activations, result.per_class) if keep_gradients else stored
    return Decomposition(
        layers=list(groups),
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


def _exactness_notes(report: AuditReport, dec: Decomposition) -> None:
    """Mark a result as not exact, with the reasons: a model the audit rejects (decomposed only with
    ``allow_non_affine``), half precision."""
    if not report.ok:
        dec.exact = False
        dec.notes.append("not exact: the model is not piece-wise affine (decomposed with allow_non_affine=True): "
                         + "; ".join(str(f) for f in report.offending))
    if dec.score.dtype in (torch.float16, torch.bfloat16):
        dec.exact = False
        dec.notes.append(f"not exact: computed in {dec.score.dtype}; use model.float() or .double()")


@dataclass
class Request:
    """What a caller asked of :func:`run_passes`: the decomposition's options."""

    target: Target
    layers: str | Sequence[str] | None
    reference: str = "normalized"
    normalization: Normalization | None = None
    allow_non_affine: bool = False
    strict: bool = False
    forward_args: tuple = ()  # passed to forward after the inputs; constants of the decomposition
    several: bool = False  # the caller takes tuples (several inputs, layers that are tuples of tensors)
    unused_zero: bool = False  # a layer the score does not reach gets zeros and a warning instead of an error
    # the (B, C) logits and the target in our forms, from the model's output and the target asked
    read_output: Callable[[object, Target], tuple[torch.Tensor, Target]] = lambda output, target: (logits_of(output),
                                                                                                   target)


def run_passes(model: nn.Module, inputs: Inputs, request: Request, reader: Reader
               ) -> tuple[list[LayerPass], Scores]:
    """The one pass template of every decomposition-like call: the checks, one forward pass (layer capture, and
    whatever ``reader.watch`` adds), one backward pass per class feeding ``reader``, the checks after. Returns the
    layer passes (one per layer, or one per tensor where a layer is a tuple: :func:`by_layer`) and the scores."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("the decomposition needs autograd: call it outside torch.inference_mode()")
    model = check_model(model)
    modules = dict(model.named_modules())
    specs, wants_all = resolve_layers(model, request.layers, modules)
    if not specs and not wants_all:
        raise ValueError("no layer asked for: give 'input', a preset ('blocks', 'all') or module names")
    wants_input = any(s.module is None for s in specs)
    if isinstance(inputs, tuple) and not request.several:
        raise ValueError("this call takes one input tensor, not a tuple; decompose and layer_biases take several")
    norm = input_normalization(model, request.normalization, request.reference, wants_input)
    xs = prepare_inputs(model, inputs, wants_input)
    if norm is not None and len(xs) > 1:
        raise ValueError("reference='raw' takes one image batch as inputs, not a tuple: use reference='normalized'")
    call = Call(len(xs), request.forward_args)
    checked = PassAudit.before_pass(model, modules, request.allow_non_affine, request.strict, call)
    x = xs[0]
    if norm is not None:
        check_raw_input(x, norm)
    check_precision(model_dtype(model, next((t.dtype for t in xs if t.is_floating_point()), x.dtype)),
                    request.strict)

    with (left_as_found(model, modules, x.device), exact_math(x.device), torch.enable_grad(),
          LayerCapture(model, specs, wants_all, modules) as capture):
        with reader.watch(model, modules, specs, xs if isinstance(inputs, tuple) else x), checked.watching():
            # the model gets copies, so that one that normalises its input in place leaves the leaves alone
            try:
                output = model(*(t.clone() if t.requires_grad else t for t in xs), *request.forward_args)
            except RuntimeError as exc:
                shapes = ", ".join(f"{tuple(t.shape)} ({t.dtype})" for t in xs)
                raise RuntimeError(f"the model could not run on inputs of shape {shapes}: "
                                   f"{exc}\nCheck the size and channels it expects (224 px RGB for the ImageNet "
                                   "networks, 64 px for the mini zoo).") from exc
        checked.after_pass()
        reader.audit = checked.report
        logits, target = request.read_output(output, request.target)
        if wants_all:
            named = {s.name for s in specs}
            specs = specs + [s for s in capture.relu_specs() if s.name not in named]
        if not specs:
            raise ValueError("layers='all' found no activation module (ReLU and kin) in the forward pass")
        result, in_range = select_scores(target, logits)
        passes = [p for s in specs for p in layer_passes(
            s, (xs if isinstance(inputs, tuple) else x) if s.module is None else capture.tensor(s), norm)]
        tuples = sorted({p.name for p in passes if p.part is not None})
        if tuples and not request.several:
            raise ValueError(f"layer(s) {tuples} return a tuple of tensors: this call takes layers "
                             "that are one tensor; decompose takes tuples")
        _backward(result.scores, passes, reader, request.unused_zero)
    check_after_passes(xs, result, in_range)  # only now, so that nothing waits on an accelerator before them
    return passes, result


def decompose(
    model: nn.Module,
    inputs: Inputs,
    target: Target = None,
    layers: str | Sequence[str] | None = None,
    *,
    additional_forward_args: object = None,
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
            model that starts with an embedding (then decompose at a layer after it). A tuple of such tensors (one
            per argument of ``forward``, the same batch size) for a model with several inputs: the ``"input"``
            contributions are then a tuple in the same order, and their sum over all inputs plus the bias is the
            score.
        target: class per example: an int, one int per example, a ``(B, k)`` tensor of ``k`` classes each,
            ``"top5"`` (the 5 highest logits of each example, from the same forward pass; any ``"top<k>"``),
            or None for the predicted class. The score is the logit (pre-softmax).
        layers: layer names, preset names (``"blocks"``, ``"all"``) or ``"input"``; None means ``"input"``; see
            :mod:`pwawidgets.layers`. A module returning a tuple of tensors gives a tuple of contributions.
        additional_forward_args: passed to ``forward`` after the inputs, as in Captum: a tuple of arguments, or one
            object. They are not attributed: they count as constants, so what they add to the score lands in the
            bias (tensors among them too).
        reference: input space of the ``"input"`` contributions: ``"normalized"`` (the tensor the model
            receives; default) or ``"raw"`` (pixels in [0, 1] before normalisation, which needs
            ``normalization`` or a model carrying a ``preprocessing``: :func:`pwawidgets.preprocessing_of`). The
            bias absorbs the difference: ``b_raw = b_normalized - sum_i w_i mean_i / std_i``.
        keep_gradients: also return ``w`` per layer in ``.gradients``; the contributions are then computed
            from ``w`` and ``h`` when read, so the result holds no extra full-size tensor.
        allow_non_affine: decompose a model that :func:`audit` rejects (the result then has ``exact=False`` and a
            note saying why).
        strict: raise instead of warning when exactness is not guaranteed (fp16/bf16, unverified operations).
    """
    request = Request(target, layers, reference, normalization, allow_non_affine, strict,
                      forward_args(additional_forward_args), several=True)
    return decompose_request(model, inputs, request, keep_gradients)


def decompose_request(model: nn.Module, inputs: Inputs, request: Request, keep_gradients: bool = False
                      ) -> Decomposition:
    """:func:`decompose` of a :class:`Request` (for the integrations, which set its other fields)."""
    reader = KeepGradients() if keep_gradients else KeepContributions()
    passes, result = run_passes(model, inputs, request, reader)
    dec = _assemble(passes, result, keep_gradients, request.reference, inputs)
    _exactness_notes(reader.audit, dec)
    return dec


@dataclass(repr=False)
class LayerBiases:
    """Result of :func:`layer_biases`, always with a class axis: ``bias`` ``(B, k, L)`` (one column per layer of
    ``layers``, in the order they run), ``score`` and ``target`` ``(B, k)``."""

    layers: list[str]
    bias: torch.Tensor
    score: torch.Tensor
    target: torch.Tensor

    def __repr__(self) -> str:
        batch, k, n = self.bias.shape
        lines = [f"LayerBiases of {batch} example(s) x {k} class(es) x {n} layer(s): bias (B, k, L), score and "
                 "target (B, k)",
                 f"  target {_brief(self.target)}, score {_brief(self.score)}"]
        shown = self.layers[:12]
        width = max(len(n) for n in shown) if shown else 0
        lines += [f"  {name:<{width}}  bias {_brief(self.bias[..., i])}" for i, name in enumerate(shown)]
        if n > len(shown):
            lines.append(f"  ... and {n - len(shown)} more layers")
        return "\n".join(lines)


def layer_biases(
    model: nn.Module,
    inputs: Inputs,
    target: Target = None,
    layers: str | Sequence[str] | None = ("input", "all"),
    *,
    additional_forward_args: object = None,
    reference: str = "normalized",
    normalization: Normalization | None = None,
) -> LayerBiases:
    """The bias at every layer of ``layers`` (default: the input and every ReLU output; None means ``"input"``),
    as :func:`decompose` computes it, without keeping contributions; always with a class axis.

    The same forward pass and backward passes as :func:`decompose`; each class's gradients are reduced to
    ``w . h`` at once, so memory is that of the forward pass plus one class's gradients, whatever the number of
    layers (Fig. 3 over every ReLU of a large network). ``inputs`` and ``additional_forward_args`` as for
    :func:`decompose` (several inputs: the bias of ``"input"`` is the score less every input's contributions)."""
    request = Request(target, layers, reference, normalization, forward_args=forward_args(additional_forward_args),
                      several=True)
    passes, result = run_passes(model, inputs, request, Reader())
    scores = result.scores.detach()
    groups = by_layer(passes)
    bias = scores.unsqueeze(-1) - torch.stack([sum(p.totals for p in g) for g in groups.values()], dim=-1)
    return LayerBiases(list(groups), bias, scores, result.targets)
