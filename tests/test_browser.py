"""The explorers in real JupyterLab 4 and Notebook 7 front ends, driven through headless Chromium: they
render, and a slider dragged in the browser reaches the kernel and changes the picture."""

from __future__ import annotations

import pytest
from browser import (
    chromium_page,
    drag_slider,
    jupyter_lab,
    open_notebook,
    picture_src,
    require_browser,
    run_command,
    wait_for_new_picture,
    write_notebook,
)

SETUP = """\
import pwawidgets as pw
from pwawidgets.widgets import ContributionExplorer, RegionExplorer

images = pw.data.shapes(2, seed=11).images
explorer = ContributionExplorer(pw.load_model("mini_vgg"), images[0], layer="conv4")
explorer"""

REGIONS = """\
regions = RegionExplorer(steps=300)
regions"""

REPORT = """\
print("LAYER=" + explorer.state.layer, "MESSAGE=" + repr(explorer.message))"""


# Errors the front end raises on a plain notebook without any widget (checked by hand), not ours.
FRONT_END_NOISE = {"notebook7": ("Cannot read properties of undefined (reading 'schema')",)}


@pytest.mark.parametrize("front_end", ["jupyterlab", "notebook7"])
def test_explorers_render_and_respond(front_end, tmp_path):
    require_browser()
    write_notebook(tmp_path / "explore.ipynb", [SETUP, REGIONS, REPORT])
    with jupyter_lab(tmp_path) as (base, token), chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        open_notebook(page, base, token, "explore.ipynb", front_end)
        run_command(page, "notebook:run-all-cells")
        page.wait_for_selector(".pwa-contribution-picture", timeout=60_000)
        page.wait_for_selector(".pwa-region-picture", timeout=60_000)
        before = picture_src(page, ".pwa-contribution-picture")
        assert before.startswith("blob:") or before.startswith("data:"), before
        assert page.locator(".pwa-region-picture").first.bounding_box()["width"] > 200
        output = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output").inner_text()
        assert "LAYER=conv4" in output and "MESSAGE=''" in output, output

        # drag the layer slider's handle about one step (of four) to the left, as a user would
        drag_slider(page, ".pwa-contribution-layer", -0.2)
        wait_for_new_picture(page, ".pwa-contribution-picture", before, timeout_ms=30_000)
        page.locator(".jp-Cell").nth(2).click()
        run_command(page, "notebook:run-cell")
        output = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output").inner_text()
        assert "LAYER=conv3" in output, output
        page.screenshot(path=str(tmp_path / f"{front_end}.png"), full_page=True)
        assert [e for e in errors if e not in FRONT_END_NOISE.get(front_end, ())] == [], errors
