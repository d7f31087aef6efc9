"""Timings of the exact region enumeration and of the RegionExplorer, against the targets.

Run: python benchmarks/bench_regions.py   (CPU only; prints measured figures, asserts nothing)

Targets: exact regions of the 3x5 net <= 0.2 s; of a 4x32 net (thousands of regions) <= 2 s; redraw after a
point pick <= 100 ms.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from pwawidgets.regions import count_regions_on_grid, enumerate_layers, enumerate_regions, train_toy
from pwawidgets.widgets.region_explorer import RegionExplorer


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall time of ``repeat`` calls and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def line(what: str, value: float, unit: str, target: float | None = None) -> None:
    verdict = ""
    if target is not None:
        verdict = ("  [ok]" if value <= target else "  [MISSED]") + f" target <= {target:g} {unit}"
    print(f"{what:<52s} {value:9.4f} {unit}{verdict}")


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}")
    t = time.perf_counter()
    small = train_toy("moons", (5, 5, 5), seed=0)
    line("train 3x5 on moons (1500 Adam steps)", time.perf_counter() - t, "s")
    t = time.perf_counter()
    large = train_toy("moons", (32, 32, 32, 32), seed=0)
    line("train 4x32 on moons (1500 Adam steps)", time.perf_counter() - t, "s")

    for name, toy, target in (("3x5", small, 0.2), ("4x32", large, 2.0)):
        sec, rs = timed(lambda toy=toy: enumerate_regions(toy.model, toy.bounds), 5)
        line(f"exact regions of the {name} net ({len(rs)} regions)", sec, "s", target)
        sec, _ = timed(lambda toy=toy: enumerate_layers(toy.model, toy.bounds), 3)
        line(f"  all layers' partitions of the {name} net", sec, "s")
        sec, db = timed(lambda rs=rs: rs.decision_boundary(), 3)
        line(f"  decision boundary ({sum(len(p) - 1 for p in db)} segments)", sec, "s")
        grid = count_regions_on_grid(toy.model, toy.bounds, 200)
        print(f"  a 200x200 grid sees {grid} of the {len(rs)} regions")

    rng = np.random.default_rng(0)
    for name, toy in (("3x5", small), ("4x32", large)):
        ex = RegionExplorer(toy)
        (x0, x1), (y0, y1) = toy.bounds
        pts = rng.uniform((x0, y0), (x1, y1), size=(30, 2))
        times = []
        for x, y in pts:
            t = time.perf_counter()
            ex.pick(x, y)
            times.append(time.perf_counter() - t)
        line(f"redraw after a point pick, {name} net (median of 30)", 1000 * statistics.median(times), "ms", 100)
        line(f"  slowest of the 30 picks, {name} net", 1000 * max(times), "ms")
        ex.controls["layer"].value = 1
        t = time.perf_counter()
        ex.controls["layer"].value = 2
        line(f"  layer slider to a partition not yet drawn, {name}", 1000 * (time.perf_counter() - t), "ms")
        t = time.perf_counter()
        ex.controls["layer"].value = 1
        line(f"  layer slider back to a drawn partition, {name}", 1000 * (time.perf_counter() - t), "ms")


if __name__ == "__main__":
    main()
