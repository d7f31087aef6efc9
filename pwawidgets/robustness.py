"""Bias as a robustness metric (the paper's Sec. 3.2), measured: the bias/score ratio per layer (Fig. 3), how the
score and the prediction react to small perturbations, and the statistics to set one against the other.

:func:`bias_curve` gives the bias and the score at the input and after every ReLU for many images, with the
averaging rules of Fig. 3 stated and switchable (:class:`BiasCurve`). The paper reads a large bias share as
robustness to small perturbations of the input or of the first feature maps. Inside a linear region the score
moves by ``w . delta`` whatever the bias is, so the claim is an empirical one; this module measures the response
per image so it can be set against the bias ratio:

- :func:`gaussian`: Gaussian noise of standard deviation ``sigma`` (several draws);
- :func:`random_sign`: FGSM's step with random signs (the same size in every norm, no aim; several draws);
- :func:`fgsm` and :func:`pgd`: the signed-gradient step and a few projected steps that *lower the target score*
  (the logit of the class explained), inside an L-infinity ball of radius ``eps``;
- :func:`radius_along`: how far along a perturbation the input stays in its linear region (float64).

Sizes: at the input, ``sigma`` and ``eps`` are in raw pixel units ([0, 1] scale) and are divided by the model's
normalisation std (the model's preprocessing or ``normalization``); at a layer, they are fractions of the root mean
square of that layer's tensor, per image. Inputs are not clipped to the valid pixel range.

Statistics: :func:`spearman`, :func:`correlation` and :func:`paired_difference` with bootstrap percentile
confidence intervals over images.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from . import arguments
from .calls import Normalization, Target, check_one_per_example, parse_targets
from .core import layer_biases
from .exactness import region_radius
from .layers import INPUT, LayerSpec, resolve_one, substitute
from .placement import channels_last, model_device
from .precision import exact_math
from .preprocessing import check_inputs_fit, normalization_of


@dataclass
class Response:
    """The target score and prediction after a perturbation, per image (``draws`` perturbations each)."""

    kind: str
    size: float
    layer: str
    target: torch.Tensor  # (B,)
    clean: torch.Tensor  # (B,) target score without perturbation
    perturbed: torch.Tensor  # (B, draws) target score with it
    flipped: torch.Tensor  # (B, draws) the top-1 class changed
    delta: torch.Tensor | None = None  # (B, ...) the last perturbation (of the input or the layer tensor)

    @property
    def relative_change(self) -> torch.Tensor:
        """``|S' - S| / |S|`` averaged over the draws, ``(B,)``."""
        return ((self.perturbed - self.clean[:, None]).abs() / self.clean.abs()[:, None]).mean(1)

    @property
    def drop(self) -> torch.Tensor:
        """``(S - S') / |S|`` averaged over the draws, ``(B,)``: how much of the score the perturbation removed."""
        return ((self.clean[:, None] - self.perturbed) / self.clean.abs()[:, None]).mean(1)

    @property
    def flip_rate(self) -> torch.Tensor:
        """Share of the draws that changed the top-1 class, ``(B,)``."""
        return self.flipped.double().mean(1)


