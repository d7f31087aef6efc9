"""Every course notebook in a fresh kernel: wall time and the kernel's peak memory (RSS), against the targets; then
the memory of two kernels alive at once along the 2-hour path of docs/teaching.md.

    python benchmarks/bench_notebooks.py                       # every notebook, then the two-kernel figures
    python benchmarks/bench_notebooks.py notebooks/04_*.ipynb  # some notebooks only
    python benchmarks/bench_notebooks.py --path                # the two-kernel figures only

Targets (issue: the course on Binder, 2 GB per user): each notebook <= 1.2 GB peak kernel memory here (the CUDA build
of torch; Binder's CPU build imports smaller); the whole course <= 3 min on 2 cores; two kernels alive at once
<= 1.8 GB. Along the path, each notebook runs its Setup cells and the cells the path names, in a fresh kernel, while
the previous notebook's kernel is still alive (as when a learner forgets to shut it down): the figure held to the
target is the sum of the two kernels' peaks, beside the peak of their sum as sampled (the first kernel is idle).
Prints, asserts nothing. Memory is sampled every 50 ms (each kernel with its child processes), so a peak shorter than
that can be missed. 1 MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import nbformat
import psutil
import teaching_path
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 1200
TARGET_PAIR_MB = 1800
TARGET_TOTAL_S = 180
MB = 10**6


def _rss(pid: int) -> int:
    try:
        process = psutil.Process(pid)
        return process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
    except psutil.NoSuchProcess:
        return 0


class Sampler:
    """Samples the memory of the live kernels every 50 ms: each kernel's peak, and the peak of their sum."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.peak: dict[int, int] = {}
        self.together = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            with self._lock:
                sizes = {pid: _rss(pid) for pid in self.pids}
                for pid, size in sizes.items():
                    self.peak[pid] = max(self.peak.get(pid, 0), size)
                if len(sizes) > 1:
                    self.together = max(self.together, sum(sizes.values()))
            time.sleep(0.05)

    def watch(self, pids: list[int]) -> None:
        """Watch these kernels from now on; the peak of their sum starts again."""
        with self._lock:
            self.pids, self.together = list(pids), 0

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def start_kernel(cwd: Path) -> KernelManager:
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(cwd))
    return km


def execute(nb, km: KernelManager, cwd: Path) -> float:
    """Run every cell of ``nb`` in the kernel of ``km`` (left alive); the seconds it took."""
    start = time.perf_counter()
    NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": str(cwd)}}).execute()
    return time.perf_counter() - start


def run(path: Path) -> tuple[float, float]:
    """Seconds and peak MB of one notebook, run top to bottom in a fresh kernel."""
    sampler = Sampler()
    km = start_kernel(path.parent)
    pid = km.provisioner.process.pid
    sampler.watch([pid])
    try:
        seconds = execute(nbformat.read(path, as_version=4), km, path.parent)
    finally:
        sampler.stop()
        km.shutdown_kernel(now=True)
    return seconds, sampler.peak.get(pid, 0) / MB


def course(paths: list[Path]) -> None:
    total = 0.0
    print(f"Each notebook top to bottom in a fresh kernel (targets: <= {TARGET_MB} MB each, "
          f"<= {TARGET_TOTAL_S} s in all)\n")
    print(f"| {'notebook':<32} | {'wall s':>7} | {'peak MB':>8} | {'':<6} |")
    print(f"| {'-' * 32} | {'-' * 6}: | {'-' * 7}: | {'-' * 6} |")
    for path in paths:
        seconds, mb = run(path.resolve())
        total += seconds
        verdict = "ok" if mb <= TARGET_MB else "MISSED"
        print(f"| {path.stem:<32} | {seconds:7.1f} | {mb:8.0f} | {verdict:<6} |", flush=True)
    verdict = "ok" if total <= TARGET_TOTAL_S else "MISSED"
    print(f"| {'course total':<32} | {total:7.1f} | {'':>8} | {verdict:<6} |\n")


def path_pairs() -> None:
    """Each notebook of the 2-hour path on its path cells, while the previous one's kernel is still alive."""
    rows = teaching_path.read_path()
    names = teaching_path.notebook_order(rows)
    cwd = teaching_path.NOTEBOOKS
    print(f"Along the 2-hour path (docs/teaching.md): Setup and path cells only; two kernels alive at once "
          f"(target <= {TARGET_PAIR_MB} MB)\n")
    print(f"| {'kernels alive':<54} | {'path s':>6} | {'peak MB':>7} | {'sum of peaks MB':>15} "
          f"| {'both, sampled MB':>16} | {'':<6} |")
    print(f"| {'-' * 54} | {'-' * 5}: | {'-' * 6}: | {'-' * 14}: | {'-' * 15}: | {'-' * 6} |")
    sampler = Sampler()
    previous: tuple[str, KernelManager, int] | None = None
    try:
        for name in names:
            km = start_kernel(cwd)
            pid = km.provisioner.process.pid
            sampler.watch([pid] + ([previous[2]] if previous else []))
            seconds = execute(teaching_path.path_notebook(rows, name)[0], km, cwd)
            mine = sampler.peak.get(pid, 0) / MB
            if previous is None:
                print(f"| {name + ' alone':<54} | {seconds:6.1f} | {mine:7.0f} | {'':>15} | {'':>16} | {'':<6} |",
                      flush=True)
            else:
                peaks = mine + sampler.peak.get(previous[2], 0) / MB
                verdict = "ok" if peaks <= TARGET_PAIR_MB else "MISSED"
                print(f"| {previous[0] + ' (idle) + ' + name:<54} | {seconds:6.1f} | {mine:7.0f} | {peaks:15.0f} "
                      f"| {sampler.together / MB:16.0f} | {verdict:<6} |", flush=True)
                previous[1].shutdown_kernel(now=True)
            previous = (name, km, pid)
    finally:
        sampler.stop()
        if previous is not None:
            previous[1].shutdown_kernel(now=True)
    print("\nThe path shuts each kernel down before the next notebook opens; these pairs are what a learner who "
          "forgets it holds.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook, 08 included if present")
    parser.add_argument("--path", action="store_true", help="only the two-kernel figures along the 2-hour path")
    args = parser.parse_args()
    if not args.path:
        course(args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb")))
    if args.path or not args.notebooks:
        path_pairs()


if __name__ == "__main__":
    main()
