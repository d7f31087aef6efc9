"""Every picture the explorers show keeps its aspect ratio (within 2 %) in JupyterLab 4, Notebook 7 and Voilà, in
windows 900 and 1600 pixels wide: each rendered <img> is measured against its natural size.

One JupyterLab server serves all three front ends (Voilà through its server extension, ``/voila/render/``); one
page visits them in turn. With ``PWAWIDGETS_SCREENSHOTS=docs/screenshots`` the test also saves a screenshot of
JupyterLab and of Notebook 7 there (1400 pixels wide, at most 300 KB; test_app.py saves the Voilà app's), the ones
the README and docs/front_ends.md show.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import (
    aspect_error,
    chromium_page,
    jupyter_lab,
    open_notebook,
    picture_sizes,
    require_browser,
    run_command,
    save_screenshot,
    write_notebook,
)

CELLS = [
    """\
import pwawidgets as pw
from pwawidgets.widgets import ContributionExplorer, RegionExplorer

explorer = ContributionExplorer()  # EfficientNet-Lite0 on 'chelsea': two 224 x 224 panels with a colour bar
explorer.show_bias_sources(True)
explorer""",
    """\
wide = ContributionExplorer(explorer.model, "coffee", method="side")  # four panels: wider than a 900-pixel window
wide""",
    "RegionExplorer(steps=300)",
]
PICTURES = ["pwa-contribution-picture", "pwa-contribution-picture", "pwa-region-picture"]
WIDTHS = (900, 1600)
TOLERANCE = 0.02

ALL_LOADED = f"""() => {{
  const pictures = Array.from(document.querySelectorAll('img.widget-image'));
  return pictures.length === {len(PICTURES)} && pictures.every(i => i.complete && i.naturalWidth > 0);
}}"""


def _open(page, base: str, token: str, front_end: str) -> None:
    if front_end == "voila":
        page.goto(f"{base}/voila/render/aspect.ipynb?token={token}", wait_until="commit")
    else:
        open_notebook(page, base, token, "aspect.ipynb", front_end)
        run_command(page, "notebook:run-all-cells")
    page.wait_for_function(ALL_LOADED, timeout=180_000)


def test_pictures_keep_their_aspect_ratio(tmp_path):
    require_browser()
    pytest.importorskip("voila", reason="the Voilà front end needs Voilà (pip install -r requirements.txt)")
    screenshots = os.environ.get("PWAWIDGETS_SCREENSHOTS")
    write_notebook(tmp_path / "aspect.ipynb", CELLS)
    measured = []
    with jupyter_lab(tmp_path) as (base, token), chromium_page() as page:
        for front_end in ("jupyterlab", "notebook7", "voila"):
            page.set_viewport_size({"width": 1400, "height": 1000})
            _open(page, base, token, front_end)
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 1000})
                page.wait_for_timeout(800)  # the layout settles
                sizes = picture_sizes(page)
                assert sorted(c for s in sizes for c in s["classes"].split() if c.startswith("pwa-")) == \
                    sorted(PICTURES), (front_end, width, sizes)
                for size in sizes:
                    measured.append((front_end, width, size["natural"], size["shown"], aspect_error(size)))
                    assert size["shown"][0] >= 100, (front_end, width, size)  # shown, not collapsed
            if screenshots and front_end != "voila":  # test_app.py shows the app itself in Voilà
                save_screenshot(page, Path(screenshots) / f"{front_end}.png")
    for row in measured:
        print(f"{row[0]:10} {row[1]:4d} px: natural {row[2]} shown {row[3]}, aspect off by {100 * row[4]:.2f} %")
    assert all(row[4] <= TOLERANCE for row in measured), [row for row in measured if not row[4] <= TOLERANCE]
