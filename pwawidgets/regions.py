"""Exact linear regions of small ReLU networks on the plane.

A network made of ``nn.Linear`` and ReLU layers is piece-wise affine: the plane splits into convex polygons, one per
activation pattern, and on each polygon every output is exactly ``W @ x + b``.  :func:`enumerate_regions` finds these
polygons without sampling: it starts from the bounding box and, layer by layer, cuts every polygon along each unit's
line ``A_i x + c_i = 0``, where ``A x + c`` is the (exact, float64) affine map of the layer's pre-activations on that
polygon.

Also here: :func:`train_toy` (the 3x5 network of the paper's Fig. 1 on scikit-learn's 2-D data sets), region counts
against the known bounds, the exact decision boundary, exercise checkers, and a few plotting helpers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DATASETS",
    "Bounds",
    "Region",
    "RegionSet",
    "ToyNet",
    "activation_pattern",
    "affine_map_at",
    "affine_map_from_pattern",
    "build_mlp",
    "check_affine_map",
    "check_contributions",
    "check_pattern",
    "count_regions_on_grid",
    "data_bounds",
    "enumerate_layers",
    "enumerate_regions",
    "make_toy_data",
    "montufar_lower_bound",
    "plot_logit_surface",
    "plot_regions",
    "region_colors",
    "region_growth",
    "region_upper_bound",
    "train_toy",
]

Bounds = tuple[tuple[float, float], tuple[float, float]]
DATASETS = ("moons", "circles", "blobs", "xor")

# --------------------------------------------------------------------------------------------- toy data and models


def make_toy_data(
    dataset: str = "moons", n_samples: int = 400, noise: float | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D classification set: ``X`` (n, 2) float64, standardised per feature, and integer labels ``y``.

    ``moons``, ``circles`` and ``blobs`` (3 classes) come from scikit-learn; ``xor`` labels uniform points of
    ``[-1, 1]^2`` by the sign of ``x1 * x2`` and adds Gaussian noise.
    """
    from sklearn.datasets import make_blobs, make_circles, make_moons

    if dataset == "moons":
        X, y = make_moons(n_samples, noise=0.15 if noise is None else noise, random_state=seed)
    elif dataset == "circles":
        X, y = make_circles(n_samples, noise=0.08 if noise is None else noise, factor=0.5, random_state=seed)
    elif dataset == "blobs":
        X, y = make_blobs(n_samples, centers=3, cluster_std=1.0 if noise is None else noise, random_state=seed)
    elif dataset == "xor":
        rng = np.random.default_rng(seed)
        X = rng.uniform(-1.0, 1.0, size=(n_samples, 2))
        y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
        X = X + rng.normal(scale=0.1 if noise is None else noise, size=X.shape)
    else:
        raise ValueError(f"unknown data set {dataset!r}: choose one of {', '.join(DATASETS)}")
    X = np.asarray(X, dtype=np.float64)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, np.asarray(y, dtype=np.int64)


def data_bounds(X: np.ndarray, margin: float = 0.5) -> Bounds:
    """A box around the points, ``margin`` wider on each side, rounded outwards to a tenth."""
    lo = np.floor((X.min(axis=0) - margin) * 10) / 10
    hi = np.ceil((X.max(axis=0) + margin) * 10) / 10
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def build_mlp(
    hidden: Sequence[int] = (5, 5, 5), n_in: int = 2, n_out: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64
) -> nn.Sequential:
    """``Linear -> ReLU`` for every width in ``hidden``, then a ``Linear`` to ``n_out`` logits; seeded init."""
    sizes = [n_in, *[int(h) for h in hidden]]
    if any(h < 1 for h in sizes[1:]):
        raise ValueError(f"every hidden width must be at least 1, got {tuple(hidden)}")
    gen = torch.Generator().manual_seed(seed)  # a private generator: the global RNG is left alone (thread-safe)
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes, [*sizes[1:], n_out], strict=True)):
        lin = nn.Linear(a, b, dtype=dtype, device="meta").to_empty(device="cpu")
        bound = 1.0 / math.sqrt(a)  # PyTorch's default init for nn.Linear, drawn from `gen`
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
        layers += [lin] if k == len(sizes) - 1 else [lin, nn.ReLU()]
    return nn.Sequential(*layers)


@dataclass
class ToyNet:
    """A trained toy network with its data: what :func:`train_toy` returns."""

    model: nn.Sequential
    X: np.ndarray
    y: np.ndarray
    bounds: Bounds
    dataset: str = "custom"
    hidden: tuple[int, ...] = ()
    seed: int = 0
    accuracy: float = float("nan")
    losses: list[float] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1 if len(self.y) else 0


