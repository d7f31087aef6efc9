"""Quantus 0.6.0's PixelFlipping, ROAD and Selectivity with its pitfalls worked around (docs/quantus_pitfalls.md).

- Pixels, not channel values: Quantus copies a ``(B, 1, H, W)`` map across the channels and ranks the copies, so
  a step flips some channels of a pixel, and its ROAD crashes on RGB input (it ranks ``C * H * W`` indices and
  imputes ``H * W`` pixels). Here PixelFlipping and ROAD rank pixels by the attribution summed over channels and
  perturb every channel of a pixel at once (``features_in_step`` counts pixels).
- Black is black: Quantus' ``perturb_baseline="black"`` is each image's minimum in normalised space. PixelFlipping
  here takes ``fill``, the value of each channel in the model's input space (:func:`black` gives a zero pixel after
  normalisation); Selectivity refuses ``"black"`` and takes a number.
- Logits: the three default to ``softmax=False`` (Quantus: True), as the decomposition explains the logit.
- The area under the curve with ``np.trapezoid`` (Quantus calls ``np.trapz``, removed in NumPy 2.4).

Each class is Quantus' own, with only those changes. Example::

    import numpy as np

    import pwawidgets as pw
    from pwawidgets.integrations.quantus import explain
    from pwawidgets.integrations.quantus_metrics import ROAD, PixelFlipping, black

    model = pw.load_model("mini_vgg_bn")  # normalises inside: its inputs are pixels in [0, 1]
    x_batch, y_batch = np.random.rand(2, 3, 64, 64).astype(np.float32), np.array([3, 5])
    a_batch = explain(model, x_batch, y_batch)
    flipping = PixelFlipping(fill=black(((0, 0, 0), (1, 1, 1))), features_in_step=256, disable_warnings=True)
    curves = flipping(model, x_batch, y_batch, a_batch)  # (2, 16) logits; flipping.get_auc_score works
    road = ROAD(percentages=[10, 50], disable_warnings=True)(model, x_batch, y_batch, a_batch)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import quantus

Normalization = tuple[Sequence[float], Sequence[float]]


def black(normalization: Normalization) -> np.ndarray:
    """A black pixel (0 in every channel) after normalisation: ``-mean / std`` per channel."""
    mean, std = (np.asarray(v, dtype=np.float64).ravel() for v in normalization)
    if mean.shape != std.shape or not (std > 0).all():
        raise ValueError(f"normalization must be (mean, std), one value per channel each, std > 0; got {normalization}")
    return -mean / std


def auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve (the last axis), trapezoidal rule with unit steps, as Quantus means it."""
    return np.trapezoid(np.asarray(curves, dtype=np.float64), dx=1, axis=-1)


def pixel_order(a_batch: np.ndarray) -> np.ndarray:
    """Pixel indices ``(B, H * W)``, most relevant first: the attribution summed over channels, ranked (ties in
    pixel order)."""
    if a_batch.ndim != 4:
        raise ValueError(f"attributions of shape {a_batch.shape}: these metrics rank pixels of (B, C, H, W) images")
    per_pixel = a_batch.reshape(a_batch.shape[0], a_batch.shape[1], -1).sum(axis=1)
    return np.argsort(-per_pixel, axis=1, kind="stable")


class _Logits:
    """``softmax=False`` by default when called (Quantus: True for these metrics)."""

    def __call__(self, *args, softmax: bool | None = False, **kwargs):
        return super().__call__(*args, softmax=softmax, **kwargs)


class PixelFlipping(_Logits, quantus.PixelFlipping):
    """Quantus' PixelFlipping on pixels: ``fill`` (one value per channel, in the model's input space, e.g.
    :func:`black`) replaces the ``features_in_step`` most relevant pixels left, step after step; the curves are the
    logits of the target class."""

    def __init__(self, fill: Sequence[float] | np.ndarray, features_in_step: int = 1, **kwargs) -> None:
        if "perturb_baseline" in kwargs or "perturb_func" in kwargs:
            raise ValueError("give fill= (one value per channel, e.g. black(normalization)); perturb_baseline and "
                             "perturb_func are Quantus' per-value replacement, which this class does not use")
        self.fill = np.asarray(fill, dtype=np.float64).ravel()
        if not np.isfinite(self.fill).all() or self.fill.size == 0:
            raise ValueError(f"fill must hold finite values, one per channel (or one for all); got {fill!r}")
        super().__init__(features_in_step=features_in_step, **kwargs)

    @property
    def get_auc_score(self) -> float:
        return float(np.mean([auc(curve) for curve in self.evaluation_scores]))

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs):
        batch, channels = x_batch.shape[:2]
        if self.fill.size not in (1, channels):
            raise ValueError(f"fill has {self.fill.size} values for inputs with {channels} channels")
        order = pixel_order(a_batch)
        x = x_batch.reshape(batch, channels, -1).copy()
        fill = np.broadcast_to(self.fill, (channels,)).astype(x.dtype)[None, :, None]
        rows = np.arange(batch)[:, None, None]
        preds = []
        for start in range(0, order.shape[1], self.features_in_step):
            pixels = order[:, None, start:start + self.features_in_step]
            x[rows, np.arange(channels)[None, :, None], pixels] = fill
            x_input = model.shape_input(x.reshape(x_batch.shape), x_batch.shape, channel_first=True, batched=True)
            preds.append(model.predict(x_input)[np.arange(batch), y_batch])
        curves = np.stack(preds, axis=1)
        return auc(curves).tolist() if self.return_auc_per_sample else curves.tolist()


