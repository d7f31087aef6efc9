"""``build``: the course as a static HTML site (Sphinx + MyST-NB, the Furo theme), offline.

Every notebook is executed by MyST-NB with its cache (``nb_execution_mode="cache"``: a notebook runs again when its
code cells change, and every notebook when the library's code changes); an error in a cell stops the build with a
:class:`SiteBuildError` naming the notebook and the cell. The cache folder also keeps Sphinx's sources and doctrees,
so that a second build rereads only what changed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from .sources import stage

REPO = Path(__file__).resolve().parents[2]
CELL_BLOCK = re.compile(r"following cell:\n-+\n(.*?)\n-+\n", re.S)


class SiteBuildError(RuntimeError):
    """The site could not be built; the message is one line (which notebook and cell, or which argument)."""


@dataclass(frozen=True)
class SiteReport:
    """What a build made: the landing page, the notebooks executed and read from the cache, seconds, bytes, and
    (``raise_on_error=False``) one line per notebook that failed, keyed by its file name."""

    index: Path
    notebooks: int
    executed: int
    cached: int
    seconds: float
    size_bytes: int
    widgets_embedded: bool
    explorer: bool
    failures: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        widgets = "saved widget state drawn" if self.widgets_embedded else (
            "widget state not drawn: bash pwawidgets/site/js/install.sh brings the widget manager")
        explorer = "with the static explorer" if self.explorer else "without the static explorer"
        failed = "".join(f"\nfailed: {line}" for line in self.failures.values())
        unchanged = self.notebooks - self.executed - self.cached
        return (f"site built in {self.seconds:.0f} s: {self.notebooks} notebooks, {self.executed} executed, "
                f"{self.cached} from the execution cache, {unchanged} unchanged since the last build; "
                f"{self.size_bytes / 2**20:.1f} MB, {explorer}; {widgets}; open {self.index}{failed}")


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/pwawidgets/site`` (``~/.cache/pwawidgets/site``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pwawidgets" / "site"


def fingerprint(with_site: bool) -> str:
    """A hash of the package's files: all of them, or those the notebooks run (everything but ``site/``)."""
    digest = hashlib.sha256()
    package = REPO / "pwawidgets"
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and (
                with_site or path.relative_to(package).parts[0] != "site"):
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def refresh_cache(cache: Path) -> None:
    """Drop the executed notebooks when the library changed since they were run (the execution cache knows only
    the notebooks' code: a figure drawn by older library code would be stale), and Sphinx's state when the package
    changed at all (this builder and its extension included)."""
    cache.mkdir(parents=True, exist_ok=True)
    for name, with_site, folders in (("library", False, ("jupyter", "doctrees")), ("package", True, ("doctrees",))):
        stamp, value = cache / f"{name}.sha256", fingerprint(with_site)
        if not stamp.exists() or stamp.read_text() != value:
            for folder in folders:
                shutil.rmtree(cache / folder, ignore_errors=True)
            stamp.write_text(value)


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def sphinx_settings(cache: Path, explorer: bool, widgets: bool, raise_on_error: bool = True) -> dict[str, Any]:
    """The Sphinx configuration (there is no conf.py: the builder passes these as overrides)."""
    return {
        "project": "pwawidgets",
        "author": "the pwawidgets authors",
        "copyright": "the pwawidgets authors (MIT licence)",
        "extensions": ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax",
                       "pwawidgets.site.extension"],
        "html_theme": "furo",
        "html_title": "pwawidgets: the course",
        "html_static_path": ["_site_static"],
        "html_copy_source": False,
        "html_show_sourcelink": False,
        "smartquotes": False,  # the text as written (the course table, quoted titles and code names)
        "mathjax_path": "mathjax/tex-chtml-full.js",
        "myst_enable_extensions": ["dollarmath", "amsmath", "html_image"],
        "myst_heading_anchors": 3,
        "nb_execution_mode": "cache",
        "nb_execution_cache_path": str(cache / "jupyter"),
        "nb_execution_raise_on_error": raise_on_error,
        "nb_execution_show_tb": not raise_on_error,
        "nb_execution_timeout": 900,
        "nb_execution_excludepatterns": [],
        "nb_merge_streams": True,
        "nb_ipywidgets_js": {"widgets/embed.js": {}} if widgets else {},
        "exclude_patterns": ["**/.ipynb_checkpoints", "_site_static", "benchmarks"],
        "suppress_warnings": ["myst.header", "misc.highlighting_failure"],
        "autodoc_member_order": "bysource",
        "autodoc_typehints": "description",
        "pwawidgets_explorer": explorer,
        "pwawidgets_widget_js": widgets,
    }


def failed_cell(notebook: Path, error: BaseException | str) -> str:
    """``cell N of M (id ...)``: the notebook's code cell whose source the error (or its traceback) quotes, as nbclient
    writes it; ``a cell`` when none matches."""
    match = CELL_BLOCK.search(str(error))
    if match and notebook.exists():
        source = match.group(1).strip()
        cells = nbformat.read(notebook, as_version=4).cells
        for number, cell in enumerate(cells, 1):
            if cell.cell_type == "code" and cell.source.strip() == source:
                return f"cell {number} of {len(cells)} (id {cell.get('id', '?')})"
    return "a cell"


def failure_line(notebook: Path, traceback: str) -> str:
    """One line from an execution traceback: ``notebooks/NAME.ipynb, cell N of M (id ...): Error: message``."""
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    return f"notebooks/{notebook.name}, {failed_cell(notebook, traceback)}: {lines[-1] if lines else 'failed'}"


