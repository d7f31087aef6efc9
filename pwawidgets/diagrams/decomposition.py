"""Diagram: a layer's contributions plus the bias add up to the score (notebook 02), as a waterfall.

Drawn from a real :class:`pwawidgets.core.Decomposition`: one bar per channel of the layer (its contributions
summed over positions), the largest first, the rest grouped, then the bias; the running total ends on the score.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..core import Decomposition


def contributions_add_up(decomposition: Decomposition, layer: str, *, index: int = 0, top: int = 6) -> Figure:
    """A waterfall of ``layer``'s per-channel contributions, then the bias, ending on the score of image ``index``.

    Args:
        decomposition: from ``pw.decompose`` with one class per image; ``layer`` must be among its layers.
        layer: the layer whose contributions are drawn (its axis 1 is read as channels).
        index: the image.
        top: how many channels get their own bar (by magnitude); the others share one bar.

    Returns a matplotlib Figure (not shown). The waterfall's bars carry the id ``"step"``, the score's ``"score"``.
    """
    if layer not in decomposition.layers:
        raise ValueError(f"layer {layer!r} is not in the decomposition; it has {decomposition.layers}")
    if decomposition.per_class:
        raise ValueError("the decomposition holds several classes per image: use decomposition.column(j)")
    if not 0 <= index < len(decomposition.score):
        raise ValueError(f"index must be between 0 and {len(decomposition.score) - 1}, got {index}")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    contrib = decomposition.contributions[layer][index].detach().double().cpu()
    per_channel = (contrib.flatten(1).sum(1) if contrib.dim() > 1 else contrib).numpy()
    bias = float(decomposition.bias[layer][index])
    score = float(decomposition.score[index])
    order = np.argsort(-np.abs(per_channel))
    shown = order[:top]
    rest = order[top:]
    names = [f"channel {k}" for k in shown]
    values = [float(per_channel[k]) for k in shown]
    if len(rest):
        names.append(f"the other {len(rest)}\nchannels")
        values.append(float(per_channel[rest].sum()))
    names.append("bias b")
    values.append(bias)

    fig = Figure(figsize=(1.0 + 0.85 * (len(values) + 1), 3.8), layout="constrained")
    ax = fig.subplots()
    total = 0.0
    for k, (name, value) in enumerate(zip(names, values, strict=True)):
        colour = "#8172b2" if name == "bias b" else ("#c44e52" if value >= 0 else "#4c72b0")
        ax.bar(k, value, bottom=total, color=colour, edgecolor="k", lw=0.5, gid="step")
        ax.text(k, total + value, f"{value:+.2f}", ha="center", va="bottom" if value >= 0 else "top", fontsize=7)
        if k:
            ax.plot([k - 1.4, k - 0.4], [total, total], color="0.4", lw=0.6)
        total += value
    ax.bar(len(values), score, color="#333333", gid="score")
    ax.text(len(values), score, f"{score:.2f}", ha="center", va="bottom" if score >= 0 else "top", fontsize=7)
    ax.plot([len(values) - 1.4, len(values) - 0.4], [total, total], color="0.4", lw=0.6)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(range(len(values) + 1), [*names, "score"], fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("score units")
    ax.set_title(f"at {layer}: {len(per_channel)} channels' contributions + bias = score "
                 f"(red: for, blue: against)", fontsize=9)
    return fig
