"""The course table of the site's landing page, read from the notebooks' title cells (never a copied table).

A title cell starts ``# NN · Title``, has an **Objectives** list and a ``**Time:** N min core · M min bonus`` line
(``docs/notebook_style.md``; ``tests/test_notebook_style.py`` checks them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

TITLE = re.compile(r"^#\s+(\d+)\s*·\s*(.+?)\s*$", re.M)
TIME = re.compile(r"\*\*Time:\*\*\s*(\d+) min core(?:\s*·\s*(\d+) min bonus)?")
ITEM = re.compile(r"^\s*(?:\d+\.|[-*])\s+", re.M)


@dataclass(frozen=True)
class CourseEntry:
    """One row of the course table."""

    path: Path
    number: str
    title: str
    core_min: int
    bonus_min: int
    objective: str

    @property
    def kind(self) -> str:
        """``core`` when the notebook has core sections, else ``bonus``."""
        return "core" if self.core_min > 0 else "bonus"

    @property
    def time(self) -> str:
        return f"{self.core_min} min core · {self.bonus_min} min bonus"


def read_entry(path: Path) -> CourseEntry:
    """The table row of one notebook; a ValueError naming the notebook when its title cell lacks a part."""
    nb = nbformat.read(path, as_version=4)
    source = nb.cells[0].source if nb.cells and nb.cells[0].cell_type == "markdown" else ""
    title, time = TITLE.search(source), TIME.search(source)
    if title is None or time is None:
        raise ValueError(f"{path.name}: its first cell needs a '# NN · Title' line and a "
                         "'**Time:** N min core · M min bonus' line (docs/notebook_style.md)")
    return CourseEntry(path=path, number=title.group(1), title=title.group(2).removesuffix("(bonus)").strip(),
                       core_min=int(time.group(1)), bonus_min=int(time.group(2) or 0),
                       objective=first_objective(source))


def first_objective(source: str) -> str:
    """The first item of the Objectives list, its wrapped lines joined ("" when there is none)."""
    after = source.split("Objectives", 1)[1] if "Objectives" in source else ""
    item = ITEM.search(after)
    if item is None:
        return ""
    lines = []
    for line in after[item.end():].splitlines():
        if not line.strip() or (lines and ITEM.match(line)):
            break
        lines.append(line.strip())
    return " ".join(lines).rstrip(";.")


def course_entries(notebooks: Path) -> list[CourseEntry]:
    """Every ``NN_*.ipynb`` in ``notebooks``, in file-name order."""
    return [read_entry(path) for path in sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))]


def course_table(entries: list[CourseEntry], link_dir: str = "/notebooks") -> str:
    """The course as a MyST Markdown table: notebook (a link to its page), title, time, core/bonus, one objective."""
    rows = ["| notebook | title | time | core / bonus | you will be able to |", "| --- | --- | --- | --- | --- |"]
    for entry in entries:
        cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - a table cell may not hold a bare bar
        rows.append(f"| {{doc}}`{entry.path.stem} <{link_dir}/{entry.path.stem}>` | {cell(entry.title)} | {entry.time} "
                    f"| {entry.kind} | {cell(entry.objective)} |")
    return "\n".join(rows)
