"""Every course notebook in a fresh kernel: wall time and the kernel's peak memory (RSS), against the targets.

    python benchmarks/bench_notebooks.py                       # all notebooks
    python benchmarks/bench_notebooks.py notebooks/04_*.ipynb  # some

Targets (issue: the course on Binder, 2 GB per user): each notebook <= 1.2 GB peak kernel memory here (the CUDA build
of torch; Binder's CPU build imports smaller); the whole course <= 3 min on 2 cores. Prints, asserts nothing.
The kernel's memory is sampled every 50 ms (with its child processes), so a peak shorter than that can be missed.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import nbformat
import psutil
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 1200
TARGET_TOTAL_S = 180


def _rss(pid: int) -> int:
    try:
        process = psutil.Process(pid)
        return process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
    except psutil.NoSuchProcess:
        return 0


def run(path: Path) -> tuple[float, float]:
    """Seconds and peak MiB of one notebook, run top to bottom in a fresh kernel."""
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(path.parent))
    peak, done = 0, threading.Event()
    pid = km.provisioner.process.pid

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        km.shutdown_kernel(now=True)
    return seconds, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    total = 0.0
    print(f"{'notebook':36s} {'wall s':>8s} {'peak MiB':>9s}")
    for path in paths:
        seconds, mib = run(path.resolve())
        total += seconds
        verdict = "ok" if mib <= TARGET_MB else "MISSED"
        print(f"{path.name:36s} {seconds:8.1f} {mib:9.0f}   [{verdict}] target <= {TARGET_MB} MiB", flush=True)
    verdict = "ok" if total <= TARGET_TOTAL_S else "MISSED"
    print(f"{'total':36s} {total:8.1f}   [{verdict}] target <= {TARGET_TOTAL_S} s")


if __name__ == "__main__":
    main()
