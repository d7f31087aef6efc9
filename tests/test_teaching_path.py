"""The 2-hour path of docs/teaching.md: every row names real cells, fits the reading-and-doing model, and runs;
and Binder shuts a notebook's kernel down when the notebook is closed.

The table is read by benchmarks/teaching_path.py (its docstring gives the notation). The static checks take a second;
``test_path_runs_on_its_own_cells`` (marker ``path``) executes each notebook of the path in a fresh kernel, running
only the Setup cells and the cells the path names, in the path's order. To rewrite the table's "model" column after
the notebooks change: ``python benchmarks/teaching_path.py --update``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import teaching_path as tp  # noqa: E402

# The cell that states each verdict the path must end on: a markdown cell starting with "**Verdict" (05 still
# words its verdict as "we do not reproduce the paper's ordering"). The code cells above it in its section print
# the numbers it quotes.
VERDICTS = {"05_fidelity": ("**Verdict", "reproduce the paper's ordering"),
            "06_bias_and_robustness": ("**Verdict",)}
FIX = "Fix the row in docs/teaching.md, '## The 2-hour path'."


def _rows() -> list[tp.Row]:
    try:
        return tp.read_path()
    except tp.PathError:
        return []  # test_table_names_real_cells reports it


def _clock(text: str) -> int:
    hours, minutes = text.split(":")
    return 60 * int(hours) + int(minutes)


@pytest.fixture(scope="module")
def rows() -> list[tp.Row]:
    try:
        return tp.read_path()
    except tp.PathError as error:
        message = str(error)
    pytest.fail(f"{message}. {FIX}", pytrace=False)


def _cells(row: tp.Row) -> list[int]:
    try:
        return tp.row_cells(row, tp.read_notebook(row.notebook))
    except tp.PathError as error:
        message = str(error)
    pytest.fail(f"{message}\n{FIX}", pytrace=False)


def _timing(rows: list[tp.Row], row: tp.Row) -> tp.Timing:
    _cells(row)
    return tp.row_timing(rows, row, tp.read_notebook(row.notebook))


def test_table_names_real_cells(rows):
    errors = []
    for row in rows:
        if row.is_notebook:
            try:
                tp.row_cells(row, tp.read_notebook(row.notebook))
            except tp.PathError as error:
                errors.append(str(error))
    assert not errors, f"{FIX}\n\n" + "\n\n".join(errors)


def test_start_times_follow_the_minutes(rows):
    clock = _clock(rows[0].start)
    assert clock == 0, f"row 1 starts at {rows[0].start}, not 0:00"
    for row in rows:
        assert _clock(row.start) == clock, f"{row.label()}: starts at {row.start}; the rows above end at " \
                                           f"{clock // 60}:{clock % 60:02d}. {FIX}"
        clock += row.minutes


def test_each_row_covers_its_model_and_the_path_keeps_its_slack(rows):
    modelled, problems = 0.0, []
    for row in rows:
        if not row.is_notebook:
            modelled += row.minutes  # opening, breaks, wrap-up: as stated
            continue
        timing = _timing(rows, row)
        modelled += timing.minutes
        if row.model != f"{timing.minutes:.1f}":
            problems.append(f"{row.label()}: the model gives {timing.minutes:.1f} min ({timing.describe()}); "
                            f"write {timing.minutes:.1f} in its 'model' column, not {row.model!r}")
        if row.minutes < timing.minutes:
            problems.append(f"{row.label()}: {row.minutes} min stated, but its cells take {timing.minutes:.1f} min "
                            f"by the model ({timing.describe()}): give it at least {math.ceil(timing.minutes)} "
                            "min, or fewer cells")
    assert not problems, f"{FIX}\n" + "\n".join(problems)
    stated = sum(r.minutes for r in rows)
    assert stated <= tp.SESSION_MIN, f"the rows add up to {stated} min, more than {tp.SESSION_MIN}. {FIX}"
    slack = tp.SESSION_MIN - modelled
    assert slack >= tp.SLACK_MIN, (f"the path takes {modelled:.1f} min by the model: {slack:.1f} min of slack in "
                                   f"{tp.SESSION_MIN}, fewer than {tp.SLACK_MIN}. Drop cells from the path. {FIX}")


def test_each_notebook_once_and_in_cell_order(rows):
    order = tp.notebook_order(rows)
    assert len(order) == len(set(order)), f"the path returns to a notebook after leaving it ({order}): its " \
                                          f"kernel was shut down, so keep each notebook's rows together. {FIX}"
    for name in order:
        seen = -1
        for row in (r for r in rows if r.notebook == name):
            cells = _cells(row)
            assert cells[0] > seen, f"{row.label()}: goes back above a cell an earlier row ran. {FIX}"
            seen = cells[-1]


def test_kernel_shut_down_at_every_notebook_switch(rows):
    notebook_rows = [k for k, row in enumerate(rows) if row.is_notebook]
    for before, after in itertools.pairwise(notebook_rows):
        old, new = rows[before], rows[after]
        if old.notebook == new.notebook:
            continue
        said = " ".join(r.note + " " + r.section for r in rows[before + 1:after + 1]).lower()
        assert "shut down" in said and old.notebook[:2] in said, (
            f"{new.label()}: the path switches from {old.notebook} to {new.notebook}; this row (or a break before "
            f"it) must say to shut down {old.notebook[:2]}'s kernel ('shut down' and '{old.notebook[:2]}'). {FIX}")


def test_path_ends_on_the_fidelity_and_robustness_verdicts(rows):
    order = tp.notebook_order(rows)
    assert order[-2:] == list(VERDICTS), f"the path must end with {list(VERDICTS)}, not {order[-2:]}. {FIX}"
    for name, markers in VERDICTS.items():
        nb = tp.read_notebook(name)
        ran = {index for row in rows if row.notebook == name for index in _cells(row)}
        verdicts = [i for i, c in enumerate(nb.cells)
                    if c.cell_type == "markdown" and any(m in c.source for m in markers)]
        assert verdicts, f"{name} has no markdown cell with {markers[0]!r}: the notebook must state its verdict " \
                         "in a cell that starts with it"
        verdict = verdicts[0]
        section = next(cells for cells in tp.sections(nb).values() if verdict in cells)
        needed = [i for i in section if i <= verdict and (i == verdict or nb.cells[i].cell_type == "code")]
        missing = [section.index(i) + 1 for i in needed if i not in ran]
        title = tp.heading(nb.cells[section[0]])
        assert not missing, (f"the path skips cells {missing} of {name} / {title!r}: the verdict (cell "
                             f"{section.index(verdict) + 1}) and the code cells above it that print its numbers. {FIX}")


@pytest.mark.path
@pytest.mark.parametrize("name", tp.notebook_order(_rows()))
def test_path_runs_on_its_own_cells(name):
    """Only the Setup cells and the path's cells, in a fresh kernel: no NameError from a skipped cell, no error."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    rows = tp.read_path()
    for row in rows:
        if row.notebook == name:
            _cells(row)
    subset, chosen = tp.path_notebook(rows, name)
    client = NotebookClient(subset, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tp.NOTEBOOKS)}})
    try:
        client.execute()
        return
    except CellExecutionError:
        pass
    k = next(k for k, cell in enumerate(subset.cells) if cell.cell_type == "code"
             and any(o.get("output_type") == "error" for o in cell.get("outputs", [])))
    error = next(o for o in subset.cells[k].outputs if o.get("output_type") == "error")
    index, row = chosen[k]
    if row is None:
        where = f"{name}, Setup (cell {index} of the notebook)"
    else:
        number = tp.sections(tp.read_notebook(name))[row.section].index(index) + 1
        where = f"{row.label()}, cell {number} of its section"
    pytest.fail(f"{where} fails when only the path's cells run: {error['ename']}: {error['evalue']}. A cell the "
                f"path skips defines what it needs: add that cell to this row or an earlier one. {FIX}", pytrace=False)


