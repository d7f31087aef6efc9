"""Cost of the exact decomposition against plain forward/backward and Captum, measured in one run.

    python benchmarks/bench_decompose.py                 # CPU, VGG-19 and ResNet-101, 224 px, batch 1
    python benchmarks/bench_decompose.py --device cuda --batch 16

Random weights (speed does not depend on them). Prints median seconds per call and the ratios the project
targets: ours (all block layers + input, 1 class) <= 1.05x forward+backward; ours (top-5) <= 1.05x
(forward + 5 backward), i.e. well ahead of calling Captum once per class. On CUDA, TF32 is off for every
method (the decomposition turns it off for its own work; the others run under the same flags so the
comparison is fair), and images/s and peak memory are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from captum.attr import LayerGradCam, LayerGradientXActivation

import pwawidgets as pw


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn`` and its peak CUDA memory in MiB (0 on CPU), after one warm-up call."""
    fn()
    times, peak = [], 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = max(peak, torch.cuda.max_memory_allocated() / 2**20)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak


def bench(name: str, device: torch.device, batch: int, size: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = pw.load_model(name, pretrained=False, device=device)
    blocks = pw.layer_presets(model)["blocks"]
    modules = dict(model.named_modules())
    layer_modules = [modules[m] for m in blocks.values()]
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        top5 = model(x).topk(5, dim=1).indices
    top1 = top5[:, 0]

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward(k: int = 1):
        def run():
            xi = x.clone().requires_grad_(True)
            logits = model(xi)
            for j in range(k):
                torch.autograd.grad(logits.gather(1, top5[:, j : j + 1]).sum(), xi, retain_graph=j < k - 1)
        return run

    lgxa = LayerGradientXActivation(model, layer_modules)
    gradcams = [LayerGradCam(model, m) for m in layer_modules]
    rows: dict[str, Callable[[], object]] = {
        "forward": forward,
        "forward+backward": forward_backward(1),
        "forward+5 backward": forward_backward(5),
        "ours: blocks+input, 1 class": lambda: pw.decompose(model, x, top1, ["input", "blocks"]),
        "ours: blocks+input, top-5": lambda: pw.decompose(model, x, "top5", ["input", "blocks"]),
        "ours: blocks, 1 class": lambda: pw.decompose(model, x, top1, ["blocks"]),
        "Captum LayerGradientXActivation, 1 class": lambda: lgxa.attribute(x, target=top1),
        "Captum LayerGradientXActivation x5 calls": lambda: [lgxa.attribute(x, target=top5[:, j]) for j in range(5)],
        "Captum LayerGradCam looped over layers": lambda: [g.attribute(x, target=top1) for g in gradcams],
    }
    with pw.exact_math():
        results = {label: timed(fn, device, repeats) for label, fn in rows.items()}
    print(f"\n{name}, batch {batch}, {size} px, {device} ({torch.get_num_threads()} threads)")
    for label, (seconds, peak) in results.items():
        extra = f", {batch / seconds:7.1f} images/s, peak {peak:7.0f} MiB" if device.type == "cuda" else ""
        print(f"  {label:44s} {seconds * 1000:9.1f} ms{extra}")
    t = {k: v[0] for k, v in results.items()}
    print("  ratios:")
    for label, num, den, target in (
        ("ours 1 class / (forward+backward)", "ours: blocks+input, 1 class", "forward+backward", "<= 1.05"),
        ("ours top-5 / (forward + 5 backward)", "ours: blocks+input, top-5", "forward+5 backward", "<= 1.05"),
        ("Captum x5 calls / ours top-5", "Captum LayerGradientXActivation x5 calls", "ours: blocks+input, top-5",
         ">= 1.6"),
        ("Captum LGxA 1 class / ours blocks 1 class", "Captum LayerGradientXActivation, 1 class",
         "ours: blocks, 1 class", ""),
        ("Captum GradCAM loop / ours 1 class", "Captum LayerGradCam looped over layers",
         "ours: blocks+input, 1 class", ""),
    ):
        print(f"    {label:44s} {t[num] / t[den]:6.3f}" + (f"   (target {target})" if target else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vgg19", "resnet101"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    for name in args.models:
        bench(name, device, args.batch, args.size, args.repeats)


if __name__ == "__main__":
    main()
