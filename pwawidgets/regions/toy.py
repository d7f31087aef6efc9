"""Toy data and networks: scikit-learn's 2-D data sets, seeded ReLU MLPs, and :func:`train_toy` (the 3x5 network of
the paper's Fig. 1 on the two moons by default)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .geometry import Bounds
from .threads import one_thread

__all__ = ["DATASETS", "ToyNet", "build_mlp", "data_bounds", "make_toy_data", "train_toy"]

DATASETS = ("moons", "circles", "blobs", "xor")


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
    if isinstance(hidden, int) or not all(isinstance(h, int) and not isinstance(h, bool) for h in hidden):
        raise TypeError(f"hidden is a sequence of integer widths, one per hidden layer, e.g. (5, 5, 5); got {hidden!r}")
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
    Safe in a worker thread: torch runs on one thread in the calling thread only, and the process-wide thread
    settings are left alone (see :func:`~pwawidgets.regions.threads.one_thread`).
    """
    if not isinstance(n_samples, int) or n_samples < 10:
        raise ValueError(f"n_samples must be an integer >= 10 (a data set to learn from), got {n_samples!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
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
    with one_thread():  # tiny matrices: one thread (this thread only); full-batch: no random numbers drawn
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
