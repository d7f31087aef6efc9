"""The explorers in a real JupyterLab 4, driven through headless Chromium: they render, and a slider moved in
the browser reaches the kernel and changes the picture."""

from __future__ import annotations

from browser import chromium_page, jupyter_lab, open_notebook, require_browser, run_command, write_notebook

SETUP = """\
import pwawidgets as pw
from pwawidgets.widgets import ContributionExplorer, RegionExplorer

images = pw.data.shapes(2, seed=11).images
explorer = ContributionExplorer(pw.load_model("mini_vgg"), images[0], layer="conv4")
for name, control in explorer.controls.items():
    control.add_class(f"pwa-{name}")
explorer.image.add_class("pwa-picture")
explorer"""

REGIONS = """\
regions = RegionExplorer(steps=300)
regions.image.add_class("pwa-regions-picture")
regions"""

REPORT = """\
print("LAYER=" + explorer.state.layer, "MESSAGE=" + repr(explorer.message))"""


def _picture_src(page, selector: str) -> str:
    return page.locator(f"{selector} img, img{selector}").first.get_attribute("src") or ""


def test_explorers_render_and_respond_in_jupyterlab(tmp_path):
    require_browser()
    write_notebook(tmp_path / "explore.ipynb", [SETUP, REGIONS, REPORT])
    with jupyter_lab(tmp_path) as (base, token), chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        open_notebook(page, base, token, "explore.ipynb")
        run_command(page, "notebook:run-all-cells")
        page.wait_for_selector(".pwa-picture", timeout=60_000)
        page.wait_for_selector(".pwa-regions-picture", timeout=60_000)
        before = _picture_src(page, ".pwa-picture")
        assert before.startswith("blob:") or before.startswith("data:"), before
        assert page.locator(".pwa-regions-picture").first.bounding_box()["width"] > 200
        output = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output").inner_text()
        assert "LAYER=conv4" in output and "MESSAGE=''" in output, output

        # move the layer slider one step to the left with the keyboard, as a user would
        handle = page.locator(".pwa-layer .noUi-handle").first
        handle.focus()
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(
            "([sel, old]) => { const i = document.querySelector(sel + ' img') || document.querySelector('img' + sel);"
            " return i && i.getAttribute('src') !== old; }",
            arg=[".pwa-picture", before], timeout=30_000)
        page.locator(".jp-Cell").nth(2).click()
        run_command(page, "notebook:run-cell")
        output = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output").inner_text()
        assert "LAYER=conv3" in output, output
        page.screenshot(path=str(tmp_path / "jupyterlab.png"), full_page=True)
        assert not errors, errors
