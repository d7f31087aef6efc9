"""Command line: ``python -m pwawidgets fetch|audit|course``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .models import PAPER_MODELS, WeightsUnavailableError, has_cached_weights, load_model, weights_cache_path


def _fetch(names: list[str]) -> int:
    for name in names or list(PAPER_MODELS):
        if has_cached_weights(name):
            print(f"{name}: cached at {weights_cache_path(name)}")
            continue
        try:
            load_model(name, pretrained=True)  # downloads into torchvision's cache
        except WeightsUnavailableError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{name}: downloaded to {weights_cache_path(name)}")
    return 0


def _audit(name: str) -> int:
    from .exactness import audit

    report = audit(load_model(name, pretrained=False))
    print(f"{name}: {report}")
    return 0 if report.ok else 1


def _course() -> int:
    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    start = notebooks / "00_start_here.ipynb"
    if not start.exists():
        print("the course notebooks live in the repository's notebooks/ folder: run this from a clone")
        return 1
    return subprocess.call([sys.executable, "-m", "jupyter", "lab", str(start)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pwawidgets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download pretrained ImageNet weights into torchvision's cache")
    fetch.add_argument("names", nargs="*", help=f"torchvision model names (default: {' '.join(PAPER_MODELS)})")
    check = sub.add_parser("audit", help="list the modules that keep a torchvision model from being piece-wise affine")
    check.add_argument("name")
    sub.add_parser("course", help="open the course in JupyterLab")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        return _fetch(args.names)
    if args.command == "audit":
        return _audit(args.name)
    return _course()
