"""``python -m pwawidgets.zoo train [--only NAME] [--epochs N]``: retrain the mini zoo, rewrite weights."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from . import NAMES, WEIGHTS_DIR


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pwawidgets.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the mini zoo deterministically and write weights + cards")
    p.add_argument("--only", choices=NAMES, action="append", help="train only this net (repeatable)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder (default: the package's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)

    from .train import RECIPES, train_many

    start = time.perf_counter()
    names = list(args.only or NAMES)
    recipes = {n: RECIPES[n] if args.epochs is None else dataclasses.replace(RECIPES[n], epochs=args.epochs)
               for n in names}
    cards = train_many(names, recipes, out_dir=args.out, progress=not args.no_progress)
    for name, card in cards.items():
        print(
            f"{name}: test accuracy {card['test_accuracy']:.2%} (seed {card['data']['test_seed']}, "
            f"{card['data']['test_images']} images), {card['parameters']} parameters, "
            f"{card['train_time_s']:.0f} s, {card['file_bytes'] / 2**20:.2f} MiB",
            flush=True,
        )
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
