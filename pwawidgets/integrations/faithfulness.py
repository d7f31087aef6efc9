"""The paper's fidelity test measured with Quantus' faithfulness metrics (notebook 08).

Six maps of the same images, :data:`METHODS`: ours at a block and at the input, Grad-CAM and HiResCAM at the same
block, Integrated Gradients (Captum) and a random map; four Quantus metrics, :data:`METRICS`, all on logits
(``softmax=False``: the decomposition is exact on the logit), PixelFlipping, ROAD and Selectivity through
:mod:`pwawidgets.integrations.quantus_metrics` (Quantus 0.6.0's pitfalls worked around).

The reference is matched to each metric's baseline. A contribution ``w * x`` says what the score loses when ``x``
becomes 0, so it is measured against metrics that replace pixels by 0 in the model's input space
(``reference="normalized"``: for a model that normalises its input outside, the normalised zero, mid-grey for
EfficientNet-Lite0); ``w * (x - black)`` (the raw pixels' contributions) is measured against black
(``reference="raw"``). Integrated Gradients starts from the same reference. Maps at a block do not depend on it;
only the metrics' baseline moves. ROAD imputes pixels from their neighbours and has no constant baseline.

Quantus is imported when a metric runs (``pip install pwawidgets[quantus]``); :func:`quantus_status` says whether
it can be. Statistics over images reuse the engine's :func:`pwawidgets.metrics.bootstrap_ci` and
:func:`pwawidgets.robustness.spearman`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import arguments
from ..baselines import gradcam_from
from ..core import decompose
from ..fidelity import random_map
from ..metrics import bootstrap_ci, to_image_grid
from ..placement import channels_last, model_device, model_dtype
from ..preprocessing import preprocessing_of
from ..robustness import spearman

METHODS: dict[str, str] = {
    "ours_block": "ours at the block",
    "ours_input": "ours at the input",
    "gradcam": "Grad-CAM",
    "hirescam": "HiResCAM",
    "integrated_gradients": "Integrated Gradients",
    "random": "random",
}
"""The methods, with their labels."""

METRICS: dict[str, bool] = {"FaithfulnessCorrelation": True, "PixelFlipping": False, "ROAD": False,
                            "Selectivity": False}
"""The metrics, each with whether a higher score is better."""

REFERENCES: dict[str, str] = {"normalized": "the normalised zero", "raw": "black"}
"""What an input's contribution is measured against, and the metrics' baseline that matches it."""

INSTALL = "pip install pwawidgets[quantus]"


@dataclass(frozen=True)
class Sizes:
    """How much work each metric does (the defaults fit notebook 08's budget on a CPU).

    ``nr_runs`` random subsets of ``subset_fraction`` of the input values for FaithfulnessCorrelation;
    ``flip_steps`` equal steps of pixels for PixelFlipping; ROAD at ``road_percentages`` of the pixels;
    Selectivity by square patches of ``patch_size`` pixels; ``ig_steps`` steps of Integrated Gradients;
    ``batch_size`` images per decomposition and Integrated Gradients pass.
    """

    nr_runs: int = 10
    subset_fraction: float = 0.01
    flip_steps: int = 5
    road_percentages: tuple[int, ...] = (10, 30, 50)
    patch_size: int = 54
    ig_steps: int = 8
    batch_size: int = 2

    def __post_init__(self) -> None:
        for name in ("nr_runs", "flip_steps", "patch_size", "ig_steps", "batch_size"):
            arguments.integer(f"sizes.{name}", getattr(self, name), 1)
        arguments.number("sizes.subset_fraction", self.subset_fraction, 0, 1, low_open=True)
        if not self.road_percentages:
            raise ValueError("sizes.road_percentages is empty: give at least one percentage in (0, 100)")
        for p in self.road_percentages:
            arguments.number("sizes.road_percentages", p, 0, 100, low_open=True, high_open=True)


def quantus_status() -> tuple[bool, str]:
    """Whether Quantus can be imported, and a line saying so (with the install command when it cannot)."""
    try:
        quantus = importlib.import_module("quantus")
    except ImportError as exc:
        return False, (f"Quantus is not installed ({exc}): the cells that run its metrics skip. Install the "
                       f"optional extra with `{INSTALL}` and restart the kernel.")
    return True, f"Quantus {getattr(quantus, '__version__', '?')} is installed."


def reference_fill(model: nn.Module, reference: str, normalization=None) -> np.ndarray:
    """The reference pixel in the model's input space, one value per channel: zeros for ``"normalized"``, black
    (``-mean / std``) for ``"raw"``, from ``normalization`` ``(mean, std)`` or the model's preprocessing."""
    if reference not in REFERENCES:
        raise ValueError(f"reference={reference!r}: choose one of {', '.join(map(repr, REFERENCES))}")
    if normalization is None:
        prep = preprocessing_of(model)
        if prep is None:
            raise ValueError("the model carries no preprocessing: give normalization=(mean, std) of its input")
        normalization = (prep.mean, prep.std)
    mean, std = (np.asarray(v, dtype=np.float64).ravel() for v in normalization)
    if mean.shape != std.shape or not (std > 0).all():
        raise ValueError(f"normalization must be (mean, std), one value per channel each, std > 0; got {normalization}")
    return np.zeros_like(mean) if reference == "normalized" else -mean / std


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scaled to [0, 1] per map, as pytorch-grad-cam's ``scale_cam_image`` does."""
    maps = maps - maps.flatten(1).min(1).values[:, None, None]
    return maps / (1e-7 + maps.flatten(1).max(1).values[:, None, None])


def _hirescam(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """HiResCAM as pytorch-grad-cam publishes it, from the block's ``sum_k w_k h_k``: clipped at 0, scaled to [0, 1]
    per image, resized bilinearly, and scaled to [0, 1] again (its average over target layers)."""
    return _unit(to_image_grid(_unit(cells.clamp_min(0)), size))


def attributions(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, layer: str,
                 references: Sequence[str] = tuple(REFERENCES), *, sizes: Sizes = Sizes(), seed: int = 0,
                 normalization=None) -> dict[str, dict[str, np.ndarray]]:
    """The maps of :data:`METHODS` for each reference: ``{reference: {method: array}}``.

    Input-level maps (ours at the input, Integrated Gradients) are ``(B, C, H, W)`` and depend on the reference;
    the others are ``(B, 1, H, W)``, the same arrays for every reference: the block maps resized bilinearly to the
    input, HiResCAM clipped and min-max scaled as pytorch-grad-cam does, the random map uniform noise per pixel
    (:func:`pwawidgets.fidelity.random_map`, seeded per image). All are float64 numpy, for Quantus.
    """
    from captum.attr import IntegratedGradients

    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        raise ValueError("inputs must be a (B, C, H, W) image batch tensor")
    targets = torch.as_tensor(targets).reshape(-1)
    if len(targets) != len(inputs):
        raise ValueError(f"targets holds {len(targets)} classes for {len(inputs)} images: give one per image")
    fills = {r: reference_fill(model, r, normalization) for r in references}  # checked before any work
    device, dtype = model_device(model), model_dtype(model)
    size = tuple(inputs.shape[-2:])
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in ("ours_block", "gradcam", "hirescam", "w_input")}
    ig = {r: [] for r in references}
    integrated = IntegratedGradients(model)
    for part in _chunks(len(inputs), sizes.batch_size):
        x, y = inputs[part].to(device, dtype), targets[part].to(device)
        d = decompose(model, x, y, ["input", layer], keep_gradients=True)
        cells = d.pixel_map(layer)
        parts["ours_block"].append(to_image_grid(cells, size))
        parts["gradcam"].append(to_image_grid(gradcam_from(d, layer), size))
        parts["hirescam"].append(_hirescam(cells, size))
        parts["w_input"].append(d.gradient("input").double())
        for r, fill in fills.items():
            baseline = torch.as_tensor(fill, dtype=dtype, device=device).view(1, -1, 1, 1).expand_as(x)
            ig[r].append(integrated.attribute(x, baselines=baseline, target=y, n_steps=sizes.ig_steps,
                                               internal_batch_size=sizes.batch_size).detach()
                         .double())
    x64 = inputs.detach().to(device, torch.float64)
    w = torch.cat(parts.pop("w_input"))
    shared = {m: torch.cat(v)[:, None].cpu().numpy() for m, v in parts.items()}
    shared["random"] = torch.stack([random_map(size, seed, i, "input") for i in range(len(inputs))])[:, None].numpy()
    out = {}
    for r, fill in fills.items():
        ours = w * (x64 - torch.as_tensor(fill, dtype=torch.float64, device=device).view(1, -1, 1, 1))
        out[r] = {"ours_block": shared["ours_block"], "ours_input": ours.cpu().numpy(),
                  "gradcam": shared["gradcam"], "hirescam": shared["hirescam"],
                  "integrated_gradients": torch.cat(ig[r]).cpu().numpy(), "random": shared["random"]}
    return out


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Quantus draws from NumPy's global generator: seed it, and put the caller's state back afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _metrics(fill: np.ndarray, shape: tuple[int, ...], sizes: Sizes) -> dict:
    import quantus

    from .quantus_metrics import ROAD, PixelFlipping, Selectivity

    if not np.allclose(fill, fill[0]):
        raise ValueError(f"the reference pixel {fill} differs between channels: FaithfulnessCorrelation and "
                         "Selectivity replace values by one number; use a model whose normalisation is the same "
                         "for every channel, or reference='normalized'")
    values, pixels = int(np.prod(shape[1:])), shape[-2] * shape[-1]
    if pixels % sizes.flip_steps:
        raise ValueError(f"sizes.flip_steps={sizes.flip_steps} does not divide the {pixels} pixels of an image")
    common = {"abs": False, "normalise": False, "disable_warnings": True}
    return {
        "FaithfulnessCorrelation": quantus.FaithfulnessCorrelation(
            nr_runs=sizes.nr_runs, subset_size=max(1, round(sizes.subset_fraction * values)),
            perturb_baseline=float(fill[0]), return_aggregate=False, **common),
        "PixelFlipping": PixelFlipping(fill=fill, features_in_step=pixels // sizes.flip_steps,
                                       return_auc_per_sample=True, **common),
        "ROAD": ROAD(percentages=list(sizes.road_percentages), **common),
        "Selectivity": Selectivity(patch_size=sizes.patch_size, perturb_baseline=float(fill[0]), **common),
    }


class _Forward(nn.Module):
    """The model as Quantus calls it: in inference mode, each batch in channels-last order (faster on a CPU, same
    values), and with ``memo`` its logits kept per input batch (keyed by the batch's bytes): FaithfulnessCorrelation
    draws the same subsets for every map, so its perturbed images are computed once, not once per map."""

    def __init__(self, model: nn.Module, memo: bool = False) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # the wrapper's own flag, as Quantus reads it; the model is left as found
        self.kept: dict[bytes, torch.Tensor] | None = {} if memo else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kept is None:
            return self._logits(x)
        key = hashlib.blake2b(x.detach().cpu().numpy().tobytes(), digest_size=16).digest() + str(x.shape).encode()
        if key not in self.kept:
            self.kept[key] = self._logits(x)
        return self.kept[key]

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # these metrics read logits only
            return self.model(channels_last(x))


def _per_image(name: str, metric, model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray, device: str,
               batch_size: int) -> np.ndarray:
    """One score per image: the correlation (FaithfulnessCorrelation), the area under the logit curve
    (PixelFlipping, Selectivity), the share of ROAD's percentages at which the class is still predicted."""
    import quantus

    from .quantus_metrics import auc

    call = {"softmax": False, "device": device, "channel_first": True}
    if name == "ROAD":  # its __call__ returns means over the images of its first batch only: each image's row here
        wrapped = quantus.get_wrapped_model(model, channel_first=True, softmax=False, device=device)
        kept = [metric.evaluate_batch(wrapped, x[p], y[p], a[p])[0] for p in _chunks(len(x), batch_size)]
        return np.concatenate(kept).mean(1)
    found = metric(model, x, y, a, batch_size=batch_size, **call)
    return auc(np.asarray(found)) if name == "Selectivity" else np.asarray(found, dtype=np.float64)


def evaluate(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, maps: dict[str, dict[str, np.ndarray]],
             *, sizes: Sizes = Sizes(), seed: int = 0, normalization=None,
             progress: bool = False) -> dict[str, dict[tuple[str, str], np.ndarray]]:
    """Every metric of :data:`METRICS` on every map, for each reference of ``maps`` (from :func:`attributions`)
    with that reference's baseline: ``{reference: {(method, metric): one score per image}}``.

    Each metric starts from the same NumPy seed for every map, so FaithfulnessCorrelation draws the same subsets
    and ROAD the same noise for all of them (a paired comparison; the caller's NumPy random state is kept).
    ROAD has no baseline: a map that is the same under two references is scored once.
    """
    if model_dtype(model) != torch.float32:
        raise TypeError(f"the model is {model_dtype(model)}: Quantus feeds models float32 tensors (its "
                        "PyTorchModel), so evaluate a float32 model (model.float())")
    fills = {r: reference_fill(model, r, normalization) for r in maps}
    x = inputs.detach().cpu().numpy().astype(np.float32)
    y = torch.as_tensor(targets).reshape(-1).cpu().numpy()
    for reference, found in maps.items():
        for method, a in found.items():
            if a.shape[0] != len(x) or a.shape[-2:] != x.shape[-2:]:
                raise ValueError(f"maps[{reference!r}][{method!r}] has shape {a.shape}; the inputs {x.shape}")
    metrics = {r: _metrics(fill, x.shape, sizes) for r, fill in fills.items()}
    device = str(model_device(model))
    jobs = [(r, k, m) for r in maps for k in METRICS for m in maps[r]]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="maps x metrics x references")
    out: dict[str, dict[tuple[str, str], np.ndarray]] = {r: {} for r in maps}
    memo, plain = _Forward(model, memo=True), _Forward(model)
    for reference, name, method in jobs:
        a = maps[reference][method]
        same = [r for r in out if name == "ROAD" and (method, name) in out[r] and np.array_equal(maps[r][method], a)]
        if same:
            out[reference][method, name] = out[same[0]][method, name]
            continue
        net = memo if name == "FaithfulnessCorrelation" else plain
        with _numpy_seed(seed):
            out[reference][method, name] = _per_image(name, metrics[reference][name], net, x, y, a, device,
                                                             sizes.batch_size)
    return out