class _Setup:
    """The clean pass: targets, clean scores and predictions, and how a unit of size maps onto the tensor."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, target, layer: str | None, normalization):
        self.model = model
        self.spec: LayerSpec = resolve_one(model, layer)
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}; see pwawidgets.load_image")
        check_inputs_fit(model, inputs)
        device = model_device(model, inputs.device)
        self.x = inputs.detach().clone().to(device)  # a copy: a model may edit its input in place
        kept: list[torch.Tensor] = []
        with torch.no_grad(), exact_math(device):
            if self.spec.module is None:  # copies: a model may edit its input in place; the layout of every pass
                logits = model(channels_last(self.x.clone()))
                value = self.x
            else:
                with substitute(model, self.spec, lambda o: kept.append(o.detach().clone()) or o):
                    logits = model(channels_last(self.x.clone()))
                value = kept[0]
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError("the model must return logits of shape (batch, classes), got "
                             f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        self.shape = value.shape
        self.prediction = logits.argmax(1)
        self.target = parse_targets(target, logits, one_per_example=True)[0][:, 0]
        self.clean = logits.gather(1, self.target[:, None])[:, 0]
        if self.spec.module is None:
            norm = normalization_of(model, normalization)
            std = torch.ones(1) if norm is None else torch.as_tensor(norm[1], dtype=value.dtype)
            self.unit = (1 / std).to(device=value.device, dtype=value.dtype).view(1, -1, *[1] * (value.dim() - 2))
        else:
            rms = value.flatten(1).pow(2).mean(1).sqrt()
            self.unit = rms.view(-1, *[1] * (value.dim() - 1))

    def logits(self, delta: torch.Tensor) -> torch.Tensor:
        if self.spec.module is None:
            return self.model(channels_last(self.x + delta))
        with substitute(self.model, self.spec, lambda o: o + delta):
            return self.model(channels_last(self.x.clone()))

    def score_and_flip(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), exact_math(self.x.device):
            logits = self.logits(delta)
        # read outside inference mode: what is handed back is an ordinary tensor
        return logits.gather(1, self.target[:, None])[:, 0], logits.argmax(1) != self.prediction

    def gradient(self, delta: torch.Tensor) -> torch.Tensor:
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad(), exact_math(self.x.device):
            score = self.logits(delta).gather(1, self.target[:, None]).sum()
            (grad,) = torch.autograd.grad(score, delta)
        return grad.contiguous()

    def response(self, kind: str, size: float, scores: list, flips: list, delta=None) -> Response:
        return Response(kind, size, self.spec.name, self.target, self.clean, torch.stack(scores, 1),
                        torch.stack(flips, 1), delta)


def _in_batches(run: Callable[[torch.Tensor, object, int], Response], inputs: torch.Tensor, target,
                batch_size: int | None) -> Response:
    """``run(inputs_chunk, target_chunk, start)`` over chunks of ``batch_size`` images, joined into one response."""
    if batch_size is None or batch_size >= inputs.shape[0]:
        return run(inputs, target, 0)
    if isinstance(target, torch.Tensor) and target.dim() == 0 or isinstance(target, int):
        target = torch.full((inputs.shape[0],), int(target), dtype=torch.long)
    split = target is not None and not isinstance(target, str)  # None and "top1" are read per chunk
    parts = [run(inputs[i:i + batch_size], target[i:i + batch_size] if split else target, i)
             for i in range(0, inputs.shape[0], batch_size)]
    first = parts[0]
    join = {name: torch.cat([getattr(p, name) for p in parts]) for name in ("target", "clean", "perturbed", "flipped")}
    delta = None if first.delta is None else torch.cat([p.delta for p in parts])
    return Response(first.kind, first.size, first.layer, delta=delta, **join)


def _check_inputs(inputs, target, batch_size) -> None:
    """The inputs, the batch size and the form of the target of a perturbation, before any work."""
    if (not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point() or inputs.dim() < 2
            or inputs.shape[0] == 0):
        what = f"{inputs.dtype} {tuple(inputs.shape)}" if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"inputs must be a float batch (B, ...) with B >= 1, got {what}; see pwawidgets.load_image")
    arguments.finite("inputs", inputs)
    arguments.integer("batch_size", batch_size, 1, optional=True)
    check_one_per_example(target, "a perturbation")  # the rest of the target is read by the one parser


def _check_size(name: str, value) -> float:
    return arguments.number(name, value, 0)


def gaussian(model: nn.Module, inputs: torch.Tensor, target: Target = None, sigma: float = 4 / 255,
             layer: str | None = None, *,
             draws: int = 4, seed: int = 0, normalization: Normalization | None = None,
             batch_size: int | None = None) -> Response:
    """Gaussian noise of standard deviation ``sigma`` on the input (raw pixel units) or on ``layer`` (fraction of
    its RMS), ``draws`` times per image (seeded: the same noise whatever ``batch_size``). ``target``: one class per
    image (an int, one per image, None for the predicted class); ``layer``: None means ``"input"``."""
    sigma = _check_size("sigma", sigma)
    return _random_draws("gaussian", sigma, lambda shape, gen, dtype: torch.randn(shape, generator=gen, dtype=dtype),
                         model, inputs, target, layer, draws, seed, normalization, batch_size)


def random_sign(model: nn.Module, inputs: torch.Tensor, target: Target = None, eps: float = 1 / 255,
                layer: str | None = None, *,
                draws: int = 4, seed: int = 0, normalization: Normalization | None = None,
                batch_size: int | None = None) -> Response:
    """FGSM's step with random signs, ``delta = eps * s`` with ``s`` a seeded random +-1 per entry, ``draws`` times
    per image: the same size as :func:`fgsm`'s step in every norm, without its aim. The last draw is kept as
    ``delta``. Arguments as in :func:`gaussian`."""
    eps = _check_size("eps", eps)

    def signs(shape, gen, dtype):
        return torch.randint(0, 2, shape, generator=gen).to(dtype) * 2 - 1

    return _random_draws("random_sign", eps, signs, model, inputs, target, layer, draws, seed, normalization,
                         batch_size, keep_delta=True)


def _random_draws(kind: str, size: float, sample: Callable, model: nn.Module, inputs: torch.Tensor, target,
                  layer: str | None, draws: int, seed: int, normalization, batch_size: int | None,
                  keep_delta: bool = False) -> Response:
    """``draws`` seeded random perturbations ``size * unit * sample(...)`` per image, drawn for the whole batch at
    once so that they do not depend on ``batch_size``."""
    _check_inputs(inputs, target, batch_size)
    arguments.integer("draws", draws, 1)
    arguments.integer("seed", seed, 0)
    total = inputs.shape[0]

    def run(xb: torch.Tensor, tb, start: int) -> Response:
        setup = _Setup(model, xb, tb, layer, normalization)
        gen = torch.Generator().manual_seed(seed)
        scores, flips, delta = [], [], None
        for _ in range(draws):
            noise = sample((total, *setup.shape[1:]), gen, setup.clean.dtype)
            delta = size * setup.unit * noise[start:start + xb.shape[0]].to(setup.x.device)
            s, f = setup.score_and_flip(delta)
            scores.append(s)
            flips.append(f)
        return setup.response(kind, size, scores, flips, delta if keep_delta else None)

    return _in_batches(run, inputs, target, batch_size)


def fgsm(model: nn.Module, inputs: torch.Tensor, target: Target = None, eps: float = 1 / 255,
         layer: str | None = None, *, normalization: Normalization | None = None,
         batch_size: int | None = None) -> Response:
    """One signed-gradient step of size ``eps`` that lowers the target score: ``delta = -eps sign(dS/dh)``.
    ``target`` and ``layer`` as in :func:`gaussian`."""
    _check_inputs(inputs, target, batch_size)
    eps = _check_size("eps", eps)

    def run(xb: torch.Tensor, tb, start: int) -> Response:
        setup = _Setup(model, xb, tb, layer, normalization)
        zero = torch.zeros(setup.shape, dtype=setup.clean.dtype, device=setup.x.device)
        delta = -eps * setup.unit * setup.gradient(zero).sign()
        s, f = setup.score_and_flip(delta)
        return setup.response("fgsm", eps, [s], [f], delta)

    return _in_batches(run, inputs, target, batch_size)


def pgd(model: nn.Module, inputs: torch.Tensor, target: Target = None, eps: float = 1 / 255,
        layer: str | None = None, *,
        steps: int = 5, step_size: float | None = None, normalization: Normalization | None = None,
        batch_size: int | None = None) -> Response:
    """``steps`` projected signed-gradient steps (size ``step_size``, default ``2.5 eps / steps``) from zero, each
    lowering the target score, kept inside the L-infinity ball of radius ``eps``. ``target`` and ``layer`` as in
    :func:`gaussian`."""
    _check_inputs(inputs, target, batch_size)
    eps = _check_size("eps", eps)
    arguments.integer("steps", steps, 1)
    if step_size is not None:
        step_size = arguments.number("step_size", step_size, 0, low_open=True)

    def run(xb: torch.Tensor, tb, start: int) -> Response:
        setup = _Setup(model, xb, tb, layer, normalization)
        bound = eps * setup.unit
        alpha = (2.5 * eps / steps if step_size is None else step_size) * setup.unit
        delta = torch.zeros(setup.shape, dtype=setup.clean.dtype, device=setup.x.device)
        for _ in range(steps):
            delta = torch.maximum(torch.minimum(delta - alpha * setup.gradient(delta).sign(), bound), -bound)
        s, f = setup.score_and_flip(delta)
        return setup.response("pgd", eps, [s], [f], delta)

    return _in_batches(run, inputs, target, batch_size)


def radius_along(model: nn.Module, inputs: torch.Tensor, direction: torch.Tensor, layer: str | None = None,
                 dtype: torch.dtype = torch.float64, batch_size: int | None = None) -> torch.Tensor:
    """:func:`~pwawidgets.region_radius` on a ``dtype`` copy of the model: the step ``t`` along ``direction`` at
    which the first ReLU or max-pool switches, ``(B,)``. With ``direction`` = a perturbation, ``t >= 1`` means the
    whole perturbation stays inside the input's linear region. ``layer``: None means ``"input"``."""
    if not isinstance(inputs, torch.Tensor) or not isinstance(direction, torch.Tensor):
        raise TypeError("inputs and direction must be tensors")
    if direction.shape[:1] != inputs.shape[:1]:
        raise ValueError(f"direction has {tuple(direction.shape)[:1]} examples for {inputs.shape[0]} in inputs: give "
                         "one direction per example")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    arguments.integer("batch_size", batch_size, 1, optional=True)
    work = copy.deepcopy(model).to(dtype)
    step = batch_size or inputs.shape[0]
    return torch.cat([region_radius(work, inputs[i:i + step].detach().to(dtype),
                                    direction[i:i + step].detach().to(dtype), layer)
                      for i in range(0, inputs.shape[0], step)])


