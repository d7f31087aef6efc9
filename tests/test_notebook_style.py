"""What docs/notebook_style.md asks of every course notebook, checked on the saved files."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
SECTION = re.compile(r"^## .*\((core|bonus), (\d+) min\)\s*$", re.M)
TIME = re.compile(r"\*\*Time:\*\*\s*(\d+) min core(?:\s*·\s*(\d+) min bonus)?")
FREE_HEADINGS = ("## Setup", "## Summary", "## References", "## Before the next notebook")


def _read(path: Path):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_opening_sections_and_closing(path):
    nb = _read(path)
    title = nb.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith(f"# {path.name[:2]} · "), "title cell"
    assert f"colab.research.google.com/github/pwawidgets/pwawidgets/blob/main/notebooks/{path.name}" in title.source
    assert "Objectives" in title.source, "objectives first"
    time = TIME.search(title.source)
    assert time, "a '**Time:** N min core · M min bonus' line in the title cell"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "colab-setup" in code[0].metadata.get("tags", []) and "google.colab" in code[0].source

    minutes = {"core": 0, "bonus": 0}
    for cell in nb.cells[1:]:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("## ") and not line.startswith(FREE_HEADINGS):
                match = SECTION.match(line)
                assert match, f"section heading without (core|bonus, N min): {line!r}"
                minutes[match.group(1)] += int(match.group(2))
    assert minutes["core"] == int(time.group(1)), f"core sections add up to {minutes['core']} min"
    assert minutes["bonus"] == int(time.group(2) or 0), f"bonus sections add up to {minutes['bonus']} min"

    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any(s.startswith("## Summary") for s in markdown), "a summary"
    cells = nb.cells[:-1] if nb.cells[-1].source.startswith("## Before the next notebook") else nb.cells
    references = cells[-1]  # the last cell, or the one before the closing note
    assert references.cell_type == "markdown" and references.source.startswith("## References")
    assert "](http" in references.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_last_cell_says_to_shut_the_kernel_down(path):
    """Two kernels of about 1 GB do not fit in Binder's 2 GB: every notebook ends by saying so."""
    last = _read(path).cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Before the next notebook")
    assert "Kernel → Shut Down Kernel" in last.source and "2 GB" in last.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_executable_solution_and_no_saved_error(path):
    for cell in _read(path).cells:
        if cell.cell_type != "code":
            continue
        first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        assert not first.lower().startswith("# solution"), "solutions live in markdown <details> blocks"
        assert not any(o.get("output_type") == "error" for o in cell.get("outputs", [])), "saved with an error"
