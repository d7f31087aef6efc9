"""Diagram: where a layer's bias comes from, drawn by code from a real :func:`pwawidgets.bias_sources` result.

Top: the network after the layer as a chain of the operations that add a constant ``c_m`` (convolution and linear
biases, BatchNorm shifts, caps...), each with its part ``<dS/d out_m, c_m>`` of the bias. Bottom: the same parts
stacked as a waterfall, in the order the network adds them, ending on the bias ``b`` at the layer.
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .. import data, models
from ..bias import REMAINDER, BiasSources, bias_sources

__all__ = ["bias_from_constants"]

UP, DOWN, TOTAL = "#c44e52", "#4c72b0", "#555555"


def _default_sources() -> tuple[BiasSources, str]:
    """mini_vgg_bn on one generated shape (a seed the zoo never saw), its true class, the bias at conv1."""
    net = models.load_model("mini_vgg_bn")
    shapes = data.shapes(1, seed=4242)
    return bias_sources(net, shapes.images, shapes.labels, "conv1"), "mini_vgg_bn"


def _value(t: torch.Tensor, example: int, per_class: bool) -> float:
    return float(t[example, 0] if per_class else t[example])


def bias_from_constants(sources: BiasSources | None = None, *, example: int = 0, network: str | None = None) -> Figure:
    """Draw how the constants added after a layer, each weighted by the gradient at its point, make its bias.

    Args:
        sources: a :func:`pwawidgets.bias_sources` result; None draws ``mini_vgg_bn`` at ``conv1`` on one
            generated shape image, for its true class.
        example: which example of ``sources`` to draw (the first class where there are several).
        network: the network's name, for the title.

    Returns:
        A matplotlib Figure: the chain of constants (top) and the waterfall of their parts, in score units, ending
        on the bias (bottom). Each bar's ``gid`` is its source's name; the last bar's is ``"bias"``.
    """
    if sources is None:
        sources, default_name = _default_sources()
        network = network or default_name
    elif not isinstance(sources, BiasSources):
        raise TypeError(f"sources must be a pwawidgets.bias_sources(...) result, not {type(sources).__name__}")
    n = sources.bias.shape[0]
    if not isinstance(example, int) or not 0 <= example < n:
        raise ValueError(f"example must be an int from 0 to {n - 1} (the result holds {n} examples), got {example!r}")

    per_class = sources.per_class
    parts = {name: _value(t, example, per_class) for name, t in sources.items()}
    if abs(parts[REMAINDER]) <= 1e-6 * max(1.0, max(abs(v) for v in parts.values())):
        parts.pop(REMAINDER)  # ~0: every constant was attributed; drawn only when it is not
    bias = _value(sources.bias, example, per_class)
    score = _value(sources.score, example, per_class)
    names = list(parts)
    where = f"'{sources.layer}'"
    label = f"{network}, " if network else ""

    fig = Figure(figsize=(max(8.0, 1.45 * (len(names) + 2)), 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[1, 1.5])

    # top: h -> the constants, in the order the network adds them -> S
    boxes = [(f"h\n(output of {sources.layer})", None, None)]
    boxes += [(f"{name}\n{sources.kinds[name]}", name, parts[name]) for name in names]
    boxes.append(("score S", None, None))
    top.set_xlim(-0.6, len(boxes) - 0.4)
    top.set_ylim(-1.15, 1.0)
    top.axis("off")
    for i, (text, name, part) in enumerate(boxes):
        colour = TOTAL if name is None else (UP if part >= 0 else DOWN)
        top.add_patch(FancyBboxPatch((i - 0.42, -0.05), 0.84, 0.75, boxstyle="round,pad=0.02", fc="white",
                                     ec=colour, lw=1.4))
        top.text(i, 0.33, text, ha="center", va="center", fontsize=7)
        if name is not None:
            top.text(i, -0.45, f"⟨∂S/∂out, c⟩\n= {part:+.3f}", ha="center", va="center", fontsize=7, color=colour)
        if i:
            top.add_patch(FancyArrowPatch((i - 1 + 0.44, 0.33), (i - 0.44, 0.33), arrowstyle="-|>",
                                          mutation_scale=9, color="k", lw=0.8))
    top.set_title(f"{label}where the bias at {where} comes from: each operation after the layer that adds a "
                  "constant c\ngives the bias the part ⟨∂S/∂out, c⟩, c weighted by the gradient at its output "
                  "(ReLU and max-pool add none)", fontsize=9)

    # bottom: the waterfall of the parts, ending on the bias
    running, levels = 0.0, [0.0, bias]
    for i, name in enumerate(names):
        part = parts[name]
        bar = bottom.bar(i, part, bottom=running, color=UP if part >= 0 else DOWN, width=0.6)[0]
        bar.set_gid(name)
        bottom.text(i, running + part + (0.02 if part >= 0 else -0.02) * max(abs(bias), 1e-12), f"{part:+.3f}",
                    ha="center", va="bottom" if part >= 0 else "top", fontsize=7)
        running += part
        levels.append(running)
        if i + 1 < len(names):
            bottom.plot([i + 0.3, i + 0.7], [running, running], color="k", lw=0.6)
    total = bottom.bar(len(names), bias, color=TOTAL, width=0.6)[0]
    total.set_gid("bias")
    bottom.text(len(names), bias, f"b = {bias:.3f}", ha="center", va="bottom" if bias >= 0 else "top", fontsize=8)
    low, high = min(levels), max(levels)
    bottom.set_ylim(low - 0.15 * (high - low), high + 0.15 * (high - low))
    bottom.axhline(0, color="k", lw=0.6)
    bottom.set_xticks(range(len(names) + 1), [*names, f"bias b\nat {sources.layer}"], fontsize=7)
    bottom.set_ylabel("score units")
    bottom.set_xlabel("the constants, in the order the network adds them")
    bottom.set_title(f"the parts add up to the bias b = {bias:.3f} (score units); of the score S = {score:.3f}, "
                     f"b is {bias / score:.2f}\nand the rest, S − b = {score - bias:.3f}, is the contributions w·h "
                     "of the layer", fontsize=9)
    return fig
