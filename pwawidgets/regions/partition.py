"""The exact partition of the plane by a Linear/ReLU network: :func:`enumerate_regions` and its results.

A network made of ``nn.Linear`` and ReLU layers is piece-wise affine: the plane splits into convex polygons, one per
activation pattern, and on each polygon every output is exactly ``W @ x + b``. The polygons are found without
sampling: starting from the bounding box, layer by layer, every polygon is cut along each unit's line
``A_i x + c_i = 0``, where ``A x + c`` is the (exact, float64) affine map of the layer's pre-activations on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from .geometry import (
    Bounds,
    as_bounds,
    box_polygon,
    box_scale,
    join_segments,
    line_in_polygon,
    polygon_area,
    polygon_centroid,
    ring_area,
    split_polygon,
)
from .network import PlaneNet, read_net

__all__ = ["DEFAULT_MAX_REGIONS", "Region", "RegionLimitError", "RegionSet", "enumerate_layers", "enumerate_regions"]

# The course's nets stay far below (notebook 01's 4x32: ~5,300; the RegionExplorer's largest, a trained 6x32: up
# to ~19,000); a random 128x3 net has 51,500 on ((-3, 3), (-3, 3)), 6-14 s and ~0.6 GB for the enumeration.
DEFAULT_MAX_REGIONS = 50_000


class RegionLimitError(RuntimeError):
    """The partition grows past ``max_regions``: the enumeration stopped early, or (``estimated``) refused to cut a
    layer whose count, counted before cutting, is past the limit (nothing is returned)."""

    def __init__(self, count: int, layer: int, n_layers: int, limit: int, estimated: bool = False):
        self.count, self.layer, self.limit, self.estimated = count, layer, limit, estimated
        found = (f"hidden layer {layer} of {n_layers} would make {count:,} regions or more (counted before cutting, "
                 "from where its lines cross)" if estimated
                 else f"stopped after {count:,} regions in hidden layer {layer} of {n_layers}")
        super().__init__(
            f"{found}: more than max_regions={limit:,}. Raise the limit (max_regions={10 * limit:_}, or None for no "
            "limit; it costs time and memory), or use a smaller box or a smaller network"
        )


@dataclass(frozen=True, eq=False)
class Region:
    """One linear region: a convex polygon on which the network is the affine map ``x -> W @ x + b``.

    ``polygon``: (k, 2) vertices, counter-clockwise. ``pattern``: the activation pattern (bool, all hidden units of
    the layers applied, layer after layer; :attr:`layer_patterns` splits it). ``W`` (outputs, 2) and ``b``
    (outputs,): the affine map of every output on the region (of the last applied layer's activations when the
    partition stops before the last layer).
    """

    index: int
    polygon: np.ndarray
    pattern: np.ndarray
    W: np.ndarray
    b: np.ndarray
    widths: tuple[int, ...]

    @property
    def layer_patterns(self) -> list[np.ndarray]:
        return np.split(self.pattern, np.cumsum(self.widths)[:-1]) if self.widths else []

    @property
    def area(self) -> float:
        return polygon_area(self.polygon)

    @property
    def centroid(self) -> np.ndarray:
        """The polygon's centroid: an interior point (the polygon is convex)."""
        return polygon_centroid(self.polygon)

    def contains(self, point: Sequence[float], tol: float = 1e-9) -> bool:
        """Whether ``point`` lies in the closed polygon (up to ``tol`` times the edge length)."""
        P = self.polygon
        e = np.roll(P, -1, axis=0) - P
        d = np.asarray(point, dtype=np.float64) - P
        cross = e[:, 0] * d[:, 1] - e[:, 1] * d[:, 0]
        return bool(np.all(cross >= -tol * np.hypot(e[:, 0], e[:, 1]) * (1 + np.abs(P).max())))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The affine map: ``x @ W.T + b`` for one point (2,) or many (n, 2)."""
        return np.asarray(x, dtype=np.float64) @ self.W.T + self.b

    def __repr__(self) -> str:
        bits = " ".join("".join("1" if v else "0" for v in p) for p in self.layer_patterns)
        return f"Region({self.index}, {len(self.polygon)} vertices, area={self.area:.4g}, pattern={bits})"


class RegionSet(Sequence[Region]):
    """The regions of a network on a box after ``layer`` of its ``n_layers`` hidden layers: a list of Regions."""

    def __init__(self, regions: list[Region], bounds: Bounds, net: PlaneNet, layer: int):
        self.regions = regions
        self.bounds = bounds
        self.layer = layer
        self._net = net
        self._by_pattern = {r.pattern.tobytes(): r for r in regions}
        self._edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # list-like
    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, i):  # type: ignore[override]
        return self.regions[i]

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)

    def __repr__(self) -> str:
        return f"RegionSet({len(self)} regions after layer {self.layer}/{self.n_layers}, widths={self.widths})"

    @property
    def net(self) -> PlaneNet:
        """The network read as float64 layers (all of them, whatever ``layer`` is)."""
        return self._net

    @property
    def n_layers(self) -> int:
        return len(self._net.hidden)

    @property
    def widths(self) -> tuple[int, ...]:
        return self._net.widths

    @property
    def complete(self) -> bool:
        """True when every hidden layer has been applied: ``W``, ``b`` are then the network's outputs."""
        return self.layer == self.n_layers

    @property
    def n_outputs(self) -> int:
        return self.regions[0].W.shape[0] if self.regions else 0

    @property
    def areas(self) -> np.ndarray:
        return np.array([r.area for r in self.regions])

    def outputs(self, points: np.ndarray) -> np.ndarray:
        """The network's outputs at points (n, 2), by its float64 forward: (n, outputs)."""
        out, _ = self._net.forward(np.atleast_2d(np.asarray(points, dtype=np.float64)))
        return out

    # location
    def patterns(self, points: np.ndarray) -> np.ndarray:
        """Activation patterns of points (n, 2) for the layers applied: bool (n, units)."""
        _, pres = self._net.forward(np.atleast_2d(points), self.layer)
        if not pres:
            return np.zeros((len(np.atleast_2d(points)), 0), dtype=bool)
        return np.concatenate(pres, axis=1) > 0

    def locate_many(self, points: np.ndarray) -> np.ndarray:
        """Index of the region holding each point (n, 2); -1 outside the box."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        pats = self.patterns(points)
        out = np.full(len(points), -1, dtype=np.int64)
        for k, (p, pat) in enumerate(zip(points, pats, strict=True)):
            r = self._by_pattern.get(pat.tobytes())
            if r is not None and r.contains(p):
                out[k] = r.index
            else:  # on a boundary (the pattern flips there) or in a dropped sliver: ask the geometry
                out[k] = self._locate_geometric(p)
        return out

    def locate(self, point: Sequence[float]) -> Region:
        """The region holding ``point``; raises ``ValueError`` outside the box."""
        i = int(self.locate_many(np.asarray(point, dtype=np.float64)[None])[0])
        if i < 0:
            (x0, x1), (y0, y1) = self.bounds
            raise ValueError(f"point {tuple(point)} is outside the box [{x0}, {x1}] x [{y0}, {y1}]")
        return self.regions[i]

    def _locate_geometric(self, p: np.ndarray, tol: float = 1e-9) -> int:
        if self._edges is None:
            starts = np.cumsum([0] + [len(r.polygon) for r in self.regions[:-1]])
            P = np.concatenate([r.polygon for r in self.regions])
            E = np.concatenate([np.roll(r.polygon, -1, axis=0) - r.polygon for r in self.regions])
            self._edges = (P, E, starts)
        P, E, starts = self._edges
        d = p - P
        cross = (E[:, 0] * d[:, 1] - E[:, 1] * d[:, 0]) / np.maximum(np.hypot(E[:, 0], E[:, 1]), 1e-300)
        worst = np.minimum.reduceat(cross, starts)
        best = int(np.argmax(worst))
        scale = tol * (1 + max(abs(v) for pair in self.bounds for v in pair))
        return best if worst[best] >= -scale else -1

    def evaluate(self, points: np.ndarray) -> np.ndarray:
        """``W @ x + b`` of each point's region: the piece-wise affine function, (n, outputs)."""
        points = np.atleast_2d(np.asarray(points, dtype=np.float64))
        idx = self.locate_many(points)
        if np.any(idx < 0):
            raise ValueError("some points are outside the box")
        return np.stack([self.regions[i](p) for i, p in zip(idx, points, strict=True)])

    # decision boundary
    def boundary_segments(self) -> list[tuple[int, tuple[int, int], np.ndarray]]:
        """The exact decision boundary, piece by piece: ``(region index, (class i, class j), segment (2, 2))``.

        Inside a region the logits are affine, so the set where classes ``i`` and ``j`` tie for the top score is a
        segment: the line ``(W_i - W_j) x + b_i - b_j = 0`` clipped to the polygon and to the half-planes where
        ``i`` beats every other class. With one output, the boundary is its zero line.
        """
        if not self.complete:
            raise ValueError(
                f"the decision boundary needs the full partition (layer {self.n_layers}); this one stops at layer "
                f"{self.layer}"
            )
        tol_scale = 1e-12 * box_scale(self.bounds)
        segs: list[tuple[int, tuple[int, int], np.ndarray]] = []
        C = self.n_outputs
        pairs = [(0, 0)] if C == 1 else [(i, j) for i in range(C) for j in range(i + 1, C)]
        for r in self.regions:
            for i, j in pairs:
                if C == 1:
                    a, c = r.W[0], r.b[0]
                else:
                    a, c = r.W[i] - r.W[j], r.b[i] - r.b[j]
                P = [tuple(v) for v in r.polygon]
                for k in range(C):
                    if k in (i, j) or len(P) < 3:
                        continue
                    ak, ck = r.W[i] - r.W[k], r.b[i] - r.b[k]
                    vals = [ak[0] * x + ak[1] * y + ck for x, y in P]
                    keep, _ = split_polygon(P, vals, tol_scale * (abs(ak).sum() + abs(ck) + 1))
                    P = keep
                if len(P) < 2:
                    continue
                seg = line_in_polygon(P, a, c, tol_scale * (abs(a).sum() + abs(c) + 1))
                if seg is not None:
                    segs.append((r.index, (i, j), seg))
        return segs

    def decision_boundary(self, join: bool = True) -> list[np.ndarray]:
        """The exact decision boundary as polylines (k, 2); ``join=False`` gives one segment per region."""
        segs = [s for _, _, s in self.boundary_segments()]
        return join_segments(segs, 1e-9 * box_scale(self.bounds)) if join else segs