# -------------------------------------------------------------------------- bias/score per layer (Fig. 3)


@dataclass
class BiasCurve:
    """Bias and score per image, class and layer: the data of the paper's Fig. 3 under any averaging rule.

    ``bias`` is ``(N, k, L)``, ``score`` and ``target`` ``(N, k)`` (``k`` classes per image, 1 for one class),
    ``layers`` the ``L`` layer names in the order they run (``depth`` 0 = the first).
    """

    layers: list[str]
    bias: torch.Tensor
    score: torch.Tensor
    target: torch.Tensor
    notes: list[str] = field(default_factory=list)

    @property
    def depth(self) -> list[int]:
        return list(range(len(self.layers)))

    def ratios(self, nonpositive: str = "skip") -> torch.Tensor:
        """``bias / score`` ``(N, k, L)``; NaN where the score is not positive (``"skip"``) or zero (``"keep"``)."""
        if nonpositive not in ("skip", "keep"):
            raise ValueError("nonpositive must be 'skip' or 'keep'")
        score = self.score.unsqueeze(-1)
        bad = score <= 0 if nonpositive == "skip" else score == 0
        return torch.where(bad, torch.full_like(self.bias, math.nan), self.bias / score)

    def skipped(self) -> int:
        """How many (image, class) scores are not positive."""
        return int((self.score <= 0).sum())

    def per_image(self, nonpositive: str = "skip") -> torch.Tensor:
        """``(N, L)``: each image's ratio, averaged over its ``k`` classes (NaN-aware)."""
        return self.ratios(nonpositive).nanmean(1)

    def summary(self, average: str = "mean", nonpositive: str = "skip") -> torch.Tensor:
        """One value per layer ``(L,)``.

        ``average``: ``"mean"`` or ``"median"`` of the per-image ratios, or ``"ratio_of_means"``
        (``sum b / sum S`` over the kept image-class pairs). ``nonpositive``: ``"skip"`` (default) leaves out
        pairs whose score is not positive; ``"keep"`` divides by them too (signs flip, near-zero scores explode).
        """
        arguments.choice("average", average, ("mean", "median", "ratio_of_means"))
        arguments.choice("nonpositive", nonpositive, ("skip", "keep"))
        if average == "ratio_of_means":
            keep = (self.score > 0) if nonpositive == "skip" else torch.ones_like(self.score, dtype=torch.bool)
            bias = torch.where(keep.unsqueeze(-1), self.bias, torch.zeros_like(self.bias))
            return bias.sum((0, 1)) / torch.where(keep, self.score, torch.zeros_like(self.score)).sum()
        per_image = self.per_image(nonpositive)
        if average == "mean":
            return per_image.nanmean(0)
        if average == "median":
            return per_image.nanmedian(0).values
        raise ValueError("average must be 'mean', 'median' or 'ratio_of_means'")

    def classes(self, columns: int | slice | Sequence[int]) -> BiasCurve:
        """The same curve restricted to some of the ``k`` class columns (``classes(0)``: the top-1 of a top-k run)."""
        index = [columns] if isinstance(columns, int) else columns
        return BiasCurve(self.layers, self.bias[:, index], self.score[:, index], self.target[:, index], self.notes)

    def quantiles(self, q: Sequence[float] = (0.25, 0.75), nonpositive: str = "skip") -> torch.Tensor:
        """``(len(q), L)`` quantiles of the per-image ratios."""
        q = arguments.numbers("q", q, 0, 1)
        return torch.nanquantile(self.per_image(nonpositive).double(), torch.tensor(q, dtype=torch.float64), dim=0)


