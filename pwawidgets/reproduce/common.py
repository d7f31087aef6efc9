"""What the experiments of ``reproduce`` share: usage errors, the device, the output folder, CSV files."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch


class UsageError(ValueError):
    """A bad argument: reported as one line, exit status 2."""


def pick_device(name: str | None) -> torch.device:
    """``--device``: the GPU when present and none is named; a clear error for a device this machine lacks."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: no usable Apple GPU here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: use cpu, cuda, cuda:N or mps")
    return device


def output_folder(path: str | Path) -> Path:
    """``--out``, created (with its parents) and checked writable before any work starts."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file of that name exists; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".pwawidgets-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc}); give a folder you can write to") \
            from exc
    return out


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Rows of dicts (the first row's keys are the columns) as a CSV file."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
