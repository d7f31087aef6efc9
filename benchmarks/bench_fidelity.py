"""Throughput of the batched fidelity experiment (pwawidgets.fidelity.evaluate), measured in one run.

    python benchmarks/bench_fidelity.py                                          # CPU: EfficientNet-Lite0, 16 images
    python benchmarks/bench_fidelity.py --device cuda --model vgg19 --images 100 # the GPU target

The paper's setting: ours and Grad-CAM at one layer (conv4 on VGG-19, stage3 on EfficientNet-Lite0), keep 30 %,
top-5, one decomposition pass per batch and the masked copies stacked into forward passes. Pretrained weights where
they are cached, random ones otherwise (speed does not depend on them); random 224 px images already on the device,
so image decoding is not timed. Prints the wall time of the whole experiment and images/s (target on an H100/H200:
100 images x 2 methods x 1 layer on VGG-19 in <= 10 s), then batched against one image at a time and against
masked images left channels first (every candidate once per round, in rotating order, median of per-round ratios:
see timing.py).
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import interleaved, median_ms, ratio

import pwawidgets as pw
from pwawidgets import fidelity as fd
from pwawidgets.models import has_cached_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=None, help="images per decomposition (default 8 CPU, 50 GPU)")
    parser.add_argument("--chunk", type=int, default=None, help="masked images per forward (default 16 CPU, 200 GPU)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch, chunk = args.batch or (50 if gpu else 8), args.chunk or (200 if gpu else 16)
    cached = has_cached_weights(args.model)
    torch.manual_seed(0)
    model = pw.load_model(args.model, pretrained=cached, device=device)
    layer = fd.paper_layer(model, args.size)
    images = torch.randn(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device)
    methods = ("ours", "gradcam")

    def experiment(batch_size: int, chunk_size: int):
        def run():
            return fd.evaluate(model, fd.batches(images, batch_size), methods, [layer], (fd.PAPER_KEEP,),
                               chunk=chunk_size, progress=False)
        return run

    print(f"{args.model} ({'pretrained' if cached else 'random weights'}), layer {layer}, {args.images} images at "
          f"{args.size} px, methods {' + '.join(methods)}, keep {fd.PAPER_KEEP}, on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if gpu else f" ({torch.get_num_threads()} threads)"))
    experiment(batch, chunk)()  # warm-up: kernels, allocator, oneDNN primitives
    if gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = experiment(batch, chunk)()
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"  whole experiment: {seconds:.2f} s, {args.images / seconds:.1f} images/s "
          f"(batch {batch}, chunk {chunk}); {args.images * (1 + len(methods))} forward + {args.images} backward "
          "image passes")
    if gpu:
        print(f"  target: 100 images x 2 methods x 1 layer on VGG-19 in <= 10 s (H100/H200): "
              f"{'met' if args.images >= 100 and seconds <= 10 else 'see above'}")
    scores = ", ".join(f"{r['method']} {r['mean']:.2f}" for r in result.table())
    print(f"  (top-5 intersection on random images, a sanity check only: {scores})")

    def channels_first(run):  # the masked images left in PyTorch's default order, for comparison
        def call():
            fd.channels_last, kept = (lambda x: x), fd.channels_last
            try:
                return run()
            finally:
                fd.channels_last = kept
        return call

    rows = {"batched": experiment(batch, chunk), "one image at a time": experiment(1, 1),
            "batched, channels first": channels_first(experiment(batch, chunk))}
    secs, peak = interleaved(rows, device, args.rounds)
    print(f"  {args.rounds} interleaved rounds:")
    for label, values in secs.items():
        extra = f", peak {peak[label]:.0f} MiB" if gpu else ""
        print(f"    {label:>20}: {median_ms(values) / 1000:7.2f} s, "
              f"{args.images * 1000 / median_ms(values):7.1f} images/s{extra}")
    print(f"    one at a time / batched: {ratio(secs, 'one image at a time', 'batched'):.2f}x")
    print(f"    channels first / channels last (pwawidgets.placement.channels_last, CPU only): "
          f"{ratio(secs, 'batched, channels first', 'batched'):.2f}x")


if __name__ == "__main__":
    main()