def bias_curve(
    model: nn.Module,
    inputs: torch.Tensor | Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    target: Target = None,
    layers: str | Sequence[str] | None = ("input", "all"),
    *,
    batch_size: int = 16,
    reference: str = "normalized",
    normalization: Normalization | None = None,
    progress: bool = False,
    total: int | None = None,
) -> BiasCurve:
    """Bias and score at ``layers`` (default: the input and every ReLU output; None means ``"input"``) for many
    images.

    ``inputs``: a tensor ``(N, ...)`` (cut into batches of ``batch_size``) or an iterable of batches, or of
    ``(batch, labels)`` pairs whose labels are the targets. ``target``: None (the predicted class), ``"top<k>"``
    (the k highest classes of each image), or, with a tensor of images, one class per image ``(N,)`` or ``(N, k)``.
    Each batch is one :func:`layer_biases` call (the same numbers as :func:`~pwawidgets.decompose`), so memory
    stays that of one batch. ``total``: the number of batches, for the progress bar of an iterable.
    """
    if not isinstance(inputs, torch.Tensor) and isinstance(target, torch.Tensor):
        raise ValueError("with an iterable of batches, give the labels inside it: (batch, labels) pairs")
    arguments.integer("batch_size", batch_size, 1)
    arguments.choice("reference", reference, ("normalized", "raw"))
    arguments.flag("progress", progress)
    arguments.integer("total", total, 0, optional=True)
    if not isinstance(inputs, torch.Tensor) and not hasattr(inputs, "__iter__"):
        raise TypeError(f"inputs must be a tensor (N, ...) or an iterable of batches, got {type(inputs).__name__}")
    if isinstance(inputs, torch.Tensor):
        n = inputs.shape[0]
        if isinstance(target, torch.Tensor) and target.dim() > 0:
            batches = ((inputs[i:i + batch_size], target[i:i + batch_size]) for i in range(0, n, batch_size))
        else:
            batches = (inputs[i:i + batch_size] for i in range(0, n, batch_size))
        total = -(-n // batch_size)
    else:
        batches = inputs
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=total, desc="bias/score", unit="batch")
    names, bias, score, targets = None, [], [], []
    for item in batches:
        x, t = item if isinstance(item, tuple) else (item, target)
        if isinstance(t, torch.Tensor) and t.dim() == 1:
            t = t[:, None]
        found = layer_biases(model, x, "top1" if t is None else t, layers, reference=reference,
                             normalization=normalization)
        if names is None:
            names = found.layers
        elif found.layers != names:
            raise ValueError(f"the layers differ between batches: {names} then {found.layers}")
        bias.append(found.bias.cpu())
        score.append(found.score.cpu())
        targets.append(found.target.cpu())
    if names is None:
        raise ValueError("no images given")
    return BiasCurve(names, torch.cat(bias), torch.cat(score), torch.cat(targets))


