"""The 2-hour path of docs/teaching.md, read as data: its rows, the notebook cells each row names, and the
reading-and-doing model that times them.

    python benchmarks/teaching_path.py            # the path, row by row: stated and modelled minutes
    python benchmarks/teaching_path.py --sections # the model's minutes for every section of every notebook
    python benchmarks/teaching_path.py --update   # rewrite the table's "model" column from the notebooks

Used by tests/test_teaching_path.py (the path fits and runs) and benchmarks/bench_notebooks.py (the memory of two
kernels along the path). The model and its numbers are written out in docs/teaching.md, "How the path is timed".

The path table has the columns ``start | min | model | notebook | section | cells | what to bring out``. A
notebook row names a notebook (``01_toy_regions``), a section heading exactly as written without its ``## ``, and
its cells: ``all``, or ranges such as ``1–6``, ``1–3, 7``, ``4–end``, where cell 1 is the heading cell and the
count goes on through every cell, markdown and code, up to the next ``## `` heading. Anything in parentheses after
the ranges is a comment; a comment ``(up to Exercise 1)`` is also checked: the cell after the range must start
with a heading that contains "Exercise 1", so that a cell added above it shows. Other rows (opening, break,
wrap-up) have ``—`` as their notebook.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
TEACHING = ROOT / "docs" / "teaching.md"
NOTEBOOKS = ROOT / "notebooks"

# The reading-and-doing model (docs/teaching.md, "How the path is timed", says why each number).
WORDS_PER_MINUTE = 150  # markdown prose, read to act on it (adults read English non-fiction at 238 wpm on average)
CODE_CELL_MIN = 1.5     # read a code cell, run it, read what it printed or drew
SETUP_CELL_MIN = 0.5    # run an import/settings cell without studying it (the Colab cell, Setup)
EXERCISE_MIN = 3.0      # an exercise: read the stub, try, run the check, correct once...
EXERCISE_LINE_MIN = 1.0  # ...plus one minute per line of code its published solution needs
PREDICT_MIN = 1.0       # a "Predict" question: commit to an answer before running the cell
THINK_MIN = 3.0         # a "Think!" prompt: think, talk to a neighbour, read the model answer
SESSION_MIN = 120
SLACK_MIN = 10

HEADING = "## "
DETAILS = re.compile(r"<details>.*?</details>", re.S)
LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
TAG = re.compile(r"<[^>]+>")
RANGE = re.compile(r"^(\d+)(?:\s*[–-]\s*(\d+|end))?$")
UP_TO = re.compile(r"\(up to ([^)]+)\)")


class PathError(ValueError):
    """The path table names something the notebooks do not have; the message says what to fix."""


@dataclass
class Row:
    number: int          # 1-based row of the table
    start: str
    minutes: int
    model: str           # the table's "model" column, as written
    notebook: str        # e.g. "01_toy_regions", or "—"
    section: str
    cells: str
    note: str

    @property
    def is_notebook(self) -> bool:
        return self.notebook not in ("—", "-", "")

    def label(self) -> str:
        where = f"{self.notebook} / {self.section!r} / cells {self.cells}" if self.is_notebook else self.section
        return f"row {self.number} ({self.start}, {where})"


@dataclass
class Timing:
    """The model's minutes for a set of cells, term by term."""

    words: int = 0
    code_cells: int = 0
    setup_cells: int = 0
    exercises: list[str] = field(default_factory=list)
    solution_lines: int = 0
    predicts: int = 0
    thinks: int = 0

    @property
    def minutes(self) -> float:
        return (self.words / WORDS_PER_MINUTE + self.code_cells * CODE_CELL_MIN + self.setup_cells * SETUP_CELL_MIN
                + len(self.exercises) * EXERCISE_MIN + self.solution_lines * EXERCISE_LINE_MIN
                + self.predicts * PREDICT_MIN + self.thinks * THINK_MIN)

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.words + other.words, self.code_cells + other.code_cells,
                      self.setup_cells + other.setup_cells, self.exercises + other.exercises,
                      self.solution_lines + other.solution_lines, self.predicts + other.predicts,
                      self.thinks + other.thinks)

    def describe(self) -> str:
        parts = [f"{self.words} words", f"{self.code_cells} code cells"]
        if self.setup_cells:
            parts.append(f"{self.setup_cells} setup cells")
        if self.exercises:
            parts.append(f"exercises {', '.join(self.exercises)} ({self.solution_lines} solution lines)")
        if self.predicts:
            parts.append(f"{self.predicts} Predict")
        if self.thinks:
            parts.append(f"{self.thinks} Think!")
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# The table


