"""The lecture app (``python -m pwawidgets app``: apps/explorer.ipynb served by Voilà) in headless Chromium: it
renders with no code shown, takes an upload, answers the layer slider and the class list, shows no error, and its
kernel stays within one Binder session's memory. With ``PWAWIDGETS_SCREENSHOTS=docs/screenshots`` it saves the
app's screenshot there (see test_aspect_ratio.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest
from browser import (
    aspect_error,
    chromium_page,
    drag_slider,
    picture_sizes,
    picture_src,
    require_browser,
    save_screenshot,
    voila_app,
    wait_for_new_picture,
)
from PIL import Image

import pwawidgets as pw
from pwawidgets.cli import app_notebook, main

MEMORY_LIMIT = 1.2e9  # bytes: one app session on Binder (2 GB, with the server)
PICTURE = ".pwa-contribution-picture"
INFO_JS = "() => document.querySelector('.pwa-contribution-info')?.innerText ?? ''"


def test_app_notebook_is_found_and_has_no_outputs():
    notebook = json.loads(app_notebook().read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    assert "best_device()" in "".join("".join(cell["source"]) for cell in code)


def test_app_notebook_runs_without_a_browser():
    """Its code, run as Voilà runs it (one kernel, every cell in turn), shows both explorers and no error."""
    nbclient, nbformat = pytest.importorskip("nbclient"), pytest.importorskip("nbformat")
    notebook = nbformat.read(app_notebook(), as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()  # raises on a failing cell
    shown = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    views = [o for o in shown if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 2 and not [o for o in shown if o.output_type == "error" or o.get("name") == "stderr"], shown


@pytest.mark.parametrize("port", ["0", "65536", "eight"])
def test_app_refuses_a_bad_port(port, capsys):
    assert main(["app", f"--port={port}", "--no-browser"]) == 2
    assert "--port is a whole number from 1 to 65535" in capsys.readouterr().err


def _kernel_rss(server: psutil.Process) -> int:
    kernels = [p for p in server.children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
    assert len(kernels) == 1, [p.cmdline() for p in kernels]
    return kernels[0].memory_info().rss


def test_app_renders_takes_an_upload_and_answers_its_controls(tmp_path):
    require_browser()
    pytest.importorskip("voila", reason="the app needs Voilà (pip install -r requirements.txt)")
    upload = tmp_path / "espresso.jpg"
    Image.fromarray(pw.data.sample_photo("coffee")).save(upload)
    with voila_app(tmp_path / "app.log") as (base, server), chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base + "/", wait_until="commit")
        first = wait_for_new_picture(page, PICTURE, "", timeout_ms=180_000)
        wait_for_new_picture(page, ".pwa-region-picture", "", timeout_ms=120_000)
        text = page.inner_text("body")
        assert "Where does a ReLU network's score come from?" in text
        assert "import pwawidgets" not in text and "ContributionExplorer(" not in text, "code is shown"
        assert "where the bias at head comes from" in page.evaluate(INFO_JS)
        if os.environ.get("PWAWIDGETS_SCREENSHOTS"):  # the one docs/front_ends.md and the README show
            save_screenshot(page, Path(os.environ["PWAWIDGETS_SCREENSHOTS"]) / "voila.png")
            page.set_viewport_size({"width": 1400, "height": 1000})

        # upload a photo through the FileUpload widget (its button opens the file chooser)
        with page.expect_file_chooser() as chooser:
            page.click(".pwa-contribution-upload")
        chooser.value.set_files(str(upload))
        uploaded = wait_for_new_picture(page, PICTURE, first)
        page.wait_for_function(f"() => ({INFO_JS})().includes(\"upload 'espresso.jpg'\")", timeout=30_000)
        assert "espresso" in page.evaluate(INFO_JS)

        # the layer slider, dragged about one step (of nine) to the left
        drag_slider(page, ".pwa-contribution-layer", -0.1)
        moved = wait_for_new_picture(page, PICTURE, uploaded)
        assert "at head" not in page.evaluate(INFO_JS)

        # the class list: the second most likely class
        options = page.locator(".pwa-contribution-target select option")
        second = options.nth(1).inner_text()
        page.select_option(".pwa-contribution-target select", index=1)
        wait_for_new_picture(page, PICTURE, moved)
        page.wait_for_function(f"() => ({INFO_JS})().includes({json.dumps(second.split(':')[0])})",
                               timeout=30_000)

        # the region explorer answers its slider too
        regions = picture_src(page, ".pwa-region-picture")
        drag_slider(page, ".pwa-region-x", 0.2)
        wait_for_new_picture(page, ".pwa-region-picture", regions)

        text = page.inner_text("body")
        for word in ("Traceback", "Error", "There was an error"):
            assert word not in text, text
        assert page.inner_text(".pwa-contribution-message") == ""
        assert page.inner_text(".pwa-region-message") == ""
        sizes = picture_sizes(page)
        assert len(sizes) == 2 and all(aspect_error(size) <= 0.02 for size in sizes), sizes
        assert errors == [], errors

        rss = _kernel_rss(psutil.Process(server.pid))
        print(f"app kernel memory after upload, layer and class moves: {rss / 1e6:.0f} MB (RSS)")
        assert rss <= MEMORY_LIMIT, f"{rss / 1e6:.0f} MB"
        spawned = psutil.Process(server.pid).children(recursive=True)  # Voilà and the kernel
    # stopping the command (SIGTERM) stops Voilà and its kernel: none is left behind
    _, alive = psutil.wait_procs(spawned, timeout=30)
    left = [" ".join(p.cmdline()) for p in alive]
    for process in alive:
        process.kill()
    assert left == [], left
