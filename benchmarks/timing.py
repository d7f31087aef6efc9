"""Interleaved timing: the things compared run alternately, round after round, so that a ratio is not machine noise.

On a shared machine, load drifts over seconds: timing A five times then B five times puts that drift into A/B.
Here every round runs each candidate once, in an order rotated from round to round; a ratio is taken within each
round and the median over rounds is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(rows: dict[str, Callable[[], object]], device: torch.device, rounds: int
                ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds of every call per round ``{label: [s, ...]}`` and peak CUDA memory in MiB (0 on CPU).

    One warm-up call of each first; then ``rounds`` rounds, each running every row once."""
    labels = list(rows)
    for label in labels:
        rows[label]()
    seconds = {label: [] for label in labels}
    peak = {label: 0.0 for label in labels}
    for r in range(rounds):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            rows[label]()
            _sync(device)
            seconds[label].append(time.perf_counter() - start)
            if device.type == "cuda":
                peak[label] = max(peak[label], torch.cuda.max_memory_allocated() / 2**20)
    return seconds, peak


def ratio(seconds: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of the per-round ratio ``numerator / denominator``."""
    return statistics.median(a / b for a, b in zip(seconds[numerator], seconds[denominator], strict=True))


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)
