"""Quantus 0.6.0's pitfalls, measured: each one shown on a small RGB ReLU network, with nothing of pwawidgets.

    python benchmarks/quantus_pitfalls.py

Prints one block per pitfall (what was run, what came out). Written up in docs/quantus_pitfalls.md; worked around
in pwawidgets.integrations.quantus_metrics. Self-contained (torch, numpy, quantus) so that it can go upstream.
"""

from __future__ import annotations

import inspect
import traceback
import warnings

import numpy as np
import quantus
import torch
from quantus.functions.perturb_func import batch_baseline_replacement_by_indices
from torch import nn

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet's normalisation


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4)).eval()


def batch(n: int = 2, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0.2, 0.9, size=(n, 3, size, size))  # no black pixel in the images
    x = ((pixels - MEAN[:, None, None]) / STD[:, None, None]).astype(np.float32)
    return x, np.arange(n) % 4


def heading(text: str) -> None:
    print(f"\n== {text}")


def road_on_rgb(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    heading("ROAD on RGB input")
    a = np.random.default_rng(1).normal(size=(x.shape[0], 1, *x.shape[2:])).astype(np.float32)
    for name, attributions in (("(B, 1, H, W)", a), ("(B, 3, H, W)", np.repeat(a, 3, axis=1))):
        try:
            quantus.ROAD(percentages=[10, 50], disable_warnings=True)(model, x, y, attributions)
            print(f"  {name} map: ran")
        except Exception as exc:  # noqa: BLE001 - the point is to show what it raises
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            print(f"  {name} map: {type(exc).__name__}: {exc}  (in {frame.name}, {frame.line})")
    print(f"  ROAD ranks the {3 * x.shape[2] * x.shape[3]} indices of the (3, H, W) map; noisy_linear_imputation "
          f"indexes the {x.shape[2] * x.shape[3]} pixels of the image")


def trapz(model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray) -> None:
    heading("the AUC helper and NumPy's trapz")
    print(f"  numpy {np.__version__}: np.trapz exists: {hasattr(np, 'trapz')}; np.trapezoid exists: "
          f"{hasattr(np, 'trapezoid')}")
    metric = quantus.PixelFlipping(features_in_step=64, disable_warnings=True)
    metric(model, x, y, a, softmax=False)
    for what, call in (
        ("PixelFlipping().get_auc_score", lambda: metric.get_auc_score),
        ("PixelFlipping(return_auc_per_sample=True)", lambda: quantus.PixelFlipping(
            features_in_step=64, return_auc_per_sample=True, disable_warnings=True)(model, x, y, a, softmax=False)),
    ):
        try:
            call()
            print(f"  {what}: ran")
        except AttributeError as exc:
            print(f"  {what}: AttributeError: {exc}")


def black(x: np.ndarray) -> None:
    heading('perturb_baseline="black"')
    flat = x.reshape(x.shape[0], -1)
    indices = np.stack([np.arange(0, flat.shape[1], x.shape[2] * x.shape[3])] * x.shape[0])  # pixel 0, each channel
    out = batch_baseline_replacement_by_indices(flat, indices, perturb_baseline="black")
    replaced = out[np.arange(x.shape[0])[:, None], indices]
    print(f"  a black pixel after normalisation, per channel: {np.round(-MEAN / STD, 4).tolist()}")
    for i, values in enumerate(replaced):
        print(f"  image {i}: Quantus' 'black' writes {np.round(values.astype(float), 4).tolist()} (the image's "
              f"minimum, {flat[i].min():.4f}); back in pixels: {np.round(values * STD + MEAN, 4).tolist()}")


def softmax_defaults() -> None:
    heading("softmax defaults of __call__")
    for cls in (quantus.PixelFlipping, quantus.ROAD, quantus.Selectivity, quantus.Completeness,
                quantus.FaithfulnessCorrelation, quantus.RegionPerturbation):
        print(f"  {cls.__name__}: softmax={inspect.signature(cls.__call__).parameters['softmax'].default}")


def channel_copies(model: nn.Module, x: np.ndarray, y: np.ndarray, a: np.ndarray) -> None:
    heading("a (B, 1, H, W) map is copied across channels")
    flipped: list[np.ndarray] = []

    def recording(arr: np.ndarray, indices: np.ndarray, **kwargs) -> np.ndarray:
        flipped.append(indices.copy())
        return batch_baseline_replacement_by_indices(arr, indices, perturb_baseline=0.0)

    curves = quantus.PixelFlipping(features_in_step=1, perturb_func=recording, disable_warnings=True)(
        model, x[:1], y[:1], a[:1], softmax=False)
    pixels = x.shape[2] * x.shape[3]
    first = flipped[0][0, 0]
    print(f"  {pixels} pixels, {len(curves[0])} steps of features_in_step=1: one step per channel value")
    print(f"  step 1 flips flat index {first}: channel {first // pixels}, pixel {first % pixels}; the pixel's other "
          f"channels wait for steps {[i + 1 for i, f in enumerate(flipped) if f[0, 0] % pixels == first % pixels][1:]}")
    steps = [int(f[0, 0] % pixels) for f in flipped[:12]]
    print(f"  pixels flipped by the first 12 steps: {steps}")
    flipped.clear()
    quantus.PixelFlipping(features_in_step=2, perturb_func=recording, disable_warnings=True)(
        model, x[:1], y[:1], a[:1], softmax=False)
    pairs = [(int(i // pixels), int(i % pixels)) for i in flipped[0][0]]
    print(f"  features_in_step=2: step 1 flips (channel, pixel) {pairs}, part of a pixel")


def road_first_batch() -> None:
    heading("6. ROAD averages only the first batch")
    scores = {"percentages": [50], "evaluation_scores": [np.ones((1, 1)), np.zeros((1, 1)), np.zeros((1, 1))]}
    holder = type("Scores", (), scores)()  # three images by batches of one: the class kept by the first only
    quantus.ROAD.custom_postprocess(holder)
    print(f"  ROAD.custom_postprocess over batches [1], [0], [0]: {holder.evaluation_scores} (every image: 0.333)")


def main() -> None:
    warnings.simplefilter("ignore")
    model = network()
    x, y = batch()
    a = np.random.default_rng(2).normal(size=(x.shape[0], 1, *x.shape[2:])).astype(np.float32)
    print(f"quantus {quantus.__version__}, numpy {np.__version__}, torch {torch.__version__}")
    road_on_rgb(model, x, y)
    trapz(model, x, y, a)
    black(x)
    softmax_defaults()
    channel_copies(model, x, y, a)
    road_first_batch()


if __name__ == "__main__":
    main()
