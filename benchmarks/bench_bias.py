"""Cost of bias_sources (every source at one layer) against decompose for the same class, and of Fig. 3.

    python benchmarks/bench_bias.py                              # CPU, batches 1 and 8, 224 px (64 px: mini zoo)
    python benchmarks/bench_bias.py --device cuda --fig3-images 300

Random weights for the torchvision models (speed does not depend on them; biases and BatchNorm statistics made
non-zero, so that the remainder line means something), the shipped ones for
EfficientNet-Lite0 and the mini zoo. The two calls run alternately, round after round (``timing.py``), and the
ratio is the median of per-round ratios; a table of every ratio closes the run. Target: bias_sources <= 2x
decompose at the same layer and class.
``--fig3-images N`` also times Fig. 3 (``bias_curve``: input + every ReLU, predicted class, batches of
``--fig3-batch``) on N random 224 px images of VGG-19; target on one H100/H200: 300 images in <= 60 s.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from gpu_check import randomise_constants
from timing import interleaved, median_ms, ratio

import pwawidgets as pw
from pwawidgets.bias import bias_sources
from pwawidgets.robustness import bias_curve

LAYERS = {"vgg19": "conv1", "vgg19_bn": "conv1", "resnet101": "layer1.0.relu@0", "efficientnet_lite0": "stem",
          "mini_vgg_fc": "conv1", "mini_vgg_bn": "conv1", "mini_resnet": "stem"}


def bench(name: str, device: torch.device, batch: int, repeats: int) -> float:
    torch.manual_seed(0)
    shipped = name == "efficientnet_lite0" or name in pw.zoo.NAMES
    model = pw.load_model(name, pretrained=shipped, device=device)
    if not shipped:  # torchvision starts biases at 0: give them values, so that the remainder check means something
        randomise_constants(model.cpu()).to(device)
    size = 64 if name in pw.zoo.NAMES else 224
    layer = LAYERS.get(name, "input")
    x = torch.randn(batch, 3, size, size, device=device)
    with torch.no_grad():
        target = model(x).argmax(1)
    sources = bias_sources(model, x, target, layer)
    rows = {
        "decompose (1 class, one layer)": lambda: pw.decompose(model, x, target, [layer]),
        "bias_sources (1 class, all sources)": lambda: bias_sources(model, x, target, layer),
    }
    seconds, _ = interleaved(rows, device, repeats)
    print(f"\n{name}, layer {layer}, batch {batch}, {size} px, {device} ({torch.get_num_threads()} threads), "
          f"{repeats} rounds, {len(sources) - 1} sources, load average {os.getloadavg()[0]:.2f}")
    for label, values in seconds.items():
        print(f"  {label:40s} {median_ms(values):9.1f} ms")
    value = ratio(seconds, "bias_sources (1 class, all sources)", "decompose (1 class, one layer)")
    print(f"  ratio bias_sources / decompose: {value:.3f}   (target <= 2)")
    rest = float(sources.remainder.abs().max() / sources.score.abs().max())
    print(f"  largest |remainder| / |score|: {rest:.1e}")
    return value


def bench_fig3(device: torch.device, images: int, batch: int) -> None:
    torch.manual_seed(0)
    model = pw.load_model("vgg19", pretrained=False, device=device)
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(images, 3, 224, 224, generator=gen)
    bias_curve(model, data[:batch].to(device), batch_size=batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    curve = bias_curve(model, (data[i:i + batch].to(device) for i in range(0, images, batch)))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"\nFig. 3, VGG-19 (random weights), {images} images of 224 px, batch {batch}, {len(curve.layers)} layers, "
          f"{device}: {seconds:.1f} s ({images / seconds:.2f} images/s); 300 images would take "
          f"{300 * seconds / images:.0f} s (target on one H100/H200: <= 60 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mini_vgg_fc", "mini_vgg_bn", "mini_resnet",
                                                         "efficientnet_lite0", "vgg19", "resnet101"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5, help="rounds (each runs both calls once)")
    parser.add_argument("--fig3-images", type=int, default=0, help="also time Fig. 3 on this many images")
    parser.add_argument("--fig3-batch", type=int, default=16)
    args = parser.parse_args()
    device = torch.device(args.device)
    table = {(name, b): bench(name, device, b, args.repeats) for name in args.models for b in args.batch}
    print(f"\nbias_sources / decompose ({device}; median of per-round ratios; target <= 2)")
    print(f"  {'model':20s}" + "".join(f"  batch {b:<4d}" for b in args.batch))
    for name in args.models:
        print(f"  {name:20s}" + "".join(f"  {table[name, b]:10.2f}" for b in args.batch))
    if args.fig3_images:
        bench_fig3(device, args.fig3_images, args.fig3_batch)


if __name__ == "__main__":
    main()