def explain_failure(error: BaseException) -> str:
    """One line for an exception raised by the Sphinx build: the notebook, the cell, and the error."""
    chain, current = [], error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    notebook = next((Path(str(exc)) for exc in chain if type(exc).__name__ == "ExecutionError"), None)
    cell_error = next((exc for exc in chain if hasattr(exc, "ename") and hasattr(exc, "evalue")), None)
    if notebook is None:
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    name = f"notebooks/{notebook.name}"
    if cell_error is not None:
        return f"{name}, {failed_cell(notebook, cell_error)}: {cell_error.ename}: {cell_error.evalue}"
    last = chain[-1]
    text = str(last).strip().splitlines()
    return f"{name}, {failed_cell(notebook, last)}: {type(last).__name__}: {text[-1] if text else ''}"


REQUIRED = {"sphinx": "sphinx", "myst_nb": "myst-nb", "furo": "furo", "mathjax": "django-static-mathjax"}


def check_requirements() -> None:
    """A SiteBuildError naming the missing package (the ``site`` extra) before any work."""
    missing = [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise SiteBuildError(f"{', '.join(missing)} missing: pip install 'pwawidgets[site]'")


def check_explorer(explorer: bool) -> Any:
    """The static explorer's module, imported lazily; a SiteBuildError before any work where it is missing."""
    if not explorer:
        return None
    try:
        return importlib.import_module("pwawidgets.static_explorer")
    except ModuleNotFoundError as exc:
        if exc.name != "pwawidgets.static_explorer":
            raise
        raise SiteBuildError("explorer: pwawidgets.static_explorer is not in this package; build the site "
                             "without it (--no-explorer)") from None


class Tee(io.TextIOBase):
    """Sphinx's messages to the log file, and to the terminal when asked."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def build(out: Path, cache: Path | None = None, *, notebooks: Path | None = None, explorer: bool = True,
          raise_on_error: bool = True, verbose: bool = False) -> SiteReport:
    """Build the site into ``out`` and return its :class:`SiteReport` (``report.index`` is the landing page).

    ``cache`` keeps the executed notebooks and Sphinx's state between builds (default :func:`default_cache`;
    emptied when the library's code changed);
    ``notebooks`` is the folder of ``NN_*.ipynb`` (default: the repository's); ``explorer=False`` builds no
    ``explorer/`` page. A cell that fails raises a :class:`SiteBuildError` naming the notebook and the cell; with
    ``raise_on_error=False`` every notebook is executed and the report's ``failures`` names each that failed (the
    test suite's way: one test per notebook). Sphinx's messages go to ``cache/sphinx.log`` (and to the terminal
    with ``verbose``).
    """
    out, cache = Path(out), Path(cache) if cache is not None else default_cache()
    notebooks = Path(notebooks) if notebooks is not None else REPO / "notebooks"
    if out.exists() and not out.is_dir():
        raise SiteBuildError(f"out: {out} is a file; give a folder (it is created)")
    if not notebooks.is_dir() or not any(notebooks.glob("[0-9][0-9]_*.ipynb")):
        raise SiteBuildError(f"notebooks: no NN_*.ipynb in {notebooks}; build from a clone of the repository")
    check_requirements()
    static_explorer = check_explorer(explorer)
    start = time.perf_counter()
    from sphinx.application import Sphinx
    from sphinx.util.console import nocolor
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    nocolor()

    refresh_cache(cache)
    src = cache / "src"
    try:
        widgets = stage(src, REPO, notebooks, explorer) is not None
    except (ValueError, RuntimeError) as exc:
        raise SiteBuildError(str(exc)) from None
    cache.mkdir(parents=True, exist_ok=True)
    log = open(cache / "sphinx.log", "w", encoding="utf-8")  # noqa: SIM115 - closed in the finally clause
    stream = Tee(log, sys.stdout) if verbose else log
    try:
        with patch_docutils(src), docutils_namespace():
            app = Sphinx(str(src), None, str(out), str(cache / "doctrees"), "html",
                         confoverrides=sphinx_settings(cache, explorer, widgets, raise_on_error), status=stream,
                         warning=stream, parallel=1)
            app.build()
            failed = [(Path(app.env.doc2path(docname)), data["traceback"] or "")
                      for docname, meta in getattr(app.env, "nb_metadata", {}).items()
                      if (data := meta.get("exec_data")) and not data.get("succeeded", True)]
            failures = {path.name: failure_line(path, traceback) for path, traceback in failed}
        if app.statuscode:
            raise SiteBuildError(f"Sphinx stopped with status {app.statuscode}; see {cache / 'sphinx.log'}")
    except SiteBuildError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the build becomes one line naming its cause
        raise SiteBuildError(explain_failure(exc)) from exc
    finally:
        log.close()
    text = (cache / "sphinx.log").read_text(encoding="utf-8")
    if static_explorer is not None:
        static_explorer.build(out / "explorer")
    else:  # an explorer left by an earlier build would be stale and unlinked
        shutil.rmtree(out / "explorer", ignore_errors=True)
    count = len(list(notebooks.glob("[0-9][0-9]_*.ipynb")))
    return SiteReport(index=out / "index.html", notebooks=count, executed=text.count("Executed notebook in"),
                      cached=text.count("Using cached notebook"), seconds=time.perf_counter() - start,
                      size_bytes=folder_size(out), widgets_embedded=widgets, explorer=static_explorer is not None,
                      failures=failures)
