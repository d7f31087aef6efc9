"""Cost of the exact decomposition against plain forward/backward and Captum, measured in one run.

    python benchmarks/bench_decompose.py                 # CPU, VGG-19 and ResNet-101, 224 px, batch 1
    python benchmarks/bench_decompose.py --device cuda --batch 16

Random weights (speed does not depend on them). Every candidate runs once per round, in rotating order, and each
ratio is the median of per-round ratios (see ``timing.py``), so machine noise does not enter it. The targets:
ours (all block layers + input, 1 class) <= 1.05x forward+backward; ours (top-5) <= 1.05x
(forward + 5 backward), i.e. well ahead of calling Captum once per class. Our Captum class
(``pwawidgets.integrations.captum.LayerPiecewiseAffine``) against Captum's ``LayerGradientXActivation`` on the same
layer and targets: one layer, one class <= 1.05x; five layers in one call >= 1.5x faster than five Captum calls
(``--models efficientnet_lite0`` on the CPU measures it on a real network). On CUDA, TF32 is off for every method
(the decomposition turns it off for its own work; the others run under the same flags so the comparison is fair),
and images/s and peak memory are printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from captum.attr import LayerGradCam, LayerGradientXActivation
from timing import interleaved, median_ms, ratio

import pwawidgets as pw
from pwawidgets.integrations.captum import LayerPiecewiseAffine


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
    five = layer_modules[-5:]  # the last five blocks (fewer on a network with fewer blocks)
    ours_one, ours_five = LayerPiecewiseAffine(model, five[-1]), LayerPiecewiseAffine(model, five)
    theirs_one = LayerGradientXActivation(model, five[-1])
    theirs_each = [LayerGradientXActivation(model, m) for m in five]
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
        "our Captum class, 1 layer, 1 class": lambda: ours_one.attribute(x, target=top1),
        "Captum LGxA, same layer, 1 class": lambda: theirs_one.attribute(x, target=top1),
        f"our Captum class, {len(five)} layers, 1 call": lambda: ours_five.attribute(x, target=top1),
        f"Captum LGxA, {len(five)} calls (1 per layer)": lambda: [m.attribute(x, target=top1) for m in theirs_each],
    }
    with pw.exact_math():
        seconds, peak = interleaved(rows, device, repeats)
    print(f"\n{name}, batch {batch}, {size} px, {device} ({torch.get_num_threads()} threads), {repeats} rounds")
    for label, values in seconds.items():
        ms = median_ms(values)
        extra = f", {batch * 1000 / ms:7.1f} images/s, peak {peak[label]:7.0f} MiB" if device.type == "cuda" else ""
        print(f"  {label:44s} {ms:9.1f} ms{extra}")
    print("  ratios (median of per-round ratios):")
    for label, num, den, target in (
        ("ours 1 class / (forward+backward)", "ours: blocks+input, 1 class", "forward+backward", "<= 1.05"),
        ("ours top-5 / (forward + 5 backward)", "ours: blocks+input, top-5", "forward+5 backward", "<= 1.05"),
        ("Captum x5 calls / ours top-5", "Captum LayerGradientXActivation x5 calls", "ours: blocks+input, top-5",
         ">= 1.6"),
        ("Captum LGxA 1 class / ours blocks 1 class", "Captum LayerGradientXActivation, 1 class",
         "ours: blocks, 1 class", ""),
        ("Captum GradCAM loop / ours 1 class", "Captum LayerGradCam looped over layers",
         "ours: blocks+input, 1 class", ""),
        ("our Captum class / Captum LGxA, 1 layer", "our Captum class, 1 layer, 1 class",
         "Captum LGxA, same layer, 1 class", "<= 1.05"),
        (f"Captum LGxA x{len(five)} calls / our class, 1 call", f"Captum LGxA, {len(five)} calls (1 per layer)",
         f"our Captum class, {len(five)} layers, 1 call", ">= 1.5"),
    ):
        print(f"    {label:44s} {ratio(seconds, num, den):6.3f}" + (f"   (target {target})" if target else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["efficientnet_lite0", "vgg19", "resnet101"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each runs every candidate once)")
    args = parser.parse_args()
    device = torch.device(args.device)
    for name in args.models:
        bench(name, device, args.batch, args.size, args.repeats)


if __name__ == "__main__":
    main()