def _enumerate(
    net: PlaneNet, bounds: Bounds, upto_layer: int, area_rtol: float, rtol: float, max_regions: int | None
) -> list[RegionSet]:
    """Split the box layer by layer; one :class:`RegionSet` after each of the first ``upto_layer`` layers."""
    (x0, x1), (y0, y1) = bounds
    box = box_polygon(bounds)
    area_tol = area_rtol * (x1 - x0) * (y1 - y0)
    xabs = np.array([max(abs(x0), abs(x1)), max(abs(y0), abs(y1))])

    polys: list[np.ndarray] = [box]
    M = np.eye(2)[None]  # (R, n, 2): the current activations are M @ x + m on each polygon
    m = np.zeros((1, 2))
    pats = np.zeros((1, 0), dtype=bool)
    sets = []
    for layer, (Wl, bl) in enumerate(net.hidden[:upto_layer], start=1):
        A = np.einsum("ij,rjk->rik", Wl, M)  # (R, n, 2) pre-activation maps
        c = m @ Wl.T + bl  # (R, n)
        tol = rtol * (np.abs(A) @ xabs + np.abs(c))  # (R, n)
        counts = np.array([len(p) for p in polys])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        owner = np.repeat(np.arange(len(polys)), counts)
        V = np.concatenate(polys)
        vals = np.einsum("vk,vnk->vn", V, A[owner]) + c[owner]
        vmax = np.maximum.reduceat(vals, starts, axis=0)
        vmin = np.minimum.reduceat(vals, starts, axis=0)
        sign = vmax > tol
        crosses = sign & (vmin < -tol)
        if max_regions is not None:
            expected = _expected_count(polys, A, c, crosses, max_regions)
            if expected > max_regions:
                raise RegionLimitError(expected, layer, len(net.hidden), max_regions, estimated=True)

        new_polys: list[np.ndarray] = []
        new_parent: list[int] = []
        new_layer_pats: list[np.ndarray] = []
        for r in range(len(polys)):
            if max_regions is not None and len(new_polys) > max_regions:
                raise RegionLimitError(len(new_polys), layer, len(net.hidden), max_regions)
            cut = np.flatnonzero(crosses[r])
            if len(cut) == 0:
                new_polys.append(polys[r])
                new_parent.append(r)
                new_layer_pats.append(sign[r])
                continue
            for verts, bits in _split_cell(polys[r], A[r, cut], c[r, cut], tol[r, cut], area_tol):
                pat = sign[r].copy()
                pat[cut] = bits
                new_polys.append(verts)
                new_parent.append(r)
                new_layer_pats.append(pat)
        if max_regions is not None and len(new_polys) > max_regions:
            raise RegionLimitError(len(new_polys), layer, len(net.hidden), max_regions)
        parent = np.array(new_parent, dtype=np.int64)
        lp = np.array(new_layer_pats, dtype=bool).reshape(len(new_polys), Wl.shape[0])
        M = lp[:, :, None] * A[parent]
        m = lp * c[parent]
        pats = np.concatenate([pats[parent], lp], axis=1)
        polys = new_polys
        if layer == len(net.hidden):
            Wo, bo = net.head
            W_all, b_all = np.einsum("ij,rjk->rik", Wo, M), m @ Wo.T + bo
        else:
            W_all, b_all = M, m
        widths = net.widths[:layer]
        regions = [Region(i, polys[i], pats[i], W_all[i], b_all[i], widths) for i in range(len(polys))]
        sets.append(RegionSet(regions, bounds, net, layer))
    if not net.hidden:
        Wo, bo = net.head
        sets.append(RegionSet([Region(0, box, pats[0], Wo.copy(), bo.copy(), ())], bounds, net, 0))
    return sets


