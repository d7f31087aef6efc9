"""Diagram: a ReLU network as a patchwork of affine pieces, and the piece of one input (notebook 01).

Drawn from a real network: its exact linear regions on the plane (:func:`pwawidgets.regions.enumerate_regions`), not
a sketch. The left panel is the patchwork with one point's piece outlined; the right panel follows one logit along a
horizontal line through the point, next to the affine function of the point's piece, which it matches exactly
across that piece and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from torch import nn

from ..regions import build_mlp, enumerate_regions
from ..regions.geometry import Bounds


def affine_patchwork(
    model: nn.Module | None = None,
    bounds: Bounds = ((-2.0, 2.0), (-2.0, 2.0)),
    point: Sequence[float] = (0.5, -0.4),
    output: int = 0,
) -> Figure:
    """The patchwork of affine pieces of a Linear/ReLU network on the plane, with ``point``'s piece highlighted.

    Args:
        model: a Linear/ReLU network with 2 inputs; default: a seeded random 2 → 5 → 5 → 2 network
            (``pwawidgets.regions.build_mlp((5, 5), seed=1)``).
        bounds: the box ``((x_min, x_max), (y_min, y_max))`` drawn.
        point: the input whose piece is highlighted; inside ``bounds``.
        output: the logit followed on the right panel.

    Returns a matplotlib Figure (not shown). Its artists carry ids for tests: ``"pieces"`` (every region),
    ``"piece"`` (the point's region), ``"network"`` and ``"affine"`` (the two curves of the right panel).
    """
    model = build_mlp((5, 5), seed=1) if model is None else model
    p = np.asarray(point, dtype=np.float64)
    (x_lo, x_hi), (y_lo, y_hi) = bounds
    if p.shape != (2,) or not (x_lo <= p[0] <= x_hi and y_lo <= p[1] <= y_hi):
        raise ValueError(f"point must be two numbers inside bounds {bounds}, got {point!r}")
    regions = enumerate_regions(model, bounds)
    if not 0 <= output < regions.n_outputs:
        raise ValueError(f"output must be between 0 and {regions.n_outputs - 1}, got {output}")
    piece = regions.locate(p)

    fig = Figure(figsize=(10.5, 4.2), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    rng = np.random.default_rng(0)
    shades = rng.uniform(0.55, 0.95, size=(len(regions), 3))
    pieces = PolyCollection([r.polygon for r in regions], facecolors=shades, edgecolors="white", linewidths=0.6)
    pieces.set_gid("pieces")
    ax0.add_collection(pieces)
    outline = PolyCollection([piece.polygon], facecolors="none", edgecolors="crimson", linewidths=2.5, hatch="//")
    outline.set_gid("piece")
    ax0.add_collection(outline)
    ax0.axhline(p[1], color="k", lw=0.8, ls=":")
    ax0.plot(*p, "*", ms=15, color="gold", mec="k")
    ax0.set(xlim=(x_lo, x_hi), ylim=(y_lo, y_hi), aspect="equal", xlabel="input $x_1$", ylabel="input $x_2$",
            title=f"{len(regions)} affine pieces; the star's piece (crimson)")

    xs = np.linspace(x_lo, x_hi, 801)
    line = np.stack([xs, np.full_like(xs, p[1])], 1)
    with torch.no_grad():
        dtype = next(model.parameters()).dtype
        net = model(torch.as_tensor(line, dtype=dtype))[:, output].double().numpy()
    affine = piece(line)[:, output]
    inside = np.abs(net - affine) <= 1e-9 * (1 + np.abs(net).max())
    ax1.plot(xs, net, color="k", lw=2, label="the network (piece-wise affine)", gid="network")
    ax1.plot(xs, affine, "--", color="crimson", lw=1.5, label="the star's piece: $w \\cdot x + b$", gid="affine")
    ax1.fill_between(xs, net.min(), net.max(), where=inside, color="crimson", alpha=0.12,
                     label="where they agree: the star's piece")
    ax1.plot(p[0], float(piece(p)[output]), "*", ms=15, color="gold", mec="k")
    w, b = piece.W[output], piece.b[output]
    ax1.set(xlabel=f"input $x_1$ (with $x_2$ = {p[1]:g}, the dotted line)", ylabel=f"logit {output} (score units)",
            title=f"on the star's piece, logit {output} = {w[0]:.2f}·x₁ {w[1]:+.2f}·x₂ {b:+.2f}")
    ax1.legend(fontsize=8, loc="best")
    fig.suptitle("A ReLU network is a patchwork of affine functions", fontsize=11)
    return fig
