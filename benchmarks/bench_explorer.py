"""ContributionExplorer on EfficientNet-Lite0 (ImageNet-trained, offline): first explanation, redraws, moves, memory.

    python benchmarks/bench_explorer.py [--model efficientnet_lite0] [--moves 1000] [--threads N]

``--model`` takes any name :func:`pwawidgets.load_model` knows; a torchvision model whose weights are not cached
runs with random weights (labelled so: speed does not depend on the weights, the class names then mean nothing).

What is measured, in one process, in this order:

- the **first explanation**: ``ContributionExplorer(model, "chelsea")`` in a fresh process, i.e. one forward pass,
  one decomposition (input + every preset block, top-5 classes, gradients kept for Grad-CAM) and the first render,
  with every one-time cost (first use of each kernel) included: what a user waits for when the widget opens;
- the next images (same work, warm);
- redraws after a layer-slider move (no network pass: from the cache);
- 1000 scripted moves of random controls: errors, new network passes, memory growth;
- peak memory of the process.

Each figure is printed next to its target with ``ok`` or ``MISSED``. Timings depend on what else runs on the machine:
the load average is printed with them, and the CPU time of the first explanation, which load does not inflate.
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
from pwawidgets.models import has_cached_weights
from pwawidgets.widgets.contribution_explorer import ContributionExplorer

TARGETS = {"first_s": 1.0, "redraw_ms": 50.0, "growth_mb": 20.0, "peak_mb": 1536.0}
IMAGES = ("chelsea", "coffee", "rocket", "camera")


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
    return "ok" if ok else "MISSED"


def load(name: str) -> tuple[torch.nn.Module, str]:
    """The model and how it is labelled: trained weights when they ship or are cached, else random (said so)."""
    if has_cached_weights(name):
        return pw.load_model(name), f"{name} (trained)"
    torch.manual_seed(0)
    return pw.load_model(name, pretrained=False), f"{name} (RANDOM weights: weights not cached)"


def breakdown(model: torch.nn.Module, x: torch.Tensor, layers: list[str], k: int, rounds: int = 3) -> None:
    """Where the time of one explanation goes (warm, median of ``rounds``): forward, forward + k backward passes to
    the input, and the decomposition the explorer runs."""

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        xi = x.clone().requires_grad_(True)
        top = model(xi).topk(k, dim=1).values[0]
        for j in range(k):
            torch.autograd.grad(top[j], xi, retain_graph=j < k - 1)

    def explanation():
        pw.decompose(model, x, f"top{k}", layers, keep_gradients=True)

    out = []
    for what, fn in (("forward", forward), (f"forward + {k} backward", forward_backward),
                     (f"decompose(top{k}, input + blocks)", explanation)):
        fn()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out.append(f"{what} {statistics.median(times):.2f} s")
    print("  breakdown (warm, median of 3): " + "; ".join(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--moves", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 gives CPU times that load inflates least")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    rss_imports = rss_mb()
    t0 = time.perf_counter()
    model, label = load(args.model)
    load_s = time.perf_counter() - t0
    rss_model = rss_mb()
    print(f"model: {label}, loaded in {load_s:.2f} s; memory {rss_imports:.0f} MiB after imports, "
          f"{rss_model:.0f} MiB with the model")

    photos = [data.sample_photo(n) for n in IMAGES]  # read before timing: the explorer's work only
    t0, c0 = time.perf_counter(), time.process_time()
    explorer = ContributionExplorer(model, photos[0], label=label)
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    s = explorer.state
    assert explorer.message == "", explorer.message
    passes = dict(s.stats)
    selector = ", ".join(lab for lab, _ in explorer.controls["target"].options)
    again = []
    for photo in photos[1:]:
        t0 = time.perf_counter()
        explorer.set_image(photo)
        again.append(time.perf_counter() - t0)
    crop = s.preprocess.preprocessing.crop
    print(f"first explanation ({len(s.layers) - 1} blocks + input, top-{s.top_k}, {crop} px; "
          f"{passes['forwards']} forward pass, {passes['decompositions']} decomposition, first render; cold): "
          f"{first:.2f} s -> {verdict(first <= TARGETS['first_s'])} (<= {TARGETS['first_s']:.0f} s)")
    if torch.get_num_threads() == 1:
        print(f"  CPU time of that first explanation: {first_cpu:.2f} s, the wall time it would take with this one "
              f"thread on an idle machine -> {verdict(first_cpu <= TARGETS['first_s'])} "
              f"(<= {TARGETS['first_s']:.0f} s, estimate)")
    else:
        print(f"  CPU time of that first explanation, all threads: {first_cpu:.2f} s (threads waiting for a core may "
              "spin and add to it; --threads 1 gives a cleaner figure)")
    print(f"  next images (same work, warm): {', '.join(f'{t:.2f}' for t in again)} s "
          f"(median {statistics.median(again):.2f} s)")
    print(f"  class selector on {IMAGES[0]}: {selector}")
    breakdown(model, s.inputs, s.layers, s.top_k)

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
              f"{verdict(statistics.median(times) <= TARGETS['redraw_ms'])} (median <= {TARGETS['redraw_ms']:.0f} ms)")

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
          f"{rss_after:.0f} MiB ({growth:+.1f} MiB) -> {verdict(errors == 0 and growth < TARGETS['growth_mb'])} "
          f"(no errors, growth < {TARGETS['growth_mb']:.0f} MiB)")
    t0 = time.perf_counter()
    explorer.show_bias_sources()  # the bias view: one extra pass, then slider moves read its cache
    bias_s, bias_passes = time.perf_counter() - t0, s.stats["bias_passes"]
    times = []
    for i in range(60):
        t0 = time.perf_counter()
        c["layer"].value = layers[i % len(layers)]
        times.append((time.perf_counter() - t0) * 1000)
    print(f"bias view on: {bias_passes} extra pass (bias_sources_at: 1 forward + {s.top_k} backward, every layer) "
          f"{bias_s:.2f} s; layer-slider redraws then median {statistics.median(times):.1f} ms, "
          f"{s.stats['bias_passes'] - bias_passes} new passes")
    peak = peak_mb()
    print(f"peak memory: {peak:.0f} MiB (imports {rss_imports:.0f} MiB, model weights "
          f"{rss_model - rss_imports:.0f} MiB) -> {verdict(peak <= TARGETS['peak_mb'])} "
          f"(<= {TARGETS['peak_mb']:.0f} MiB)")
    explorer.close()
    print(f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