# ---------------------------------------------------------------------------------------------------------------
# Binder: closing a notebook shuts its kernel down (JupyterLab's settings overrides, copied by binder/postBuild)

ROOT = Path(__file__).resolve().parent.parent


def test_binder_overrides_are_real_settings_of_the_installed_jupyterlab():
    import jsonschema

    overrides = json.loads((ROOT / "binder" / "overrides.json").read_text(encoding="utf-8"))
    schemas = Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas"
    tracker = overrides.get("@jupyterlab/notebook-extension:tracker", {})
    assert tracker.get("kernelShutdown") is True, "binder/overrides.json must set kernelShutdown: true for " \
                                                  "@jupyterlab/notebook-extension:tracker"
    for plugin, settings in overrides.items():
        extension, _, name = plugin.partition(":")
        path = schemas / extension / f"{name}.json"
        assert path.exists(), f"binder/overrides.json: no schema {path} for {plugin!r} in the installed JupyterLab"
        properties = json.loads(path.read_text(encoding="utf-8"))["properties"]
        for key, value in settings.items():
            assert key in properties, f"binder/overrides.json: {plugin!r} has no setting {key!r} (JupyterLab " \
                                      "would add it silently and ignore it)"
            jsonschema.validate(value, properties[key])
            assert value != properties[key]["default"], f"{plugin} {key}: the override equals the default"


def test_binder_postbuild_puts_the_overrides_where_jupyterlab_reads_them(tmp_path):
    from jupyterlab.commands import get_app_dir

    assert Path(get_app_dir()) == Path(sys.prefix) / "share" / "jupyter" / "lab", "JupyterLab's app directory " \
        "is not <sys.prefix>/share/jupyter/lab here (JUPYTERLAB_DIR set?)"
    shims = tmp_path / "bin"
    shims.mkdir()
    prefix = tmp_path / "prefix"
    (shims / "pip").write_text("#!/bin/sh\nexit 0\n")  # postBuild's pip install: not needed here
    (shims / "python").write_text(f"#!/bin/sh\necho {prefix}\n")  # sys.prefix of Binder's environment
    for shim in shims.iterdir():
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(ROOT / "binder" / "postBuild")], cwd=ROOT, env=env, check=True)
    copied = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"  # <app dir>/settings
    assert copied.read_text(encoding="utf-8") == (ROOT / "binder" / "overrides.json").read_text(encoding="utf-8")
