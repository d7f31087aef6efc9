"""The course site (``python -m pwawidgets site``): built once per session from the real course with a fresh
execution cache. That build executes every notebook, so it is also the notebook test: ``test_notebook_runs`` fails
per notebook, naming the cell (nbval no longer collects ``notebooks/`` by default; ``--nbval-lax`` only checked
that each cell runs, as this execution does).
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

pytest.importorskip("sphinx", reason="the site needs pip install 'pwawidgets[site]'")
pytest.importorskip("myst_nb", reason="the site needs pip install 'pwawidgets[site]'")

from pwawidgets import cli  # noqa: E402
from pwawidgets.site import SiteBuildError, build  # noqa: E402
from pwawidgets.site.course import course_entries, read_entry  # noqa: E402
from pwawidgets.site.extension import needs_python  # noqa: E402
from pwawidgets.site.sources import html_manager_dir  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:The mapping interface for autodoc options"),  # napoleon
              pytest.mark.filterwarnings("ignore:.*MystReferenceResolver.app. is deprecated")]  # MyST 5.2

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SIZE_BUDGET = 40 * 2**20
HAS_EXPLORER = importlib.util.find_spec("pwawidgets.static_explorer") is not None
REMOTE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=["'](?:https?:)?//""", re.I)
CSS_REMOTE = re.compile(r"""@import\s+(?:url\()?["']?(?:https?:)?//|url\(["']?(?:https?:)?//""", re.I)

TITLE = "# 01 · A notebook that fails\n\n**Objectives.** By the end you can\n\n1. see a failure named;\n\n" \
        "**Time:** 5 min core · 0 min bonus"


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The real course's site, built once with a fresh cache (every notebook executed)."""
    root = tmp_path_factory.mktemp("site")
    start = time.perf_counter()
    report = build(root / "out", root / "cache", explorer=HAS_EXPLORER, raise_on_error=False)
    print(f"\nsite build for the tests: {time.perf_counter() - start:.0f} s; {report}")
    return report


def test_site_has_every_page(site):
    out = site.index.parent
    assert site.index.exists()
    for notebook in NOTEBOOKS:
        assert (out / "notebooks" / f"{notebook.stem}.html").exists(), notebook.name
    for page in ["docs/teaching.html", "api/index.html", "api/pwawidgets.html", "api/widgets.html",
                 "api/integrations.html", "search.html", "searchindex.js"]:
        assert (out / page).exists(), page
    assert "decompose" in (out / "searchindex.js").read_text(encoding="utf-8")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(site, notebook):
    """Each notebook executed at build time without an error (the failure names the cell)."""
    assert notebook.name not in site.failures, site.failures.get(notebook.name)
    page = (site.index.parent / "notebooks" / f"{notebook.stem}.html").read_text(encoding="utf-8")
    assert "cell_output" in page, f"{notebook.name}: no output on its page"
    assert "tag_colab-setup" not in page, f"{notebook.name}: the Colab set-up cell is on the site"
    assert "Open In Colab" in page and "colab-badge.svg" not in page, "the badge's alt text, not a fetched image"


def test_links_between_notebooks_resolve(site):
    """Notebook 04 links to 05 and 06 (``[...](05_fidelity.ipynb)``): on the site, links to their pages."""
    page = (site.index.parent / "notebooks" / "04_imagenet_networks.html").read_text(encoding="utf-8")
    assert 'href="05_fidelity.html' in page and 'href="06_bias_and_robustness.html' in page


def test_landing_page_lists_the_course(site):
    page = html.unescape(site.index.read_text(encoding="utf-8"))
    for entry in course_entries(REPO / "notebooks"):
        assert f'href="notebooks/{entry.path.stem}.html"' in page, entry.path.name
        assert entry.title in page and entry.time in page
    assert ('href="explorer/index.html"' in page) == HAS_EXPLORER


