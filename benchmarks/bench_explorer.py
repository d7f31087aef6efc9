"""ContributionExplorer on VGG-19 (random weights, 224 px): first explanation, redraw, 1000 moves, memory.

    python benchmarks/bench_explorer.py [--model vgg19] [--moves 1000]

Prints the figures measured in this run next to the targets (first explanation <= 2 s, redraw <= 50 ms,
no memory growth over the moves, peak <= 1.5 GB). Timings depend on what else runs on the machine: the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import numpy as np
import torch

import pwawidgets as pw
from pwawidgets import data
from pwawidgets.widgets.contribution_explorer import ContributionExplorer

TARGETS = {"first": 2.0, "redraw_ms": 50.0, "peak_mb": 1536.0}


def rss_mb() -> float:
    """Resident memory now, MiB (from /proc; psutil if /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def peak_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--moves", type=int, default=1000)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    rss_imports = rss_mb()
    torch.manual_seed(0)
    model = pw.load_model(args.model, pretrained=False)
    rss_model = rss_mb()
    print(f"memory: {rss_imports:.0f} MiB after imports, {rss_model:.0f} MiB with {args.model} loaded")

    photos = [data.sample_photo(n) for n in ("chelsea", "astronaut", "coffee", "rocket")]
    t0 = time.perf_counter()
    explorer = ContributionExplorer(model, photos[0])
    first = time.perf_counter() - t0
    assert explorer.message == "", explorer.message
    again = []
    for photo in photos[1:]:
        t0 = time.perf_counter()
        explorer.set_image(photo)
        again.append(time.perf_counter() - t0)
    s = explorer.state
    print(f"first explanation ({args.model}, {len(s.layers) - 1} blocks + input, top-{s.top_k}, "
          f"{s.preprocess.crop} px, forward + decomposition + first render): {first:.2f} s; next images "
          f"{', '.join(f'{t:.2f}' for t in again)} s (median {statistics.median(again):.2f} s) -> "
          f"{verdict(statistics.median([first, *again]) <= TARGETS['first'])} (<= {TARGETS['first']} s)")

    c = explorer.controls
    layers = list(c["layer"].options)
    for method in ("ours", "side"):
        c["method"].value = method
        times = []
        for i in range(60):
            t0 = time.perf_counter()
            c["layer"].value = layers[i % len(layers)]
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        print(f"redraw after a layer-slider move ({method}): median {statistics.median(times):.1f} ms, "
              f"p95 {times[int(0.95 * len(times))]:.1f} ms, max {times[-1]:.1f} ms -> "
              f"{verdict(statistics.median(times) <= TARGETS['redraw_ms'])} (<= {TARGETS['redraw_ms']:.0f} ms)")

    rng = np.random.default_rng(0)
    choices = {"layer": layers, "method": ["ours", "gradcam", "gradient", "side"],
               "sign": ["positive", "negative", "both", "diverging"], "threshold": [1.0, 10.0, 30.0, 100.0],
               "opacity": [0.0, 0.3, 0.6, 1.0], "target": list(s.top)}
    keys = list(choices)
    decompositions = s.stats["decompositions"]
    rss_before = rss_mb()
    errors = 0
    t0 = time.perf_counter()
    for _ in range(args.moves):
        key = keys[rng.integers(len(keys))]
        options = choices[key]
        c[key].value = options[rng.integers(len(options))]
        errors += bool(s.error)
    elapsed = time.perf_counter() - t0
    rss_after = rss_mb()
    growth = rss_after - rss_before
    print(f"{args.moves} scripted moves: {errors} errors, {s.stats['decompositions'] - decompositions} new network "
          f"passes, {elapsed:.1f} s ({1000 * elapsed / args.moves:.1f} ms per move); RSS {rss_before:.0f} -> "
          f"{rss_after:.0f} MiB ({growth:+.1f} MiB) -> {verdict(errors == 0 and growth < 20)} (no growth)")
    peak = peak_mb()
    print(f"peak memory: {peak:.0f} MiB (imports {rss_imports:.0f} MiB, model weights "
          f"{rss_model - rss_imports:.0f} MiB) -> {verdict(peak <= TARGETS['peak_mb'])} "
          f"(<= {TARGETS['peak_mb']:.0f} MiB)")
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