def train_toy(
    dataset: str = "moons",
    hidden: Sequence[int] = (5, 5, 5),
    seed: int = 0,
    *,
    n_samples: int = 400,
    noise: float | None = None,
    steps: int = 1500,
    lr: float = 0.02,
    progress: bool | Callable[[int, int], None] = False,
) -> ToyNet:
    """Train a ReLU MLP (float64, full-batch Adam, cross-entropy) on a 2-D data set; seeded and CPU-fast.

    The default is the network of the paper's Fig. 1: three hidden layers of five units on the two moons.
    ``progress`` is ``True`` for a ``tqdm`` bar or a callable ``(step, total)`` called about 50 times.
    Returns a :class:`ToyNet` holding the model (in eval mode), the data, a bounding box and the training accuracy.
    """
    X, y = make_toy_data(dataset, n_samples=n_samples, noise=noise, seed=seed)
    n_out = int(y.max()) + 1
    model = build_mlp(hidden, n_out=n_out, seed=seed)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    losses: list[float] = []
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"training {dataset} {tuple(hidden)}", leave=False)
    report_every = max(1, steps // 50)
    with _one_thread():  # full-batch training draws no random numbers
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        model.train()
        for step in range(steps):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(Xt), yt)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if (step + 1) % report_every == 0 or step + 1 == steps:
                if bar is not None:
                    bar.update(step + 1 - bar.n)
                elif callable(progress):
                    progress(step + 1, steps)
    if bar is not None:
        bar.close()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(Xt).argmax(1) == yt).double().mean())
    return ToyNet(model, X, y, data_bounds(X), dataset, tuple(int(h) for h in hidden), seed, accuracy, losses)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one CPU thread for the block: tiny matrices gain nothing from more, and a busy machine makes
    extra threads spin (a 1 s training can take a minute)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# -------------------------------------------------------------------------------------- reading the network's layers


