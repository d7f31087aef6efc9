"""Counting regions: the known upper and lower bounds, a grid's count, and exact counts against depth."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from .geometry import Bounds, as_bounds
from .partition import enumerate_regions
from .patterns import activation_pattern
from .toy import build_mlp, data_bounds, make_toy_data, train_toy

__all__ = ["count_regions_on_grid", "montufar_lower_bound", "region_growth", "region_upper_bound"]


def region_upper_bound(widths: Sequence[int], n_input: int = 2, kind: str = "serra") -> int:
    """An upper bound on the number of linear regions of a ReLU net with ``n_input`` inputs and hidden ``widths``.

    ``kind="serra"`` (Serra, Tjandraatmadja & Ramalingam, ICML 2018, Thm. 1, the tightest of these)::

        sum over (j_1..j_L) in J of prod_l C(n_l, j_l),
        J = {0 <= j_l <= min(n_0, n_1 - j_1, ..., n_{l-1} - j_{l-1}, n_l)}

    ``kind="product"`` (Montufar 2017; Raghu et al. 2017): ``prod_l sum_{j=0}^{d_l} C(n_l, j)`` with
    ``d_l = min(n_0, n_1, ..., n_l)`` -- each layer adds at most the regions of an arrangement of ``n_l`` lines in a
    ``d_l``-dimensional space. ``kind="trivial"``: ``2 ** (n_1 + ... + n_L)``, one region per pattern.
    """
    widths = [int(w) for w in widths]
    if kind == "trivial":
        return 2 ** sum(widths)
    if kind == "product":
        out, d = 1, n_input
        for n in widths:
            d = min(d, n)
            out *= sum(math.comb(n, j) for j in range(d + 1))
        return out
    if kind == "serra":
        states = {n_input: 1}  # d = min(n_0, n_1 - j_1, ...) -> number of weighted paths
        for n in widths:
            nxt: dict[int, int] = {}
            for d, w in states.items():
                for j in range(min(d, n) + 1):
                    nd = min(d, n - j)
                    nxt[nd] = nxt.get(nd, 0) + w * math.comb(n, j)
            states = nxt
        return sum(states.values())
    raise ValueError(f"unknown bound {kind!r}: 'serra', 'product' or 'trivial'")


def montufar_lower_bound(widths: Sequence[int], n_input: int = 2) -> int:
    """Montufar, Pascanu, Cho & Bengio (NeurIPS 2014; the paper's ref. [9]), Thm. 4: some ReLU net with these widths
    (all ``n_l >= n_0``) has at least ``prod_{l<L} floor(n_l / n_0) ** n_0 * sum_{j=0}^{n_0} C(n_L, j)`` regions.

    A lower bound on the *maximum* over weights: a trained or random net usually has far fewer.
    """
    widths = [int(w) for w in widths]
    if not widths:
        return 1
    out = 1
    for n in widths[:-1]:
        out *= (n // n_input) ** n_input
    return out * sum(math.comb(widths[-1], j) for j in range(n_input + 1))


def count_regions_on_grid(model: nn.Module, bounds: Bounds, resolution: int = 200) -> int:
    """How many distinct activation patterns a ``resolution`` x ``resolution`` grid of the box sees.

    Regions smaller than a grid cell are missed, so this undercounts the exact number.
    """
    (x0, x1), (y0, y1) = as_bounds(bounds)
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    G = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    pats = activation_pattern(model, G)
    return len(np.unique(np.packbits(pats, axis=1), axis=0)) if pats.shape[1] else 1


def region_growth(
    shapes: Sequence[Sequence[int]] = ((5,), (5, 5), (5, 5, 5), (5, 5, 5, 5)),
    dataset: str = "moons",
    seed: int = 0,
    *,
    train: bool = True,
    resolution: int = 100,
    steps: int = 600,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Exact region counts on the data box for several hidden shapes, with a grid's count and the bounds.

    One dict per shape: ``hidden``, ``depth``, ``units``, ``exact``, ``grid`` (distinct patterns on a
    ``resolution``^2 grid), ``serra`` and ``product`` (upper bounds, see :func:`region_upper_bound`),
    ``montufar_lower`` (lower bound on the maximum), ``smallest_area`` (of a region, relative to the box).
    ``train=False`` counts at the seeded random initialisation instead of after training.
    """
    rows = []
    X, _ = make_toy_data(dataset, seed=seed)
    bounds = data_bounds(X)
    it: Any = shapes
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(shapes, desc="region counts", leave=False)
    for shape in it:
        hidden = tuple(int(h) for h in shape)
        if train:
            toy = train_toy(dataset, hidden, seed, steps=steps)
            model, bounds = toy.model, toy.bounds
        else:
            model = build_mlp(hidden, seed=seed)
        regions = enumerate_regions(model, bounds)
        box_area = (bounds[0][1] - bounds[0][0]) * (bounds[1][1] - bounds[1][0])
        rows.append(
            dict(
                hidden=hidden,
                depth=len(hidden),
                units=sum(hidden),
                exact=len(regions),
                grid=count_regions_on_grid(model, bounds, resolution),
                serra=region_upper_bound(hidden, kind="serra"),
                product=region_upper_bound(hidden, kind="product"),
                montufar_lower=montufar_lower_bound(hidden),
                smallest_area=float(regions.areas.min() / box_area),
            )
        )
    return rows