def read_path(text: str | None = None) -> list[Row]:
    """The rows of the table under the heading "## The 2-hour path" of docs/teaching.md."""
    text = TEACHING.read_text(encoding="utf-8") if text is None else text
    part = text.split("\n## The 2-hour path", 1)
    if len(part) < 2:
        raise PathError("docs/teaching.md has no section '## The 2-hour path'")
    lines = part[1].split("\n## ", 1)[0].splitlines()
    table = [line for line in lines if line.startswith("|")]
    if len(table) < 3:
        raise PathError("the 2-hour path has no table")
    header = [c.strip() for c in table[0].strip("|").split("|")]
    wanted = ["start", "min", "model", "notebook", "section", "cells", "what to bring out"]
    if header != wanted:
        raise PathError(f"the path table's columns are {header}; they must be {wanted}")
    rows = []
    for number, line in enumerate(table[2:], 1):
        cells = [c.strip() for c in _split_row(line)]
        if len(cells) != len(wanted):
            raise PathError(f"row {number} of the path table has {len(cells)} columns, not {len(wanted)}: {line}")
        start, minutes, model, notebook, section, cell_list, note = cells
        if not minutes.isdigit():
            raise PathError(f"row {number}: the 'min' column must be a whole number of minutes, not {minutes!r}")
        rows.append(Row(number, start, int(minutes), model, notebook.strip("`"), section, cell_list, note))
    return rows


def _split_row(line: str) -> list[str]:
    """A markdown table row's cells; a '|' inside backticks does not split."""
    cells, current, code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            code = not code
        if char == "|" and not code:
            cells.append(current)
            current = ""
        else:
            current += char
    return [*cells, current]