def _expected_count(polys: list[np.ndarray], A: np.ndarray, c: np.ndarray, crosses: np.ndarray, limit: int) -> int:
    """How many regions cutting every polygon by the lines that cross it makes, counted without cutting: a convex
    polygon cut by ``n`` lines in general position has ``1 + n + (crossings of two lines inside it)`` pieces.
    Only counted when the most it could be (every pair crossing inside) passes ``limit``."""
    n = crosses.sum(1)
    if int((1 + n + n * (n - 1) // 2).sum()) <= limit:
        return int((1 + n).sum())
    total = int((1 + n).sum())
    for r in np.flatnonzero(n >= 2):
        lines = np.flatnonzero(crosses[r])
        a, b = A[r, lines], c[r, lines]
        i, j = np.triu_indices(len(lines), 1)
        det = a[i, 0] * a[j, 1] - a[i, 1] * a[j, 0]
        ok = np.abs(det) > 1e-300
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.stack([(a[i, 1] * b[j] - a[j, 1] * b[i]) / det, (a[j, 0] * b[i] - a[i, 0] * b[j]) / det], 1)
        poly = polys[r]
        edge = np.roll(poly, -1, axis=0) - poly
        d = p[:, None, :] - poly[None]
        cross = edge[None, :, 0] * d[..., 1] - edge[None, :, 1] * d[..., 0]
        orientation = np.sign(ring_area(poly))
        total += int((ok & np.all(cross * orientation > 0, axis=1)).sum())
        if total > limit:
            break
    return total


def _split_cell(
    poly: np.ndarray, A: np.ndarray, c: np.ndarray, tol: np.ndarray, area_tol: float
) -> list[tuple[np.ndarray, list[bool]]]:
    """Cut one convex polygon by the lines of several units, one after the other; drop zero-area slivers."""
    pieces: list[tuple[list[tuple[float, float]], list[bool]]] = [([tuple(v) for v in poly.tolist()], [])]
    for (a0, a1), ci, ti in zip(A.tolist(), c.tolist(), tol.tolist(), strict=True):
        nxt = []
        for P, bits in pieces:
            vals = [a0 * x + a1 * y + ci for x, y in P]
            hi, lo = max(vals), min(vals)
            if hi > ti and lo < -ti:
                pos, neg = split_polygon(P, vals, ti)
                if ring_area(pos) > area_tol:
                    nxt.append((pos, [*bits, True]))
                if ring_area(neg) > area_tol:
                    nxt.append((neg, [*bits, False]))
            else:
                nxt.append((P, [*bits, hi > ti]))
        pieces = nxt
    return [(np.array(P, dtype=np.float64), bits) for P, bits in pieces]


def _check_limit(max_regions: int | None) -> int | None:
    if max_regions is None:
        return None
    if isinstance(max_regions, bool) or not isinstance(max_regions, int | np.integer) or max_regions < 1:
        raise ValueError(f"max_regions must be a positive integer or None, got {max_regions!r}")
    return int(max_regions)


def enumerate_layers(
    model: nn.Module,
    bounds: Bounds,
    *,
    area_rtol: float = 1e-12,
    rtol: float = 1e-10,
    max_regions: int | None = DEFAULT_MAX_REGIONS,
) -> list[RegionSet]:
    """The partition after hidden layer 1, 2, ..., L (one :class:`RegionSet` each) from a single pass.

    Raises :class:`RegionLimitError` as soon as a layer's partition has more than ``max_regions`` regions.
    """
    net = read_net(model)
    return _enumerate(net, as_bounds(bounds), len(net.hidden), area_rtol, rtol, _check_limit(max_regions))


def enumerate_regions(
    model: nn.Module,
    bounds: Bounds,
    upto_layer: int | None = None,
    *,
    area_rtol: float = 1e-12,
    rtol: float = 1e-10,
    max_regions: int | None = DEFAULT_MAX_REGIONS,
) -> RegionSet:
    """Exact linear regions of a Linear/ReLU network on the box ``((xmin, xmax), (ymin, ymax))``.

    Polygons are split layer by layer along each unit's line; pieces with area below ``area_rtol`` times the box's
    are dropped, and vertices within ``rtol`` (relative to the size of the unit's terms) of a line count as on it.
    ``upto_layer=k`` stops after hidden layer ``k``: the cells are then coarser, and each region's ``W``, ``b`` map
    onto layer ``k``'s activations (the outputs are not affine on these cells).

    The box must be finite and non-empty. The count grows fast with width and depth (a random 128x3 net has about
    51,500 regions on ``((-3, 3), (-3, 3))``): past ``max_regions`` regions in a layer (``None``: no limit) the
    enumeration stops with a :class:`RegionLimitError`.
    """
    net = read_net(model)
    L = len(net.hidden)
    k = L if upto_layer is None else int(upto_layer)
    if not 0 <= k <= L:
        raise ValueError(f"upto_layer must be between 0 and {L}, got {upto_layer}")
    bounds = as_bounds(bounds)
    limit = _check_limit(max_regions)
    if k == 0:  # the box itself; W, b: the input (the identity map)
        box = box_polygon(bounds)
        return RegionSet([Region(0, box, np.zeros(0, dtype=bool), np.eye(2), np.zeros(2), ())], bounds, net, 0)
    return _enumerate(net, bounds, k, area_rtol, rtol, limit)[-1]
