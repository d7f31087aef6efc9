"""Plane geometry for the partition: boxes, convex polygons (area, centroid, cut by a line, crossed by a line), and
chaining segments into polylines. Numpy and scipy only; nothing here knows about networks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "Bounds",
    "Point",
    "as_bounds",
    "box_polygon",
    "box_scale",
    "join_segments",
    "line_in_polygon",
    "polygon_area",
    "polygon_centroid",
    "ring_area",
    "split_polygon",
]

Bounds = tuple[tuple[float, float], tuple[float, float]]
Point = tuple[float, float]


def as_bounds(bounds: Any) -> Bounds:
    """``((xmin, xmax), (ymin, ymax))`` as floats; a clear ``ValueError`` for a wrong nesting, a non-finite value,
    or an empty or reversed box."""
    try:
        (x0, x1), (y0, y1) = bounds
        x0, x1, y0, y1 = (float(v) for v in (x0, x1, y0, y1))
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be ((xmin, xmax), (ymin, ymax)), got {bounds!r}") from None
    if not all(math.isfinite(v) for v in (x0, x1, y0, y1)):
        raise ValueError(f"bounds must be finite numbers, got (({x0}, {x1}), ({y0}, {y1})): regions are found on "
                         "a bounded box; use e.g. data_bounds(X)")
    for name, lo, hi in (("x", x0, x1), ("y", y0, y1)):
        if lo > hi:
            raise ValueError(f"reversed box: {name}min = {lo} > {name}max = {hi}; give ((xmin, xmax), (ymin, ymax))")
        if lo == hi:
            raise ValueError(f"empty box: {name}min = {name}max = {lo}; need xmin < xmax and ymin < ymax")
    return (x0, x1), (y0, y1)


def box_polygon(bounds: Bounds) -> np.ndarray:
    """The box's four corners, counter-clockwise from the bottom left: (4, 2)."""
    (x0, x1), (y0, y1) = bounds
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def box_scale(bounds: Bounds) -> float:
    """The size of the box's numbers: the largest coordinate or side."""
    (x0, x1), (y0, y1) = bounds
    return max(abs(x0), abs(x1), abs(y0), abs(y1), x1 - x0, y1 - y0)


def polygon_area(P: np.ndarray | list) -> float:
    """Signed area (positive when counter-clockwise) of a polygon (k, 2)."""
    P = np.asarray(P, dtype=np.float64)
    if len(P) < 3:
        return 0.0
    x, y = P[:, 0], P[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def ring_area(P: list[Point]) -> float:
    """:func:`polygon_area` of a list of tuples, in plain Python (faster for the few vertices of one cut)."""
    s = 0.0
    n = len(P)
    for k in range(n):
        x0, y0 = P[k]
        x1, y1 = P[(k + 1) % n]
        s += x0 * y1 - x1 * y0
    return 0.5 * s


def polygon_centroid(P: np.ndarray) -> np.ndarray:
    """The centroid of a polygon (k, 2): an interior point when it is convex; the vertex mean when degenerate."""
    x, y = P[:, 0], P[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cr = x * yn - xn * y
    a = cr.sum() / 2
    if abs(a) < 1e-300:
        return P.mean(axis=0)
    return np.array([((x + xn) * cr).sum(), ((y + yn) * cr).sum()]) / (6 * a)


def split_polygon(P: list[Point], vals: list[float], tol: float) -> tuple[list[Point], list[Point]]:
    """Cut a convex polygon (CCW) by the line ``vals == 0``: the parts where ``vals >= 0`` and ``vals <= 0``.

    Sutherland-Hodgman on both sides at once; vertices within ``tol`` of the line go to both parts. Both stay CCW.
    """
    pos: list[Point] = []
    neg: list[Point] = []
    n = len(P)
    for k in range(n):
        p, vp = P[k], vals[k]
        q, vq = P[(k + 1) % n], vals[(k + 1) % n]
        if vp > tol:
            pos.append(p)
        elif vp < -tol:
            neg.append(p)
        else:
            pos.append(p)
            neg.append(p)
        if (vp > tol and vq < -tol) or (vp < -tol and vq > tol):
            t = vp / (vp - vq)
            x = (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))
            pos.append(x)
            neg.append(x)
    return pos, neg


def line_in_polygon(P: list[Point], a: np.ndarray, c: float, tol: float) -> np.ndarray | None:
    """The segment (2, 2) where ``a @ x + c == 0`` crosses the convex polygon ``P``, or None."""
    vals = [a[0] * x + a[1] * y + c for x, y in P]
    if min(vals) > tol or max(vals) < -tol:
        return None
    pts = []
    n = len(P)
    for k in range(n):
        p, vp = P[k], vals[k]
        q, vq = P[(k + 1) % n], vals[(k + 1) % n]
        if abs(vp) <= tol:
            pts.append(p)
        if (vp > tol and vq < -tol) or (vp < -tol and vq > tol):
            t = vp / (vp - vq)
            pts.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    if len(pts) < 2:
        return None
    pts_a = np.array(pts)
    d = np.array([-a[1], a[0]])
    s = pts_a @ d
    seg = pts_a[[int(np.argmin(s)), int(np.argmax(s))]]
    if np.hypot(*(seg[1] - seg[0])) <= tol:
        return None
    return seg


def join_segments(segs: list[np.ndarray], tol: float) -> list[np.ndarray]:
    """Chain segments (2, 2) that share end points (within ``tol``) into polylines (k, 2)."""
    if not segs:
        return []
    from scipy.spatial import cKDTree

    ends = np.concatenate(segs)  # (2S, 2)
    parent = np.arange(len(ends))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in cKDTree(ends).query_pairs(max(tol, 1e-300)):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    node = np.array([find(i) for i in range(len(ends))])
    adj: dict[int, list[int]] = {}
    for s in range(len(segs)):
        a, b = node[2 * s], node[2 * s + 1]
        if a == b:
            continue
        adj.setdefault(a, []).append(s)
        adj.setdefault(b, []).append(s)
    used = np.zeros(len(segs), dtype=bool)
    used[[s for s in range(len(segs)) if node[2 * s] == node[2 * s + 1]]] = True

    def walk(start: int) -> list[int]:
        path, cur = [start], start
        while True:
            nxt = [s for s in adj.get(cur, []) if not used[s]]
            if not nxt or (len(adj[cur]) != 2 and len(path) > 1):
                return path
            s = nxt[0]
            used[s] = True
            cur = node[2 * s + 1] if node[2 * s] == cur else node[2 * s]
            path.append(cur)
            if cur == start:
                return path

    lines = []
    starts = [n for n, ss in adj.items() if len(ss) != 2] + list(adj)
    for n in starts:
        while any(not used[s] for s in adj[n]):
            path = walk(n)
            if len(path) > 1:
                lines.append(np.array([ends[p] for p in path]))
    return lines