def notebook_path(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


def read_notebook(name: str):
    path = notebook_path(name)
    if not path.exists():
        found = ", ".join(p.stem for p in sorted(NOTEBOOKS.glob("*.ipynb")))
        raise PathError(f"notebook {name!r} does not exist; the notebooks are: {found}")
    return nbformat.read(path, as_version=4)


# ---------------------------------------------------------------------------------------------------------------
# Sections and cells


def heading(cell) -> str | None:
    """The ``## `` heading a markdown cell starts with, without the ``## ``."""
    if cell.cell_type != "markdown" or not cell.source.startswith(HEADING):
        return None
    return cell.source.splitlines()[0][len(HEADING):].strip()


def sections(nb) -> dict[str, list[int]]:
    """Each ``## `` heading of the notebook and the indices of its cells, the heading cell first."""
    found: dict[str, list[int]] = {}
    current = None
    for index, cell in enumerate(nb.cells):
        title = heading(cell)
        if title is not None:
            current = found.setdefault(title, [])
        if current is not None:
            current.append(index)
    return found


def setup_cells(nb) -> list[int]:
    """The cells before the first numbered section: the title, the Colab cell and the Setup section."""
    for index, cell in enumerate(nb.cells):
        title = heading(cell)
        if title is not None and title != "Setup":
            return list(range(index))
    return list(range(len(nb.cells)))


def parse_cells(spec: str, count: int) -> list[int]:
    """``all``, ``1–6``, ``1–3, 7``, ``4–end`` (1-based, within a section of ``count`` cells) as 0-based offsets."""
    spec = spec.split("(", 1)[0].strip()
    if spec == "all":
        return list(range(count))
    chosen: list[int] = []
    for part in spec.split(","):
        match = RANGE.match(part.strip())
        if not match:
            raise ValueError(f"cannot read {part.strip()!r}: write 'all', or ranges like '1–6', '1–3, 7', '4–end'")
        first = int(match.group(1))
        last = count if match.group(2) == "end" else int(match.group(2) or first)
        if not 1 <= first <= last <= count:
            raise ValueError(f"cells {part.strip()} are outside the section's cells 1–{count}")
        chosen.extend(range(first - 1, last))
    if chosen != sorted(set(chosen)):
        raise ValueError(f"cells {spec!r} are not in increasing order without repeats")
    return chosen


def describe_section(nb, indices: list[int]) -> str:
    """The section's cells, numbered as the path counts them, for error messages."""
    lines = []
    for number, index in enumerate(indices, 1):
        cell = nb.cells[index]
        first = cell.source.strip().splitlines()[0][:70] if cell.source.strip() else ""
        tags = cell.metadata.get("tags", [])
        lines.append(f"    {number:>2}. {cell.cell_type:<8} {' '.join(tags) + ' ' if tags else ''}{first}")
    return "\n".join(lines)


def row_cells(row: Row, nb) -> list[int]:
    """The notebook indices of the cells a row names; a PathError that says what to fix otherwise."""
    found = sections(nb)
    if row.section not in found:
        listing = "\n".join(f"    {title}" for title in found)
        raise PathError(f"{row.label()}: {row.notebook} has no section headed {row.section!r}. Copy the heading "
                        f"as written (without '## ') into the 'section' column; its sections are:\n{listing}")
    indices = found[row.section]
    try:
        offsets = parse_cells(row.cells, len(indices))
    except ValueError as error:
        raise PathError(f"{row.label()}: {error}. The section's cells, numbered as the path counts them:\n"
                        f"{describe_section(nb, indices)}") from None
    chosen = [indices[k] for k in offsets]
    up_to = UP_TO.search(row.cells)
    if up_to:
        after = indices[offsets[-1] + 1] if offsets[-1] + 1 < len(indices) else None
        text = nb.cells[after].source.strip() if after is not None else ""
        first = text.splitlines()[0] if text else ""
        if not (first.startswith("#") and up_to.group(1) in first):
            raise PathError(f"{row.label()}: the cell after these cells does not start with a heading containing "
                            f"{up_to.group(1)!r}; the section changed. Its cells, numbered as the path counts "
                            f"them:\n{describe_section(nb, indices)}")
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# The model


def prose_words(source: str) -> int:
    """Words a learner reads in a markdown cell: no hidden <details> answer, no link target, no HTML tag, no token
    without a letter or digit (table rules, lone symbols)."""
    text = TAG.sub(" ", LINK.sub(r"\1", DETAILS.sub(" ", source)))
    return sum(1 for token in text.split() if any(ch.isalnum() for ch in token))


def solution_lines(source: str) -> int:
    """Lines of code in a published solution (a <details> cell's python block), without blanks and comments."""
    block = re.search(r"```python\n(.*?)```", source, re.S)
    if not block:
        return 0
    code = re.sub(r'"""(.*?)"""', "", block.group(1), flags=re.S)
    return sum(1 for line in code.splitlines() if line.strip() and not line.strip().startswith("#"))


def exercise_id(cell, kind: str) -> str | None:
    for tag in cell.metadata.get("tags", []):
        if tag.startswith(kind + "-"):
            return tag[len(kind) + 1:]
    return None


def timing(nb, indices: list[int], setup: bool = False) -> Timing:
    """The model's minutes for these cells of ``nb``. ``setup``: the cells are the title and Setup, run unread."""
    result = Timing()
    solutions = {exercise_id(c, "solution"): c for c in nb.cells if exercise_id(c, "solution")}
    for index in indices:
        cell = nb.cells[index]
        if cell.cell_type == "markdown":
            result.words += prose_words(cell.source)
            result.predicts += len(re.findall(r"\*\*Predict\b", cell.source))
            result.thinks += len(re.findall(r"\bThink!", cell.source))
        elif cell.cell_type == "code" and setup:
            result.setup_cells += 1
        elif cell.cell_type == "code" and exercise_id(cell, "exercise"):
            name = exercise_id(cell, "exercise")
            result.exercises.append(name)
            result.solution_lines += solution_lines(solutions[name].source) if name in solutions else 0
        elif cell.cell_type == "code" and not exercise_id(cell, "check"):
            result.code_cells += 1  # a check cell is part of its exercise's minutes
    return result


def row_timing(rows: list[Row], row: Row, nb) -> Timing:
    """A row's model: its cells; the first row of a notebook also opens it (title and Setup cells)."""
    result = timing(nb, row_cells(row, nb))
    first = next(r for r in rows if r.notebook == row.notebook)
    if first is row:
        result = timing(nb, setup_cells(nb), setup=True) + result
    return result


def notebook_order(rows: list[Row]) -> list[str]:
    """The path's notebooks in the order it opens them."""
    order: list[str] = []
    for row in rows:
        if row.is_notebook and (not order or order[-1] != row.notebook):
            order.append(row.notebook)
    return order


def path_cells(rows: list[Row], name: str) -> list[tuple[int, Row | None]]:
    """What a learner runs in one notebook: its setup cells, then each row's cells, in the path's order."""
    nb = read_notebook(name)
    chosen: list[tuple[int, Row | None]] = [(i, None) for i in setup_cells(nb)]
    for row in rows:
        if row.notebook == name:
            chosen.extend((i, row) for i in row_cells(row, nb))
    return chosen


def path_notebook(rows: list[Row], name: str):
    """A copy of the notebook that holds only the cells the path runs (setup first), and the row of each."""
    nb = read_notebook(name)
    chosen = path_cells(rows, name)
    subset = nbformat.v4.new_notebook(metadata=nb.metadata)
    subset.cells = [nb.cells[i] for i, _ in chosen]
    return subset, chosen


# ---------------------------------------------------------------------------------------------------------------


def print_path() -> None:
    rows = read_path()
    total_model = 0.0
    print(f"{'row':>3} {'start':>5} {'min':>4} {'model':>6}  what")
    for row in rows:
        if row.is_notebook:
            t = row_timing(rows, row, read_notebook(row.notebook))
            total_model += t.minutes
            print(f"{row.number:>3} {row.start:>5} {row.minutes:>4} {t.minutes:6.1f}  {row.notebook} · "
                  f"{row.section} · cells {row.cells}: {t.describe()}")
        else:
            total_model += row.minutes
            print(f"{row.number:>3} {row.start:>5} {row.minutes:>4} {row.minutes:6.1f}  {row.section} (stated)")
    stated = sum(r.minutes for r in rows)
    print(f"stated {stated} min; modelled {total_model:.1f} min; slack {SESSION_MIN - total_model:.1f} min "
          f"(at least {SLACK_MIN})")


def update_model_column() -> None:
    """Write each notebook row's modelled minutes into the "model" column of docs/teaching.md."""
    rows = read_path()
    lines = TEACHING.read_text(encoding="utf-8").split("\n")
    start = lines.index("## The 2-hour path")
    table = [k for k in range(start, len(lines)) if lines[k].startswith("|")][2:2 + len(rows)]
    for k, row in zip(table, rows, strict=True):
        if row.is_notebook:
            cells = _split_row(lines[k])
            cells[2] = f" {row_timing(rows, row, read_notebook(row.notebook)).minutes:.1f} "
            lines[k] = "|" + "|".join(cells) + "|"
    TEACHING.write_text("\n".join(lines), encoding="utf-8")


def print_sections() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        print(f"{path.stem}: setup {timing(nb, setup_cells(nb), setup=True).minutes:.1f} min")
        for title, indices in sections(nb).items():
            t = timing(nb, indices)
            print(f"  {t.minutes:5.1f}  {title} [{len(indices)} cells]: {t.describe()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", action="store_true", help="every section of every notebook, not the path")
    parser.add_argument("--update", action="store_true", help="rewrite the model column of docs/teaching.md")
    args = parser.parse_args()
    if args.update:
        update_model_column()
    if args.sections:
        print_sections()
    else:
        print_path()
