"""Exactness on a CUDA GPU, where TF32 is on by default for convolutions; then the whole course on that GPU.

    python benchmarks/gpu_check.py                    # [1]-[5] on CUDA; on a machine without one, says it skipped
    python benchmarks/gpu_check.py cpu 64 vgg11       # [1]-[4] on another device, input size, networks
    python benchmarks/gpu_check.py --course           # [5] only
    python benchmarks/gpu_check.py --course --dry-run # [5]: the card and the command, without running it

1. float64 on CUDA equals float64 on CPU (VGG-19, ResNet-101, random weights, all block layers).
2. float32 on CUDA with the caller's TF32 left on: the decomposition turns TF32 off for its own work and puts
   the caller's flags back; its contributions match the float64 reference far better than the same
   computation run with TF32 on.
3. The local affine prediction (verify) in float32 with TF32 on and off.
4. The sources of the bias (bias_sources) on CUDA: in float64 they sum to decompose's bias and equal the CPU's;
   in float32 with the caller's TF32 on, how far their sum is from the float64 bias.
5. The course: every notebook through nbval (``python -m pytest --nbval-lax notebooks/``) in a subprocess, on the GPU
   each notebook's Setup picks (``pw.best_device()``), with the card's name and the wall time. Skipped, and said so,
   where there is no CUDA GPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

import pwawidgets as pw
from pwawidgets.bias import REMAINDER
from pwawidgets.layers import resolve_one, substitute

ROOT = Path(__file__).resolve().parent.parent


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm())


def set_tf32(on: bool) -> None:
    value = "tf32" if on else "ieee"
    torch.backends.cuda.matmul.fp32_precision = value
    torch.backends.cudnn.conv.fp32_precision = value


def unguarded_contributions(model, x, target, layer):
    """The same gradient x activation, computed without the engine's TF32 guard (the caller's flags)."""
    saved = {}
    with substitute(model, resolve_one(model, layer), lambda out: saved.setdefault("h", out) * 1):
        logits = model(x.requires_grad_(False))
    h = saved["h"]
    score = logits.gather(1, target[:, None]).sum()
    grad = torch.autograd.grad(score, h)[0]
    return grad * h


def main(device: str = "cuda", size: int = 224, names: tuple[str, ...] = ("vgg19", "resnet101")) -> None:
    if device == "cuda":
        assert torch.cuda.is_available(), "needs a CUDA GPU"
        print(torch.cuda.get_device_name(), "torch", torch.__version__)
    for name in names:
        torch.manual_seed(0)
        cpu = pw.load_model(name, pretrained=False).double()
        gpu = pw.load_model(name, pretrained=False).double().to(device)
        gpu.load_state_dict(cpu.state_dict())
        x = torch.randn(2, 3, size, size, dtype=torch.float64)
        target = torch.tensor([3, 500])
        ref = pw.decompose(cpu, x, target, ["input", "blocks"])
        got = pw.decompose(gpu, x.to(device), target.to(device), ["input", "blocks"])
        worst = max(rel(got.contributions[k], ref.contributions[k]) for k in ref.layers)
        print(f"[1] {name}: float64 CUDA vs CPU, worst relative difference over layers {worst:.2e}")

        gpu32 = gpu.float()
        set_tf32(True)
        d32 = pw.decompose(gpu32, x.float().to(device), target.to(device), ["blocks"])
        flags = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
        print(f"[2] {name}: caller's TF32 flags after decompose: {flags} (expected ('tf32', 'tf32'))")
        for layer in ("conv1", "conv4") if "vgg" in name else ("stem", "layer2"):
            guarded = rel(d32.contributions[layer], ref.contributions[layer])
            set_tf32(True)
            tf32 = rel(unguarded_contributions(gpu32, x.float().to(device), target.to(device), layer).detach(),
                       ref.contributions[layer])
            print(f"    {layer}: float32 contributions vs float64: TF32 off (engine) {guarded:.2e}, "
                  f"TF32 on {tf32:.2e}")

        for on in (True, False):
            set_tf32(on)
            # verify() runs its model under the engine's guard; emulate a caller without it by
            # checking the raw forward with TF32 as set
            xf = x[:1].float().to(device)
            direction = torch.randn(xf.shape, generator=torch.Generator().manual_seed(1)).to(device)
            radius = float(pw.region_radius(gpu32, xf, direction)[0])
            dec = pw.decompose(gpu32, xf, int(target[0]), keep_gradients=True)
            slope = float((dec.gradients["input"] * direction).sum())
            with torch.no_grad():
                base = gpu32(xf)[0, int(target[0])]
                step = gpu32(xf + 0.5 * radius * direction)[0, int(target[0])]
            predicted = 0.5 * radius * slope
            err = abs(float(step - base) - predicted) / abs(predicted)
            print(f"[3] {name}: float32 forward with TF32 {'on ' if on else 'off'}: step 0.5 x radius "
                  f"({radius:.2e}), relative error of the affine prediction {err:.2e}")
        set_tf32(True)
        report = pw.verify(gpu, x[:1].to(device), int(target[0]))
        print(f"[3] {name}: verify float64 on CUDA: {str(report).splitlines()[0]}")
        bias_check(cpu, gpu, x, target, device, "conv1" if "vgg" in name else "stem")
        del cpu, gpu, gpu32
        if device == "cuda":
            torch.cuda.empty_cache()


def randomise_constants(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero biases and BatchNorm statistics (torchvision initialises biases to 0, which would make every part
    of the bias 0 and the check empty)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=gen))
    return model


def bias_check(cpu, gpu, x, target, device: str, layer: str) -> None:
    cpu = randomise_constants(cpu)
    gpu = copy.deepcopy(cpu).to(device)  # the float64 weights of the CPU model, not ones rounded to float32
    on_cpu = pw.bias_sources(cpu, x, target, layer)
    on_gpu = pw.bias_sources(gpu, x.to(device), target.to(device), layer)
    bias = pw.decompose(gpu, x.to(device), target.to(device), [layer]).bias[layer]
    parts = torch.stack([on_gpu[name] for name in on_gpu if name != REMAINDER]).sum(0)  # the remainder left out
    scale = float(bias.abs().max() + on_gpu.score.abs().max())
    worst = max(float((on_gpu[n].cpu() - on_cpu[n]).abs().max()) for n in on_cpu) / scale
    print(f"[4] bias_sources at {layer}, float64 CUDA (errors relative to |bias| + |score|): sum of "
          f"{len(on_gpu) - 1} attributed parts - bias {float((parts - bias).abs().max()) / scale:.1e}; largest "
          f"CUDA - CPU part {worst:.1e}")
    set_tf32(True)
    f32 = pw.bias_sources(gpu.float(), x.float().to(device), target.to(device), layer)
    total = torch.stack([f32[name] for name in f32 if name != REMAINDER]).sum(0).double()
    print(f"    float32 with the caller's TF32 on: sum of parts - float64 bias "
          f"{float((total - bias).abs().max()) / scale:.1e}")


def course_command(notebooks: Path = ROOT / "notebooks") -> list[str]:
    """The nbval run of every notebook, with this interpreter, as the test suite runs them (``--nbval-lax``)."""
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--nbval-lax",
            "--nbval-current-env", str(notebooks)]


def course_on_gpu(dry_run: bool = False) -> int | None:
    """[5] The whole course through nbval on the CUDA GPU: its exit status, or None where skipped or a dry run."""
    command = course_command()
    if not torch.cuda.is_available():
        print(f"[5] the course through nbval: skipped, no CUDA GPU on this machine ({shlex.join(command)})")
        return None
    card = torch.cuda.get_device_name()
    print(f"[5] the course through nbval on {card}: {shlex.join(command)}", flush=True)
    if dry_run:
        print("    dry run: not started")
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    status = subprocess.run(command, cwd=ROOT, env=env).returncode
    outcome = "passed" if status == 0 else f"FAILED (exit status {status})"
    print(f"[5] the course through nbval on {card}: {outcome} in {time.perf_counter() - start:.0f} s")
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("device", nargs="?", default="cuda", help="checks [1]-[4] run on it (default cuda)")
    parser.add_argument("size", nargs="?", type=int, default=224, help="input size of [1]-[4]")
    parser.add_argument("names", nargs="*", default=["vgg19", "resnet101"], help="networks of [1]-[4]")
    parser.add_argument("--course", action="store_true", help="only [5], the course through nbval")
    parser.add_argument("--dry-run", action="store_true", help="[5]: print the card and the command, run nothing")
    args = parser.parse_args()
    if not args.course:
        if args.device == "cuda" and not torch.cuda.is_available():
            print("[1]-[4] skipped: no CUDA GPU on this machine")
        else:
            main(args.device, args.size, tuple(args.names))
    status = course_on_gpu(args.dry_run)
    sys.exit(status or 0)
