"""The exercises: the check module's behaviour, and every notebook's stubs and published solutions.

Each notebook is run once with, at every exercise, its stub then its check (which must print the not-done line),
then the solution from the ``<details>`` block in place of the stub, then the check again (which must pass).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from pwawidgets import exercises
from pwawidgets.exercises import CORRECT, NOT_DONE, WRONG, check

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
FENCE = re.compile(r"```python\n(.*?)```", re.S)


# ------------------------------------------------------------------------------------------ the module


def test_check_reports_correct_wrong_and_not_done(capsys):
    assert check("sum", 3.0, 3.0, hint="add them") is True
    assert check("sum", 3.1, 3.0, hint="add them") is False
    assert check("sum", ..., 3.0, hint="add them") is None
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{CORRECT} sum: correct."
    assert out[1].startswith(f"{WRONG} sum: largest difference 0.1") and out[1].endswith("Hint: add them")
    assert out[2] == f"{NOT_DONE} sum: not done yet. add them"


def test_check_calls_functions_and_never_raises(capsys):
    def stub():
        raise NotImplementedError("Exercise 1: fill me in")

    def broken():
        return 1 / 0

    assert check("f", stub, 1.0, hint="h") is None
    assert check("f", broken, 1.0, hint="h") is False
    assert check("f", lambda: torch.tensor([1.0, 2.0]), np.array([1.0, 2.0]), hint="h") is True
    assert check("f", lambda: None, 1.0, hint="h") is False
    out = capsys.readouterr().out
    assert "not done yet" in out and "ZeroDivisionError" in out and "did you forget to return" in out


def test_shapes_booleans_strings_and_custom_comparisons(capsys):
    assert check("shape", np.zeros(6), np.zeros((2, 3)), hint="h") is False
    assert check("mask", [True, False], torch.tensor([True, True]), hint="h") is False
    assert check("word", "cat", "cat", hint="h") is True
    assert check("nan", float("nan"), 1.0, hint="h") is False
    assert check("text", "abc", 1.0, hint="h") is False
    assert exercises.check_true("positive", 2.0, lambda v: None if v > 0 else "not positive", hint="h") is True
    assert exercises.check_true("positive", -2.0, lambda v: None if v > 0 else "not positive", hint="h") is False
    out = capsys.readouterr().out
    assert "reshape or squeeze" in out and "1 of 2 entries differ" in out and "NaN" in out
    assert exercises.finite_number(torch.tensor([2.5])) == 2.5
    with pytest.raises(TypeError):
        exercises.finite_number([1.0, 2.0])


# ------------------------------------------------------------------------------------- the notebooks


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _exercise_cells(nb) -> dict[str, dict[str, int]]:
    """``{id: {"exercise": i, "check": j, "solution": k}}`` from the cells' tags."""
    found: dict[str, dict[str, int]] = {}
    for i, cell in enumerate(nb.cells):
        for tag in _tags(cell):
            role, _, ident = tag.partition("-")
            if role in ("exercise", "check", "solution") and ident:
                found.setdefault(ident, {})[role] = i
    return found


def _solution_code(cell) -> str:
    blocks = FENCE.findall(cell.source)
    assert cell.cell_type == "markdown" and "<details>" in cell.source, "a solution is a markdown <details> block"
    assert len(blocks) == 1, "a solution holds exactly one ```python block"
    return blocks[0]


WITH_EXERCISES = [p for p in NOTEBOOKS if _exercise_cells(nbformat.read(p, as_version=4))]


def test_every_exercise_has_a_stub_a_check_and_a_solution():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for ident, roles in _exercise_cells(nb).items():
            assert set(roles) == {"exercise", "check", "solution"}, f"{path.name}: {ident} has {sorted(roles)}"
            assert roles["exercise"] < roles["check"] < roles["solution"], f"{path.name}: {ident} out of order"
            _solution_code(nb.cells[roles["solution"]])
            check_source = nb.cells[roles["check"]].source
            assert "check(" in check_source, f"{path.name}: {ident}: checks come from pwawidgets.exercises"


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.stem for p in WITH_EXERCISES])
def test_stubs_say_not_done_and_solutions_pass(path):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    exercises_ = _exercise_cells(nb)
    by_check = {roles["check"]: ident for ident, roles in exercises_.items()}
    solutions = {roles["solution"] for roles in exercises_.values()}
    run = nbformat.v4.new_notebook(metadata=nb.metadata)
    probes: list[tuple[str, str, int]] = []  # (exercise, "stub" or "solution", index of the check's copy)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or i in solutions:
            continue
        if "colab-setup" in _tags(cell):
            continue
        run.cells.append(nbformat.v4.new_code_cell(cell.source))
        if i in by_check:
            ident = by_check[i]
            probes.append((ident, "stub", len(run.cells) - 1))
            run.cells.append(nbformat.v4.new_code_cell(_solution_code(nb.cells[exercises_[ident]["solution"]])))
            run.cells.append(nbformat.v4.new_code_cell(cell.source))
            probes.append((ident, "solution", len(run.cells) - 1))
    NotebookClient(run, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
                   ).execute()
    for ident, stage, index in probes:
        text = "".join(o.get("text", "") for o in run.cells[index].outputs if o.get("output_type") == "stream")
        lines = [line for line in text.splitlines() if line[:1] in (CORRECT, WRONG, NOT_DONE)]
        assert lines, f"{path.name}: {ident} ({stage}) printed no check line: {text!r}"
        if stage == "stub":
            assert all(line.startswith(NOT_DONE) for line in lines), f"{path.name}: {ident} stub: {lines}"
            assert all("not done yet." in line and len(line.split("not done yet.")[1].strip()) > 10
                       for line in lines), f"{path.name}: {ident}: the not-done line needs a hint: {lines}"
        else:
            assert all(line.startswith(CORRECT) for line in lines), f"{path.name}: {ident} solution: {lines}"
