"""Matplotlib helpers: region colours, the partition with its decision boundary, the faceted logit surface."""

from __future__ import annotations

from typing import Any

import numpy as np

from .partition import RegionSet

__all__ = ["plot_logit_surface", "plot_regions", "region_colors"]

_CLASS_CMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


def region_colors(regions: RegionSet, seed: int = 0) -> np.ndarray:
    """RGBA (R, 4): hue from the class the network predicts at each region's centroid, a random shade per region."""
    import matplotlib

    rng = np.random.default_rng(seed)
    shades = rng.uniform(0.15, 0.55, size=len(regions))
    if len(regions) == 0:
        return np.zeros((0, 4))
    cents = np.array([r.centroid for r in regions])
    out = regions.outputs(cents)
    cls = out.argmax(1) if out.shape[1] > 1 else (out[:, 0] > 0).astype(int)
    cols = np.empty((len(regions), 4))
    for k in np.unique(cls):
        cmap = matplotlib.colormaps[_CLASS_CMAPS[int(k) % len(_CLASS_CMAPS)]]
        sel = cls == k
        cols[sel] = cmap(shades[sel])
    return cols


def plot_regions(
    ax: Any,
    regions: RegionSet,
    X: np.ndarray | None = None,
    y: np.ndarray | None = None,
    *,
    boundary: bool = True,
    colors: np.ndarray | None = None,
    edgecolor: str = "white",
) -> None:
    """Draw the regions (coloured by affine piece), the exact decision boundary and the data on ``ax``.

    Each region's hue is the class predicted at its centroid, its shade random; ``edgecolor="none"`` hides edges.
    """
    from matplotlib.collections import LineCollection, PolyCollection

    cols = region_colors(regions) if colors is None else colors
    ax.add_collection(
        PolyCollection(
            [r.polygon for r in regions], facecolors=cols, edgecolors=edgecolor, linewidths=0.5
        )
    )
    if boundary and regions.complete:
        ax.add_collection(LineCollection(regions.decision_boundary(), colors="black", linewidths=2))
    if X is not None:
        ax.scatter(X[:, 0], X[:, 1], c=y, cmap="coolwarm" if y is None or y.max() < 2 else "brg", s=8,
                   edgecolors="k", linewidths=0.3)
    (x0, x1), (y0, y1) = regions.bounds
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")


def plot_logit_surface(ax3d: Any, regions: RegionSet, output: int = 0, colors: np.ndarray | None = None) -> None:
    """Draw output ``output`` over the box as a faceted surface: each region lifted to ``z = W[output] x + b``."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    if not regions.complete:
        raise ValueError("the logit surface needs the full partition")
    cols = region_colors(regions) if colors is None else colors
    faces = [np.column_stack([r.polygon, r(r.polygon)[:, output]]) for r in regions]
    ax3d.add_collection3d(Poly3DCollection(faces, facecolors=cols, edgecolors="k", linewidths=0.2))
    zs = np.concatenate([f[:, 2] for f in faces])
    (x0, x1), (y0, y1) = regions.bounds
    ax3d.set_xlim(x0, x1)
    ax3d.set_ylim(y0, y1)
    ax3d.set_zlim(zs.min(), zs.max())
    ax3d.set_xlabel("$x_1$")
    ax3d.set_ylabel("$x_2$")
    ax3d.set_zlabel(f"logit {output}")