# -------------------------------------------------------------------------------------------- statistics


@dataclass
class Estimate:
    """A statistic with its bootstrap percentile confidence interval, over ``n`` images."""

    value: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.value:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 along the last axis, ties sharing their average rank; ``v`` is ``(n,)`` or ``(rows, n)``."""
    rows = v.reshape(-1, v.shape[-1]).double()
    n = rows.shape[1]
    values, order = rows.sort(dim=1, stable=True)
    new = torch.ones_like(values, dtype=torch.bool)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new.long().cumsum(1) - 1 + n * torch.arange(len(rows)).unsqueeze(1)  # a tie group, unique over rows
    position = torch.arange(n, dtype=torch.float64).expand_as(values)
    mean = torch.zeros(rows.numel(), dtype=torch.float64).scatter_reduce(
        0, group.flatten(), position.flatten(), "mean", include_self=False)
    ranks = torch.empty_like(values)
    ranks.scatter_(1, order, mean[group])
    return ranks.reshape(v.shape)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    denominator = (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()
    return torch.where(denominator > 0, (a * b).sum(-1) / denominator, torch.full_like(denominator, float("nan")))


def _check_boot(n, seed, level) -> tuple[int, int, float]:
    return (arguments.integer("n", n, 1), arguments.integer("seed", seed, 0),
            arguments.number("level", level, 0, 1, low_open=True, high_open=True))


def _complete(*samples: torch.Tensor) -> list[torch.Tensor]:
    try:
        data = [torch.as_tensor(s).detach().double().flatten().cpu() for s in samples]
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError("samples must be numbers, one per image") from exc
    if len({len(d) for d in data}) > 1:
        raise ValueError(f"samples of {[len(d) for d in data]} values: give one value per image in each")
    keep = torch.stack([~d.isnan() for d in data]).all(0)
    return [d[keep] for d in data]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two samples (pairs with a NaN left out); NaN if either is constant."""
    a, b = _complete(a, b)
    return float(_pearson(_ranks(a), _ranks(b)))


