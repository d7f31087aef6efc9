"""Quantus users: an ``explain_func`` made of the exact contributions, and the completeness with the bias.

Needs the optional extra: ``pip install pwawidgets[quantus]`` (Quantus 0.6.0). Example::

    import numpy as np
    import quantus

    import pwawidgets as pw
    from pwawidgets.integrations.quantus import CompletenessWithBias, explain

    model = pw.load_model("mini_vgg_bn")  # the mini zoo: 64 px images, 6 classes
    x_batch, y_batch = np.random.rand(2, 3, 64, 64).astype(np.float32), np.array([3, 5])
    a_batch = explain(model, x_batch, y_batch)                       # (2, 3, 64, 64): w * x, exact
    gaps = CompletenessWithBias()(model, x_batch, y_batch, a_batch)  # sum(a) + bias - logit, per example
    scores = quantus.Sparseness(disable_warnings=True)(model, x_batch, y_batch, explain_func=explain,
                                                       explain_func_kwargs={"layer": "features.20"})

``explain`` follows Quantus' ``explain_func`` contract: channel-first numpy in, numpy out with the batch first.
At the input (``layer="input"``, the default) it returns the contribution of every input value, ``(B, C, H, W)``
like the input, so metrics that rank or flip input values read each value's own contribution. At a feature layer it
returns the layer's map summed over channels and shared evenly among the pixels each cell covers, ``(B, 1, H, W)``,
so that in both cases ``a.sum() + bias == logit`` for each example. Quantus copies a ``(B, 1, H, W)`` map across
the channels: use :mod:`pwawidgets.integrations.quantus_metrics` for PixelFlipping and ROAD (see
docs/quantus_pitfalls.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from quantus.metrics.base import Metric
from torch import nn

from ..core import decompose
from .common import layer_map, spread

METHODS = ("contributions",)


def _tensor(values: Any, what: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach()
    try:
        return torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a numpy array or a tensor, got {type(values).__name__}") from exc


def explain(
    model: nn.Module,
    inputs: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor | int,
    *,
    method: str = "contributions",
    layer: str = "input",
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Quantus ``explain_func``: the exact contributions of ``layer`` for class ``targets`` (see the module).

    Args:
        model: a piece-wise affine classifier returning logits, in eval mode; it stays where it is (not moved).
        inputs: ``(B, C, H, W)`` channel-first batch (or ``(B, F)`` features at ``layer="input"``).
        targets: one class per example (``(B,)``) or one class for all.
        method: ``"contributions"`` (``w * h``), the one method here; Quantus' own methods come from
            ``quantus.explain``.
        layer: ``"input"``, or a layer name as :func:`pwawidgets.decompose` takes it (a module name, a preset).
        device: the device Quantus runs on; it must be the model's (the model is not moved behind your back).
    Returns:
        numpy, in the model's dtype: ``(B, C, H, W)`` at the input, ``(B, 1, H, W)`` at a feature layer.
    """
    if kwargs:
        raise TypeError(f"explain got keyword arguments it does not know: {sorted(kwargs)}; it takes method=, layer= "
                        "and device= (gc_layer, xai_lib and the like belong to quantus.explain)")
    if method not in METHODS:
        raise ValueError(f"method={method!r}: this explain_func gives {METHODS}; for {method!r} use "
                         "quantus.explain as explain_func")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one layer name (a string), got {type(layer).__name__}")
    if device is not None:
        try:
            wanted = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device={device!r} is not a torch device: give 'cpu', 'cuda' or the like") from exc
        param = next(model.parameters(), None)
        if param is not None and wanted.type != param.device.type:
            raise ValueError(f"device={str(device)!r} but the model is on {param.device}: move the model there "
                             "yourself, or pass the model's device")
    x = _tensor(inputs, "inputs")
    if layer != "input" and x.dim() != 4:
        raise ValueError(f"layer={layer!r} needs image batches (B, C, H, W); inputs have shape {tuple(x.shape)}")
    d = decompose(model, x, _tensor(targets, "targets"), [layer])
    if layer == "input":
        out = d.contribution(layer)
    else:
        out = spread(layer_map(d, layer), tuple(x.shape[-2:]))[:, None]
    return out.detach().cpu().numpy()


class CompletenessWithBias(Metric[list[float]]):
    """Completeness with the bias: per example ``sum(a) + b(x) - logit(x)`` (0 for an exact explanation).

    ``b(x)`` is the bias of the affine piece the network computes around ``x``, from the decomposition at ``layer``
    (``b = logit - sum(w * h)``; the input by default, where ``h = x``); give the layer the attributions were made
    at. Quantus' ``Completeness`` compares ``sum(a)`` with ``f(x) - f(baseline)`` by exact
    float equality and has no bias term: for a ReLU network ``f(x) - f(0)`` equals ``sum(w * x)`` only where ``0``
    lies on the same piece as ``x``, and rounding makes exact equality fail even then.

    The gap is in logits (the model's scores, no softmax); attributions are neither normalised nor rectified.
    """

    name = "Completeness with bias"

    def __init__(self, layer: str = "input", return_aggregate: bool = False, aggregate_func=None,
                 disable_warnings: bool = False, display_progressbar: bool = False) -> None:
        super().__init__(abs=False, normalise=False, normalise_func=None, normalise_func_kwargs=None,
                         return_aggregate=return_aggregate, aggregate_func=aggregate_func, default_plot_func=None,
                         disable_warnings=disable_warnings, display_progressbar=display_progressbar)
        if not isinstance(layer, str):
            raise TypeError(f"layer must be one layer name (a string), got {type(layer).__name__}")
        self.layer = layer

    def __call__(self, model: nn.Module, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray | None = None,
                 explain_func=None, explain_func_kwargs: dict | None = None, device: str | None = None,
                 batch_size: int = 64) -> list[float]:
        """The gaps, one per example (``a_batch``, or ``explain_func`` to make it, as for every Quantus metric)."""
        if a_batch is None and explain_func is None:
            raise ValueError("give a_batch (attributions) or explain_func to make them")
        return super().__call__(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, s_batch=None,
                                channel_first=True, explain_func=explain_func, explain_func_kwargs=explain_func_kwargs,
                                model_predict_kwargs=None, softmax=False, device=device, batch_size=batch_size)

    def evaluate_batch(self, model, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray,
                       **kwargs) -> list[float]:
        net = model.get_model() if hasattr(model, "get_model") else model
        d = decompose(net, _tensor(x_batch, "x_batch"), _tensor(y_batch, "y_batch"), [self.layer])
        sums = a_batch.reshape(a_batch.shape[0], -1).astype(np.float64).sum(-1)
        return (sums + d.bias[self.layer].double().cpu().numpy() - d.score.double().cpu().numpy()).tolist()
