"""``python -m pwawidgets reproduce fig2|fidelity|fig3``: the paper's figures and table from the command line.

Each experiment is one module here with ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``
(the exit status: 0 done, 1 the experiment could not run, 2 a usage error, printed as one line). The computing
lives in the library (:mod:`pwawidgets.fidelity`, :mod:`pwawidgets.bias`); these modules read arguments, load the
model and data, call the library and write CSV files and figures.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

EXPERIMENTS: tuple[str, ...] = ("fig2", "fidelity", "fig3")


def experiment(name: str) -> ModuleType:
    """The module of one experiment."""
    return importlib.import_module(f"{__name__}.{name}")


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    """Register ``reproduce`` and one sub-subcommand per experiment that exists."""
    parser = sub.add_parser("reproduce", help="reproduce the paper's figures and fidelity table")
    experiments = parser.add_subparsers(dest="experiment", required=True, metavar="{" + ",".join(EXPERIMENTS) + "}")
    for name in EXPERIMENTS:
        try:
            module = experiment(name)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        child = experiments.add_parser(name, help=module.HELP, description=module.__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(child)
        child.set_defaults(run=module.run)