@dataclass(frozen=True)
class _Net:
    """The network as numpy float64: hidden layers ``(W_l, b_l)`` each followed by ReLU, then an affine head."""

    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]
    head: tuple[np.ndarray, np.ndarray]

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(W.shape[0] for W, _ in self.hidden)

    @property
    def n_in(self) -> int:
        return (self.hidden[0][0] if self.hidden else self.head[0]).shape[1]

    def forward(self, X: np.ndarray, upto_layer: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Outputs (or layer ``upto_layer``'s activations) and the pre-activations of each hidden layer."""
        h = np.asarray(X, dtype=np.float64)
        pres = []
        for W, b in self.hidden[:upto_layer]:
            z = h @ W.T + b
            pres.append(z)
            h = np.maximum(z, 0.0)
        if upto_layer is not None and upto_layer < len(self.hidden):
            return h, pres
        W, b = self.head
        return h @ W.T + b, pres


def _leaves(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    children = list(module.named_children())
    if not children:
        yield type(module).__name__, module
        return
    for name, child in children:
        for sub, leaf in _leaves(child):
            yield (f"{name}.{sub}" if list(child.children()) else name), leaf


def _read_net(model: nn.Module) -> _Net:
    """Read ``model`` as Linear/ReLU layers (consecutive Linears are composed) and check it against its forward."""
    linear = (nn.Linear,)
    passthrough = (nn.Identity, nn.Flatten, nn.Dropout)
    n_in = None
    cur_W: np.ndarray | None = None
    cur_b: np.ndarray | None = None
    hidden: list[tuple[np.ndarray, np.ndarray]] = []
    last_was_relu = False
    for name, leaf in _leaves(model):
        if isinstance(leaf, linear):
            W = leaf.weight.detach().cpu().double().numpy()
            b = (leaf.bias.detach().cpu().double().numpy() if leaf.bias is not None else np.zeros(W.shape[0]))
            if n_in is None:
                n_in = W.shape[1]
            if cur_W is None:
                cur_W, cur_b = W, b
            else:
                cur_W, cur_b = W @ cur_W, W @ cur_b + b
            last_was_relu = False
        elif isinstance(leaf, nn.ReLU):
            if cur_W is None:
                if not last_was_relu:
                    raise ValueError(f"layer {name!r}: a ReLU before any nn.Linear is not supported")
                continue
            hidden.append((cur_W, cur_b))
            cur_W = cur_b = None
            last_was_relu = True
        elif isinstance(leaf, passthrough):
            if isinstance(leaf, nn.Dropout) and leaf.training and leaf.p > 0:
                raise ValueError(f"layer {name!r}: dropout in training mode; call model.eval() first")
        else:
            raise ValueError(
                f"layer {name!r} ({type(leaf).__name__}) is not supported: regions are computed for networks "
                "made of nn.Linear and nn.ReLU layers only"
            )
    if n_in is None:
        raise ValueError("the model has no nn.Linear layer")
    if n_in != 2:
        raise ValueError(f"regions are computed on the plane: the first layer takes {n_in} inputs, not 2")
    if cur_W is None:  # the network ends with a ReLU: its outputs are the last hidden layer
        n = hidden[-1][0].shape[0]
        cur_W, cur_b = np.eye(n), np.zeros(n)
    net = _Net(tuple(hidden), (cur_W, cur_b))
    _check_read(model, net)
    return net


def _check_read(model: nn.Module, net: _Net) -> None:
    """The layers read must reproduce the model's own forward (catches modules not called in registration order)."""
    X = np.random.default_rng(0).normal(size=(16, 2)) * 2
    param = next(model.parameters())
    with torch.no_grad():
        ref = model(torch.as_tensor(X, dtype=param.dtype, device=param.device)).double().cpu().numpy()
    mine, _ = net.forward(X)
    rtol = 1e-9 if param.dtype == torch.float64 else 1e-4
    if ref.shape != mine.shape or not np.allclose(ref, mine, rtol=rtol, atol=rtol * (1 + np.abs(ref).max())):
        raise ValueError(
            "the model could not be read as a chain of nn.Linear and ReLU layers in registration order; "
            "build it as an nn.Sequential"
        )


# ------------------------------------------------------------------------------------------------ regions


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
        return _area(self.polygon)

    @property
    def centroid(self) -> np.ndarray:
        """The polygon's centroid: an interior point (the polygon is convex)."""
        return _centroid(self.polygon)

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

    def __init__(self, regions: list[Region], bounds: Bounds, net: _Net, layer: int):
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
        tol_scale = 1e-12 * _box_scale(self.bounds)
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
                    keep, _ = _split(P, vals, tol_scale * (abs(ak).sum() + abs(ck) + 1))
                    P = keep
                if len(P) < 2:
                    continue
                seg = _line_in_polygon(P, a, c, tol_scale * (abs(a).sum() + abs(c) + 1))
                if seg is not None:
                    segs.append((r.index, (i, j), seg))
        return segs

    def decision_boundary(self, join: bool = True) -> list[np.ndarray]:
        """The exact decision boundary as polylines (k, 2); ``join=False`` gives one segment per region."""
        segs = [s for _, _, s in self.boundary_segments()]
        return _join_segments(segs, 1e-9 * _box_scale(self.bounds)) if join else segs


def _box_scale(bounds: Bounds) -> float:
    (x0, x1), (y0, y1) = bounds
    return max(abs(x0), abs(x1), abs(y0), abs(y1), x1 - x0, y1 - y0)


def _area(P: np.ndarray | list) -> float:
    P = np.asarray(P, dtype=np.float64)
    if len(P) < 3:
        return 0.0
    x, y = P[:, 0], P[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _area_list(P: list[tuple[float, float]]) -> float:
    s = 0.0
    n = len(P)
    for k in range(n):
        x0, y0 = P[k]
        x1, y1 = P[(k + 1) % n]
        s += x0 * y1 - x1 * y0
    return 0.5 * s


def _centroid(P: np.ndarray) -> np.ndarray:
    x, y = P[:, 0], P[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cr = x * yn - xn * y
    a = cr.sum() / 2
    if abs(a) < 1e-300:
        return P.mean(axis=0)
    return np.array([((x + xn) * cr).sum(), ((y + yn) * cr).sum()]) / (6 * a)


def _split(
    P: list[tuple[float, float]], vals: list[float], tol: float
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Cut a convex polygon (CCW) by the line ``vals == 0``: the parts where ``vals >= 0`` and ``vals <= 0``.

    Sutherland-Hodgman on both sides at once; vertices within ``tol`` of the line go to both parts. Both stay CCW.
    """
    pos: list[tuple[float, float]] = []
    neg: list[tuple[float, float]] = []
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


def _line_in_polygon(P: list[tuple[float, float]], a: np.ndarray, c: float, tol: float) -> np.ndarray | None:
    """The segment where ``a @ x + c == 0`` crosses the convex polygon ``P``, or None."""
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


def _join_segments(segs: list[np.ndarray], tol: float) -> list[np.ndarray]:
    """Chain segments that share end points (within ``tol``) into polylines."""
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


def _enumerate(net: _Net, bounds: Bounds, upto_layer: int, area_rtol: float, rtol: float) -> list[RegionSet]:
    """Split the box layer by layer; one :class:`RegionSet` after each of the first ``upto_layer`` layers."""
    (x0, x1), (y0, y1) = bounds
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty box {bounds}: need xmin < xmax and ymin < ymax")
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
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

        new_polys: list[np.ndarray] = []
        new_parent: list[int] = []
        new_layer_pats: list[np.ndarray] = []
        for r in range(len(polys)):
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
                pos, neg = _split(P, vals, ti)
                if _area_list(pos) > area_tol:
                    nxt.append((pos, [*bits, True]))
                if _area_list(neg) > area_tol:
                    nxt.append((neg, [*bits, False]))
            else:
                nxt.append((P, [*bits, hi > ti]))
        pieces = nxt
    return [(np.array(P, dtype=np.float64), bits) for P, bits in pieces]


def enumerate_layers(
    model: nn.Module, bounds: Bounds, *, area_rtol: float = 1e-12, rtol: float = 1e-10
) -> list[RegionSet]:
    """The partition after hidden layer 1, 2, ..., L (one :class:`RegionSet` each) from a single pass."""
    net = _read_net(model)
    return _enumerate(net, _as_bounds(bounds), len(net.hidden), area_rtol, rtol)


def enumerate_regions(
    model: nn.Module, bounds: Bounds, upto_layer: int | None = None, *, area_rtol: float = 1e-12, rtol: float = 1e-10
) -> RegionSet:
    """Exact linear regions of a Linear/ReLU network on the box ``((xmin, xmax), (ymin, ymax))``.

    Polygons are split layer by layer along each unit's line; pieces with area below ``area_rtol`` times the box's
    are dropped, and vertices within ``rtol`` (relative to the size of the unit's terms) of a line count as on it.
    ``upto_layer=k`` stops after hidden layer ``k``: the cells are then coarser, and each region's ``W``, ``b`` map
    onto layer ``k``'s activations (the outputs are not affine on these cells).
    """
    net = _read_net(model)
    L = len(net.hidden)
    k = L if upto_layer is None else int(upto_layer)
    if not 0 <= k <= L:
        raise ValueError(f"upto_layer must be between 0 and {L}, got {upto_layer}")
    bounds = _as_bounds(bounds)
    if k == 0:  # the box itself; W, b: the input (the identity map)
        (x0, x1), (y0, y1) = bounds
        box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
        return RegionSet([Region(0, box, np.zeros(0, dtype=bool), np.eye(2), np.zeros(2), ())], bounds, net, 0)
    return _enumerate(net, bounds, k, area_rtol, rtol)[-1]


def _as_bounds(bounds: Any) -> Bounds:
    (x0, x1), (y0, y1) = bounds
    return (float(x0), float(x1)), (float(y0), float(y1))


# --------------------------------------------------------------------------------- patterns and affine maps


def activation_pattern(model: nn.Module, points: np.ndarray, upto_layer: int | None = None) -> np.ndarray:
    """Activation patterns (pre-activation > 0) of points (n, 2), hidden units layer after layer: bool (n, units)."""
    net = _read_net(model)
    _, pres = net.forward(np.atleast_2d(points), upto_layer)
    if not pres:
        return np.zeros((len(np.atleast_2d(points)), 0), dtype=bool)
    return np.concatenate(pres, axis=1) > 0


def affine_map_from_pattern(
    model: nn.Module, pattern: Sequence[np.ndarray] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``W``, ``b`` of the outputs on the region of an activation pattern (flat, or one mask per layer).

    With ``D_l = diag(mask_l)``: ``W = W_out D_L W_L ... D_1 W_1`` and ``b`` accumulates the biases the same way.
    """
    net = _read_net(model)
    if isinstance(pattern, np.ndarray):
        flat = pattern.astype(bool).ravel()
    else:
        flat = np.concatenate([np.asarray(p, dtype=bool).ravel() for p in pattern])
    if flat.size != sum(net.widths):
        raise ValueError(f"pattern has {flat.size} units; the network has {sum(net.widths)} ({net.widths})")
    masks = np.split(flat, np.cumsum(net.widths)[:-1]) if net.widths else []
    W, b = np.eye(2), np.zeros(2)
    for (Wl, bl), mask in zip(net.hidden, masks, strict=True):
        W, b = mask[:, None] * (Wl @ W), mask * (Wl @ b + bl)
    Wo, bo = net.head
    return Wo @ W, Wo @ b + bo


def affine_map_at(model: nn.Module, point: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``W`` (Jacobian of the outputs, by autograd) and ``b = F(x) - W x`` at one point, in float64."""
    x = torch.as_tensor(np.asarray(point, dtype=np.float64)).reshape(2)
    model64 = _float64_copy(model)
    with _one_thread():
        W = torch.func.jacrev(lambda t: model64(t[None])[0])(x)
        with torch.no_grad():
            b = model64(x[None])[0] - W @ x
    return W.detach().numpy(), b.detach().numpy()


def _float64_copy(model: nn.Module) -> nn.Module:
    p = next(model.parameters())
    if p.dtype == torch.float64 and p.device.type == "cpu":
        return model
    import copy

    return copy.deepcopy(model).cpu().double()


# ------------------------------------------------------------------------------------------------ counts


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
    (x0, x1), (y0, y1) = _as_bounds(bounds)
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


# ------------------------------------------------------------------------------------------------ exercise checks


def _report(ok: bool, what: str, detail: str = "") -> bool:
    ok = bool(ok)
    print(f"PASS: {what}" if ok else f"FAIL: {what}. {detail}".rstrip())
    return ok


def check_pattern(mine: Any, model: nn.Module, point: Sequence[float]) -> bool | None:
    """Check an activation pattern (one 0/1 mask per hidden layer, or flat) at ``point``; prints pass/fail."""
    if mine is None or mine is Ellipsis:
        print("not done yet: fill in the stub, then run this cell again")
        return None
    ref = activation_pattern(model, np.asarray(point, dtype=np.float64)[None])[0]
    try:
        flat = np.concatenate([np.asarray(p).ravel() for p in mine]) if isinstance(mine, list | tuple) else (
            np.asarray(mine).ravel()
        )
        flat = flat.astype(bool)
    except (TypeError, ValueError) as e:
        return _report(False, "pattern", f"could not read it as masks: {e}")
    if flat.shape != ref.shape:
        return _report(False, "pattern", f"expected {ref.size} units in all, got {flat.size}")
    bad = np.flatnonzero(flat != ref)
    return _report(len(bad) == 0, "the activation pattern matches the network", f"units {bad.tolist()} differ")


def check_affine_map(W_mine: Any, b_mine: Any, model: nn.Module, point: Sequence[float]) -> bool | None:
    """Check ``W`` (outputs, 2) and ``b`` against the Jacobian and offset at ``point`` (autograd); prints pass/fail."""
    if W_mine is None or b_mine is None or W_mine is Ellipsis or b_mine is Ellipsis:
        print("not done yet: fill in the stub, then run this cell again")
        return None
    W_ref, b_ref = affine_map_at(model, point)
    W_m = np.asarray(W_mine, dtype=np.float64)
    b_m = np.asarray(b_mine, dtype=np.float64).ravel()
    if W_m.shape != W_ref.shape or b_m.shape != b_ref.shape:
        return _report(False, "W and b", f"shapes {W_m.shape}, {b_m.shape}; expected {W_ref.shape}, {b_ref.shape}")
    err_w, err_b = np.abs(W_m - W_ref).max(), np.abs(b_m - b_ref).max()
    return _report(
        err_w < 1e-8 and err_b < 1e-8,
        "W equals the gradient and b = F(x) - W x",
        f"largest error: W {err_w:.2e}, b {err_b:.2e}",
    )


def check_contributions(contrib: Any, bias: Any, model: nn.Module, point: Sequence[float], output: int) -> bool | None:
    """Check contributions ``w_i x_i`` (2,) and the bias of one output at ``point``; prints pass/fail."""
    if contrib is None or bias is None or contrib is Ellipsis or bias is Ellipsis:
        print("not done yet: fill in the stub, then run this cell again")
        return None
    W, b = affine_map_at(model, point)
    x = np.asarray(point, dtype=np.float64)
    ref = W[output] * x
    c = np.asarray(contrib, dtype=np.float64).ravel()
    if c.shape != ref.shape:
        return _report(False, "contributions", f"expected {ref.size} numbers, got {c.size}")
    ok = np.allclose(c, ref, atol=1e-8) and abs(float(bias) - b[output]) < 1e-8
    return _report(ok, "contributions and bias", f"expected {np.round(ref, 6).tolist()} and {b[output]:.6f}")


# ------------------------------------------------------------------------------------------------ plotting helpers

_CLASS_CMAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


def region_colors(regions: RegionSet, seed: int = 0) -> np.ndarray:
    """RGBA (R, 4): hue from the class the network predicts at each region's centroid, a random shade per region."""
    import matplotlib

    rng = np.random.default_rng(seed)
    shades = rng.uniform(0.15, 0.55, size=len(regions))
    if len(regions) == 0:
        return np.zeros((0, 4))
    cents = np.array([r.centroid for r in regions])
    out, _ = regions._net.forward(cents)
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