def summary(scores: dict[tuple[str, str], np.ndarray], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per (method, metric): the mean over images and its 95 % percentile bootstrap interval."""
    rows = []
    for (method, metric), values in scores.items():
        mean, low, high = bootstrap_ci(torch.as_tensor(values), n_boot=n_boot, seed=seed)
        rows.append({"method": method, "metric": metric, "mean": mean, "low": low, "high": high,
                     "images": len(values)})
    return rows


def ranking(scores: dict[tuple[str, str], np.ndarray], metric: str) -> dict[str, float]:
    """Each method's rank by its mean score on ``metric``, 1 for the best (the metric's direction, :data:`METRICS`);
    tied means share their average rank."""
    means = {m: float(np.mean(v)) for (m, k), v in scores.items() if k == metric}
    if not means:
        raise ValueError(f"no scores for metric {metric!r}; have {sorted({k for _, k in scores})}")
    sign = -1.0 if METRICS[metric] else 1.0
    keys = sorted(means, key=lambda m: sign * means[m])
    ranks = {}
    for m in keys:
        tied = [k for k in keys if sign * means[k] == sign * means[m]]
        ranks[m] = float(np.mean([keys.index(k) + 1 for k in tied]))
    return ranks


def rank_agreement(a: dict[tuple[str, str], np.ndarray], b: dict[tuple[str, str], np.ndarray], metric: str) -> float:
    """Spearman's rho between the methods' rankings on ``metric`` under two sets of scores (same methods)."""
    ra, rb = ranking(a, metric), ranking(b, metric)
    if set(ra) != set(rb):
        raise ValueError(f"the two score sets rank other methods: {sorted(ra)} and {sorted(rb)}")
    methods = sorted(ra)
    return spearman(torch.tensor([ra[m] for m in methods]), torch.tensor([rb[m] for m in methods]))


def paired(scores: dict[tuple[str, str], np.ndarray], metric: str, first: str, second: str, n_boot: int = 2000,
           seed: int = 0) -> tuple[float, float, float]:
    """How much better ``first`` scores than ``second`` on ``metric``, image by image (positive: ``first`` is
    better in the metric's direction): the mean difference and its 95 % bootstrap interval."""
    sign = 1.0 if METRICS[metric] else -1.0
    difference = sign * (np.asarray(scores[first, metric]) - np.asarray(scores[second, metric]))
    return bootstrap_ci(torch.as_tensor(difference), n_boot=n_boot, seed=seed)
