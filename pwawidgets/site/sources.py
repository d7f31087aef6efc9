"""The Sphinx source folder of the site, laid out in the cache folder from the repository as it is now.

``src/notebooks``, ``src/docs`` and ``src/readme.md`` are copies of the repository's (links would take Sphinx
outside its source folder, and the notebooks' links to each other with it); ``src/benchmarks`` is a link, since a
notebook executes in its own folder and a cell may read ``../benchmarks/...``. ``index.md`` (the landing page with
the course table) and ``api/`` are written from the notebooks and the package; ``_site_static`` holds the offline
MathJax and, where found, the widget manager that renders saved widget state. Files are rewritten only when their
text changes, so that Sphinx's incremental build keeps what has not.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from .course import course_entries, course_table

WIDGET_ASSETS = ("embed.js", "embed.js.LICENSE.txt", "*.woff", "*.woff2")
HTML_MANAGER_ENV = "PWAWIDGETS_HTML_MANAGER"
#: where ``bash pwawidgets/site/js/install.sh`` unpacks @jupyter-widgets/html-manager from the npm registry
HTML_MANAGER = Path(__file__).resolve().parent / "js" / "package" / "dist"

API_MODULES = {  # page name: (title, automodule targets)
    "modules": ("Modules of the top-level API", ["pwawidgets.baselines", "pwawidgets.metrics", "pwawidgets.fidelity",
                                                  "pwawidgets.robustness", "pwawidgets.data", "pwawidgets.zoo"]),
    "integrations": ("Integrations", ["pwawidgets.integrations.gradcam", "pwawidgets.integrations.quantus",
                                      "pwawidgets.integrations.quantus_metrics"]),
}


def write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def link(path: Path, target: Path) -> None:
    """``path`` becomes a symbolic link to ``target`` (replacing an older link)."""
    if path.is_symlink() or path.is_file():
        if path.is_symlink() and Path(os.readlink(path)) == target:
            return
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.symlink_to(target, target_is_directory=target.is_dir())


def copy_if_changed(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` (its time kept, so that Sphinx sees an unchanged file as unchanged)."""
    if target.is_symlink():
        target.unlink()
    if not target.exists() or target.read_bytes() != source.read_bytes():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def mirror(source: Path, target: Path, patterns: tuple[str, ...]) -> None:
    """``target`` holds a copy of each file of ``source`` (not its subfolders) that matches one of ``patterns``."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    target.mkdir(parents=True, exist_ok=True)
    wanted = {path.name: path for pattern in patterns for path in source.glob(pattern) if path.is_file()}
    for path in target.iterdir():
        if path.name not in wanted:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for name, path in wanted.items():
        copy_if_changed(path, target / name)


def landing_page(notebooks: Path, explorer: bool, docs: list[str], readme: bool) -> str:
    entries = course_entries(notebooks)
    explorer_line = ('Try the explanations without installing anything: the <a href="explorer/index.html">static '
                     "explorer</a> runs in this browser, with no Python behind it.\n\n" if explorer else "")
    toc = ["notebooks/" + entry.path.stem for entry in entries]
    more = (["readme"] if readme else []) + [f"docs/{name}" for name in docs] + ["api/index"]
    return "\n".join([
        "# pwawidgets: the course",
        "",
        "Exact explanations of ReLU networks: every pixel's signed contribution to a class score, plus the bias no "
        "pixel explains (Chen, Saporta, Dapogny & Cord, ICIP 2019). Each notebook below was executed when this site "
        "was built; its figures are the ones it drew then. The explorers in the notebooks need a running Python "
        "kernel: each notebook page links to Binder to run it.",
        "",
        explorer_line + course_table(entries),
        "",
        "```{toctree}", ":caption: Course", ":maxdepth: 1", ":hidden:", "", *toc, "```",
        "",
        "```{toctree}", ":caption: Documentation", ":maxdepth: 1", "", *more, "```",
        "",
    ])


def api_pages() -> dict[str, str]:
    """``api/*.md``: the public API from its docstrings (``pwawidgets.__all__``, the modules, widgets, integrations)."""
    import pwawidgets

    names = [name for name in pwawidgets.__all__ if not isinstance(getattr(pwawidgets, name), type(pwawidgets))]
    top = ["# `pwawidgets`", "", "```{eval-rst}", ".. module:: pwawidgets", "   :no-index:", ""]
    for name in names:
        obj = getattr(pwawidgets, name)
        directive = "autoclass" if isinstance(obj, type) else "autofunction" if callable(obj) else "autodata"
        top += [f".. {directive}:: pwawidgets.{name}", *(["   :members:"] if directive == "autoclass" else []), ""]
    top.append("```")
    pages = {"api/pwawidgets.md": "\n".join(top) + "\n"}
    widgets = ["# Widgets", "", "```{eval-rst}", ".. automodule:: pwawidgets.widgets", "",
               ".. autoclass:: pwawidgets.widgets.ContributionExplorer", "   :members:", "",
               ".. autoclass:: pwawidgets.widgets.RegionExplorer", "   :members:", "```"]
    pages["api/widgets.md"] = "\n".join(widgets) + "\n"
    for page, (title, modules) in API_MODULES.items():
        body = [f"# {title}", "", "```{eval-rst}"]
        for module in modules:
            body += [f".. automodule:: {module}", "   :members:", ""]
        pages[f"api/{page}.md"] = "\n".join([*body, "```"]) + "\n"
    index = ["# API reference", "", "From the docstrings of the installed package.", "", "```{toctree}",
             ":maxdepth: 2", "", "pwawidgets", "widgets", *API_MODULES, "```"]
    pages["api/index.md"] = "\n".join(index) + "\n"
    return pages


def mathjax_dir() -> Path:
    """MathJax 3's ``es5`` folder, from the pip package ``django-static-mathjax`` (no CDN)."""
    spec = importlib.util.find_spec("mathjax")
    folder = Path(spec.origin).parent / "static" / "mathjax" / "es5" if spec and spec.origin else None
    if folder is None or not (folder / "tex-chtml-full.js").exists():
        raise RuntimeError("MathJax for the site comes from the pip package django-static-mathjax: "
                           "pip install 'pwawidgets[site]'")
    return folder


def html_manager_dir() -> Path | None:
    """The ``dist`` folder of @jupyter-widgets/html-manager, which renders saved widget state; None when absent.

    Looked for in ``$PWAWIDGETS_HTML_MANAGER``, then where ``bash pwawidgets/site/js/install.sh`` puts it (as
    ``.ci/run`` does).
    """
    candidates = [Path(os.environ[HTML_MANAGER_ENV])] if os.environ.get(HTML_MANAGER_ENV) else []
    candidates.append(HTML_MANAGER)
    return next((folder for folder in candidates if (folder / "embed.js").exists()), None)


def copy_static(static: Path, widgets: Path | None) -> None:
    """MathJax (one combined script and its fonts) and the widget manager into the site's static folder."""
    mathjax = mathjax_dir()
    target = static / "mathjax"
    if not (target / "tex-chtml-full.js").exists():
        (target / "output" / "chtml").mkdir(parents=True, exist_ok=True)
        shutil.copy2(mathjax / "tex-chtml-full.js", target)
        shutil.copytree(mathjax / "output" / "chtml" / "fonts" / "woff-v2",
                        target / "output" / "chtml" / "fonts" / "woff-v2", dirs_exist_ok=True)
    if widgets is None:
        shutil.rmtree(static / "widgets", ignore_errors=True)
        return
    (static / "widgets").mkdir(parents=True, exist_ok=True)
    for pattern in WIDGET_ASSETS:
        for path in widgets.glob(pattern):
            shutil.copy2(path, static / "widgets" / path.name)


def stage(src: Path, repo: Path, notebooks: Path, explorer: bool) -> Path | None:
    """Lay out the Sphinx sources in ``src``; returns the widget manager's folder (None: not found)."""
    src.mkdir(parents=True, exist_ok=True)
    mirror(notebooks, src / "notebooks", ("*.ipynb",))
    if (repo / "benchmarks").is_dir():
        link(src / "benchmarks", (repo / "benchmarks").resolve())
    docs_dir = repo / "docs"
    docs = sorted(path.stem for path in docs_dir.glob("*.md")) if docs_dir.is_dir() else []
    if docs:
        mirror(docs_dir, src / "docs", ("*.md", "*.png", "*.jpg", "*.svg", "*.gif"))
    readme = (repo / "README.md").exists()
    if readme:
        copy_if_changed(repo / "README.md", src / "readme.md")
    write_if_changed(src / "index.md", landing_page(notebooks, explorer, docs, readme))
    for name, text in api_pages().items():
        write_if_changed(src / name, text)
    widgets = html_manager_dir()
    copy_static(src / "_site_static", widgets)
    return widgets