def test_figures_are_on_the_pages(site):
    out = site.index.parent
    for notebook in NOTEBOOKS:
        figures = sum(cell.source.count("plt.show") + cell.source.count("map_grid") for cell in
                      nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code")
        page = (out / "notebooks" / f"{notebook.stem}.html").read_text(encoding="utf-8")
        if figures:
            assert re.search(r'<img [^>]*src="\.\./_images/[^"]+\.png"', page), notebook.name
    images = list((out / "_images").glob("*.png"))
    assert images and all(path.stat().st_size > 0 for path in images)


def test_no_cdn(site):
    out = site.index.parent
    for page in out.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not REMOTE.search(text), f"{page.relative_to(out)}: {REMOTE.search(text).group(0)}"
        assert "data-jupyter-widgets-cdn" not in text, page
    for sheet in out.rglob("*.css"):
        assert not CSS_REMOTE.search(sheet.read_text(encoding="utf-8", errors="replace")), sheet
    assert (out / "_static" / "mathjax" / "tex-chtml-full.js").exists()


def test_size_budget(site):
    assert site.size_bytes <= SIZE_BUDGET, f"{site.size_bytes / 2**20:.1f} MB > 40 MB"


def test_widgets_that_need_python_say_so(site):
    """Notebook 01's RegionExplorer: its page says it needs Python and links to Binder (and the explorer)."""
    page = (site.index.parent / "notebooks" / "01_toy_regions.html").read_text(encoding="utf-8")
    assert page.count('type="application/vnd.jupyter.widget-view+json"') >= 1
    note = page[page.index("pwawidgets-needs-python"):][:1500]
    assert "mybinder.org/v2/gh/pwawidgets/pwawidgets/main?urlpath=lab/tree/notebooks/01_toy_regions.ipynb" in note
    assert ('href="../explorer/index.html"' in note) == HAS_EXPLORER


def _no_widget_manager() -> None:
    """Skip where the widget manager is missing, except in CI, which must run these tests (.ci/run installs it)."""
    if os.environ.get("CI"):
        pytest.fail("the widget manager is not installed: bash pwawidgets/site/js/install.sh (see .ci/run)")
    pytest.skip("the widget manager is not installed: bash pwawidgets/site/js/install.sh")


def test_saved_widget_state_is_embedded(site):
    if html_manager_dir() is None:
        _no_widget_manager()
    page = (site.index.parent / "notebooks" / "01_toy_regions.html").read_text(encoding="utf-8")
    match = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', page, re.S)
    assert match, "no saved widget state"
    state = json.loads(match.group(1).replace("<\\/", "</"))["state"]
    names = {model["model_name"] for model in state.values()}
    assert {"ImageModel", "IntSliderModel"} <= names, names  # the saved picture, and the controls drawn inert
    assert all(model["model_module"].startswith("@jupyter-widgets/") for model in state.values())
    assert '<script src="../_static/widgets/embed.js' in page
    assert (site.index.parent / "_static" / "widgets" / "embed.js").exists()


def test_page_draws_offline_in_chromium(site):
    """Notebook 01's page opened from disk: the saved explorer is drawn (picture and sliders), the maths typeset, and
    nothing is requested from the network."""
    if html_manager_dir() is None:
        _no_widget_manager()
    from browser import CHROMIUM, CHROMIUM_ARGS, require_browser

    require_browser()
    from playwright.sync_api import sync_playwright

    remote, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                   else (remote.append(route.request.url), route.abort()))
        page.goto((site.index.parent / "notebooks" / "01_toy_regions.html").as_uri())
        page.wait_for_selector(".widget-subarea img", timeout=30_000)
        page.wait_for_selector("mjx-container", timeout=30_000)
        widths = page.eval_on_selector_all(".widget-subarea img", "imgs => imgs.map(img => img.naturalWidth)")
        sliders = page.locator(".widget-subarea .widget-slider").count()
        browser.close()
    assert widths and all(width > 0 for width in widths) and sliders >= 3
    assert not remote, remote
    assert not errors, errors


def test_needs_python_follows_the_widget_tree():
    state = {"state": {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_img", "IPY_MODEL_row"]}},
        "row": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_slider"]}},
        "slider": {"model_name": "IntSliderModel", "state": {"value": 3}},
        "img": {"model_name": "ImageModel", "state": {}},
        "bar": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_progress", "IPY_MODEL_img"]}},
        "progress": {"model_name": "FloatProgressModel", "state": {}},
    }}
    assert needs_python("box", state) and needs_python("row", state)
    assert not needs_python("bar", state) and not needs_python("img", state)


def test_course_entry_from_a_title_cell(tmp_path):
    title = ("# 09 · Something new (bonus)\n\n**Objectives.** By the end you can\n\n1. read a long objective\n"
             "   that wraps | twice;\n2. and more.\n\n**Time:** 0 min core · 25 min bonus")
    nbformat.write(new_notebook(cells=[new_markdown_cell(title)]), tmp_path / "09_new.ipynb")
    entry = read_entry(tmp_path / "09_new.ipynb")
    assert (entry.number, entry.title, entry.kind, entry.time) == ("09", "Something new", "bonus",
                                                                    "0 min core · 25 min bonus")
    assert entry.objective == "read a long objective that wraps | twice"
    nbformat.write(new_notebook(cells=[new_markdown_cell("# no number")]), tmp_path / "10_bad.ipynb")
    with pytest.raises(ValueError, match="10_bad.ipynb: its first cell needs"):
        read_entry(tmp_path / "10_bad.ipynb")


# ------------------------------------------------------------------------------------------ a failing notebook


def failing_notebook(folder: Path) -> Path:
    folder.mkdir()
    nb = new_notebook(cells=[new_markdown_cell(TITLE), new_code_cell("x = 1"), new_code_cell("y = x / 0")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = folder / "01_fails.ipynb"
    nbformat.write(nb, path)
    return path


def test_execution_failure_names_notebook_and_cell(tmp_path, capsys):
    path = failing_notebook(tmp_path / "notebooks")
    cell_id = nbformat.read(path, as_version=4).cells[2].id
    with pytest.raises(SiteBuildError) as error:
        build(tmp_path / "out", tmp_path / "cache", notebooks=path.parent, explorer=False)
    message = str(error.value)
    assert message == f"notebooks/01_fails.ipynb, cell 3 of 3 (id {cell_id}): ZeroDivisionError: division by zero"
    assert not (tmp_path / "out" / "notebooks" / "01_fails.html").exists()


def test_cli_site_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert cli.main(["site", "--out", str(tmp_path / "file"), "--no-explorer"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pwawidgets site: out:") and "\n" not in err
    if not HAS_EXPLORER:
        assert cli.main(["site", "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip()
        assert "--no-explorer" in err and "\n" not in err
        assert not (tmp_path / "out").exists()
