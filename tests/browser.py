"""Helpers for browser tests: a JupyterLab server and the Voilà app on localhost, headless Chromium driven by
Playwright, a slider dragged as a user would, and the rendered size of every picture."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_browser() -> None:
    """Skip where no Chromium is installed, except in CI, which must run these tests."""
    missing = not os.path.exists(CHROMIUM)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = True
    if missing:
        if os.environ.get("CI"):
            pytest.fail("browser tests need Debian's chromium and the playwright package (see .ci/run)")
        pytest.skip("no Chromium/Playwright here")


def write_notebook(path: Path, cells: list[str]) -> None:
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                   "source": source} for source in cells],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextmanager
def jupyter_lab(root: Path, timeout: float = 90.0):
    """A JupyterLab server on 127.0.0.1 serving ``root``; yields its base URL and token."""
    port, token = free_port(), "pwawidgets-test"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
           "--LabApp.news_url=", "--LabApp.expose_app_in_browser=True",
           "--JupyterNotebookApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = open(root / "server.log", "w")  # noqa: SIM115 -- closed below
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (root / "server.log").read_text()) from None
                time.sleep(0.5)
        yield base, token
    finally:
        _stop(server)
        log.close()


@contextmanager
def voila_app(log_path: Path, timeout: float = 90.0):
    """``python -m pwawidgets app`` on a free port (this package's copy, for the kernel too); yields its base URL
    and the process. Waits only for the port: opening the page is what starts a kernel."""
    port = free_port()
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    log = open(log_path, "w")  # noqa: SIM115 -- closed below
    server = subprocess.Popen([sys.executable, "-m", "pwawidgets", "app", f"--port={port}", "--no-browser"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the app did not start:\n" + log_path.read_text()) from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", server
    finally:
        _stop(server)
        log.close()


@contextmanager
def chromium_page(width: int = 1400):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": 1000})
            yield page
        finally:
            browser.close()


KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return kernel && kernel.status === 'idle';
}"""


FRONT_ENDS = {"jupyterlab": "lab/tree", "notebook7": "notebooks"}


def open_notebook(page, base: str, token: str, name: str, front_end: str = "jupyterlab",
                  timeout_ms: int = 90_000) -> None:
    """Open a notebook in JupyterLab or Notebook 7 and wait until its kernel is idle."""
    page.goto(f"{base}/{FRONT_ENDS[front_end]}/{name}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_ms)
    page.wait_for_function(KERNEL_IDLE, timeout=timeout_ms)


def run_command(page, command: str, timeout_ms: int = 180_000) -> None:
    """Execute a JupyterLab command (e.g. 'notebook:run-all-cells') and wait for the kernel to be idle."""
    page.evaluate(f"window.jupyterapp.commands.execute('{command}')")
    page.wait_for_timeout(500)
    page.wait_for_function(KERNEL_IDLE, timeout=timeout_ms)


def drag_slider(page, selector: str, fraction: float) -> None:
    """Drag the handle of the slider ``selector`` by ``fraction`` of its track (negative: to the left), as a user
    would with the mouse."""
    handle = page.locator(f"{selector} .noUi-handle").first
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    track = page.locator(f"{selector} .noUi-target").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + fraction * track["width"], y, steps=5)
    page.mouse.up()


def picture_src(page, selector: str) -> str:
    """The ``src`` of the picture ``selector`` (a widget's <img>, or a box around one)."""
    return page.locator(f"img{selector}, {selector} img").first.get_attribute("src") or ""


def wait_for_new_picture(page, selector: str, old: str, timeout_ms: int = 60_000) -> str:
    """Wait until the picture ``selector`` shows another image than ``old``, loaded; returns its new ``src``."""
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector('img' + sel) || document.querySelector(sel + ' img');"
        " return i && i.getAttribute('src') !== old && i.complete && i.naturalWidth > 0; }",
        arg=[selector, old], timeout=timeout_ms)
    return picture_src(page, selector)


PICTURE_SIZES = """() => Array.from(document.querySelectorAll('img.widget-image')).map(i => {
  const r = i.getBoundingClientRect();
  return {classes: i.className, natural: [i.naturalWidth, i.naturalHeight], shown: [r.width, r.height]};
})"""


def picture_sizes(page) -> list[dict]:
    """Every widget picture of the page: its CSS classes, natural size and rendered size (CSS pixels)."""
    return page.evaluate(PICTURE_SIZES)


def aspect_error(size: dict) -> float:
    """How far a rendered picture's aspect ratio is from its natural one (relative; NaN if it has no size)."""
    (nw, nh), (w, h) = size["natural"], size["shown"]
    if min(nw, nh, w, h) <= 0:
        return float("nan")
    return abs((w / h) / (nw / nh) - 1)


SCREENSHOT_BYTES = 300_000


def save_screenshot(page, path: Path, width: int = 1400, height: int = 900) -> None:
    """The window as a learner sees it (scrolled to the top), as a PNG of at most :data:`SCREENSHOT_BYTES`
    (fewer colours if need be). JupyterLab's own toasts (its news prompt) are dismissed first."""
    from PIL import Image

    page.set_viewport_size({"width": width, "height": height})
    page.evaluate("() => { document.querySelectorAll('.Toastify__toast').forEach(t => t.remove());"
                  " window.scrollTo(0, 0); }")
    page.wait_for_timeout(800)
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    for colours in (256, 128, 64):
        buffer = io.BytesIO()
        shot.quantize(colours, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
        if buffer.tell() <= SCREENSHOT_BYTES:
            break
    assert buffer.tell() <= SCREENSHOT_BYTES, f"{path.name}: {buffer.tell()} bytes"
    path.write_bytes(buffer.getvalue())