_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
               ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))  # ROAD's weights of the 8 neighbours


def noisy_linear_imputation(arr: np.ndarray, indices: np.ndarray, noise: float = 0.01, **kwargs) -> np.ndarray:
    """Quantus' ``noisy_linear_imputation`` (ROAD's): each pixel of ``indices`` (flat ``H * W`` indices of a
    ``(C, H, W)`` image) becomes the weighted mean of its 8 neighbours, solved as one sparse linear system, plus
    Gaussian noise. The same system and the same draws from NumPy's global generator, so the same result (tested);
    assembled at once instead of entry by entry, which took most of ROAD's time."""
    from quantus.helpers.utils import offset_coordinates
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    indices = np.asarray(indices)
    flat = arr.reshape(arr.shape[0], -1)
    n = len(indices)
    free = np.zeros(flat.shape[1], dtype=bool)
    free[indices] = True
    variable = np.zeros(flat.shape[1], dtype=int)
    variable[indices] = np.arange(n)
    rows, cols, weights = [np.arange(n)], [np.arange(n)], []
    rhs = np.zeros((n, arr.shape[0]))
    neighbours = np.ones(n)
    for offset, weight in _NEIGHBOURS:
        coords, valid = offset_coordinates(indices, offset, arr.shape)
        ids = np.flatnonzero(valid)
        known = ~free[coords]
        rhs[ids[known]] -= weight * flat[:, coords[known]].T
        rows.append(ids[~known])
        cols.append(variable[coords[~known]])
        weights.append(np.full(int((~known).sum()), weight))
        neighbours[~valid] -= weight
    values = np.concatenate([-neighbours, *weights])
    system = coo_matrix((values, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsc()
    solved = np.transpose(spsolve(system, rhs))
    out = np.copy(flat)
    out[:, indices] = solved + noise * np.random.randn(*solved.shape)
    return out.reshape(arr.shape)


class ROAD(_Logits, quantus.ROAD):
    """Quantus' ROAD on pixels: the top ``p`` % of pixels (by the attribution summed over channels) are imputed,
    every channel, by its noisy linear imputation (:func:`noisy_linear_imputation`, Quantus' own assembled
    faster); works on RGB input."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("perturb_func", noisy_linear_imputation)
        super().__init__(*args, **kwargs)

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs):
        order = pixel_order(a_batch)
        results = []
        for p in self.percentages:
            top = order[:, : int(order.shape[1] * p / 100)]
            x_perturbed = np.stack([self.perturb_func(arr=x, indices=idx) for x, idx in zip(x_batch, top, strict=True)])
            x_input = model.shape_input(x_perturbed, x_batch.shape, channel_first=True, batched=True)
            results.append(y_batch == np.argmax(model.predict(x_input), axis=-1))
        return [np.stack(results, axis=1).astype(int)]

    def custom_postprocess(self, **kwargs) -> None:
        """The accuracy per percentage over every image: Quantus 0.6.0 averages only the first batch's."""
        per_image = np.concatenate(self.evaluation_scores, axis=0)  # one (B, P) array per batch
        self.evaluation_scores = dict(zip(self.percentages, per_image.mean(axis=0), strict=True))


class Selectivity(_Logits, quantus.Selectivity):
    """Quantus' Selectivity (patches, summed attributions), with a numeric baseline and the AUC of NumPy 2."""

    def __init__(self, perturb_baseline: float = 0.0, **kwargs) -> None:
        if isinstance(perturb_baseline, str):
            raise ValueError(f"perturb_baseline={perturb_baseline!r}: Quantus' 'black' is each image's minimum in "
                             "normalised space, not black. Give a number (0.0 for models that normalise inside, as "
                             "the mini zoo does)")
        super().__init__(perturb_baseline=perturb_baseline, **kwargs)

    @property
    def get_auc_score(self) -> float:
        return float(np.mean([auc(curve) for curve in self.evaluation_scores]))