def bootstrap(statistic: Callable[..., float], *samples: torch.Tensor, n: int = 1000, seed: int = 0,
              level: float = 0.95) -> Estimate:
    """``statistic(*samples)`` and its percentile interval from ``n`` resamples of the images (pairs kept together,
    pairs with a NaN left out)."""
    n, seed, level = _check_boot(n, seed, level)
    data = _complete(*samples)
    size = len(data[0])
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n):
        idx = torch.randint(size, (size,), generator=gen)
        values.append(statistic(*(d[idx] for d in data)))
    return _interval(float(statistic(*data)), torch.tensor(values, dtype=torch.float64), size, level)


def _interval(value: float, boots: torch.Tensor, size: int, level: float) -> Estimate:
    boots = boots[~boots.isnan()]
    tail = (1 - level) / 2
    low, high = (torch.quantile(boots, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
                 if len(boots) else (float("nan"), float("nan")))
    return Estimate(value, low, high, size, level)


def correlation(a: torch.Tensor, b: torch.Tensor, *, n: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Spearman's rank correlation of ``a`` and ``b`` over images, with a bootstrap percentile interval (the same
    resamples as :func:`bootstrap`, computed all at once)."""
    n, seed, level = _check_boot(n, seed, level)
    a, b = _complete(a, b)
    idx = torch.randint(len(a), (n, len(a)), generator=torch.Generator().manual_seed(seed))
    return _interval(spearman(a, b), _pearson(_ranks(a[idx]), _ranks(b[idx])), len(a), level)


def paired_difference(a: torch.Tensor, b: torch.Tensor, *, n: int = 1000, seed: int = 0,
                      level: float = 0.95) -> Estimate:
    """Mean of ``a - b`` over matched images (the same image through two networks), with a bootstrap interval."""
    n, seed, level = _check_boot(n, seed, level)
    a, b = _complete(a, b)
    idx = torch.randint(len(a), (n, len(a)), generator=torch.Generator().manual_seed(seed))
    return _interval(float((a - b).mean()), (a - b)[idx].mean(1), len(a), level)


def matched_pair(with_model: nn.Module, without_model: nn.Module, inputs: torch.Tensor, target: Target = None, *,
                 eps: float = 1 / 255, sigma: float = 16 / 255, batch_size: int | None = None, n: int = 1000,
                 seed: int = 0) -> dict[str, Estimate]:
    """The same images through two networks that differ in one thing (BatchNorm or not): per image, the
    difference ``with - without`` of the bias ratio at the input and of the responses to Gaussian noise (``sigma``)
    and to FGSM (``eps``), each averaged over images with a bootstrap interval.

    ``target``: None (each network explains its own predicted class) or the true labels. A positive difference in
    the bias ratio together with negative differences in the responses would support the paper's Sec. 3.2.
    """
    _check_inputs(inputs, target, batch_size)
    _check_size("eps", eps)
    _check_size("sigma", sigma)
    _check_boot(n, seed, 0.95)
    rows: dict[str, list[torch.Tensor]] = {}
    for model in (with_model, without_model):
        curve = bias_curve(model, inputs, target, [INPUT], batch_size=batch_size or 16)
        noise = gaussian(model, inputs, target, sigma, batch_size=batch_size)
        attack = fgsm(model, inputs, target, eps, batch_size=batch_size)
        for name, value in (("bias / score at the input", curve.ratios()[:, 0, 0]),
                            (f"score change, noise σ={sigma:.3g}", noise.relative_change),
                            (f"score drop, FGSM ε={eps:.3g}", attack.drop),
                            (f"prediction changed, FGSM ε={eps:.3g}", attack.flip_rate)):
            rows.setdefault(name, []).append(value.double().cpu())
    return {name: paired_difference(a, b, n=n, seed=seed) for name, (a, b) in rows.items()}
