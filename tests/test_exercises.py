"""The exercises: the check module's behaviour, and every notebook's stubs and published solutions.

Each notebook is run once with, at every exercise, its stub then its check (which must print the not-done line),
then the solution from the ``<details>`` block in place of the stub, then the check again (which must pass).
"""

from __future__ import annotations

import json
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


def _line(capsys) -> str:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return out[0]


def test_check_reports_correct_wrong_and_not_done(capsys):
    assert check("sum", 3.0, 3.0, hint="add them") is True
    assert _line(capsys) == f"{CORRECT} sum: correct."
    assert check("sum", ..., 3.0, hint="add them") is None
    assert _line(capsys) == f"{NOT_DONE} sum: not done yet.", "not done says only that: no hint before an attempt"
    assert check("sum", 3.5, 3.0, hint="add them") is False
    line = _line(capsys)
    assert line.startswith(f"{WRONG} sum: the value is wrong") and line.endswith("Hint: add them")


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
    assert "Exercise 1: fill me in" not in out, "the stub's message is not echoed"


def test_shapes_booleans_strings_and_custom_comparisons(capsys):
    assert check("shape", np.zeros(6), np.zeros((2, 3)), hint="h") is False
    assert check("mask", [True, False], torch.tensor([True, True]), hint="h") is False
    assert check("word", "cat", "cat", hint="h") is True
    assert check("word", "dog", "tabby cat", hint="h") is False
    assert check("nan", float("nan"), 1.0, hint="h") is False
    assert check("text", "abc", 1.0, hint="h") is False
    assert exercises.check_true("positive", 2.0, lambda v: None if v > 0 else "not positive", hint="h") is True
    assert exercises.check_true("positive", -2.0, lambda v: None if v > 0 else "not positive", hint="h") is False
    out = capsys.readouterr().out
    assert "reshape or squeeze" in out and "1 of 2 entries differ" in out and "NaN" in out
    assert "'dog' is not the right answer" in out and "tabby" not in out
    assert exercises.finite_number(torch.tensor([2.5])) == 2.5
    with pytest.raises(TypeError):
        exercises.finite_number([1.0, 2.0])


EXPECTED = torch.tensor([[1.734219, -0.482917, 2.915063], [0.263841, -3.108527, 0.771394]], dtype=torch.float64)
BIAS = torch.tensor([0.618034, -1.414213], dtype=torch.float64)  # one per row
WRONG_KINDS = {  # a wrong answer -> words its diagnosis must hold
    "sign": (-EXPECTED, "sign is flipped"),
    "factor": (EXPECTED * 4.0, "larger than the answer by the same factor"),
    "factor, smaller": (EXPECTED / 64, "smaller than the answer by the same factor"),
    "bias added twice": (EXPECTED + BIAS[:, None], "the bias once too often"),
    "bias forgotten": (EXPECTED - BIAS[:, None], "the bias is missing"),
    "constant offset": (EXPECTED + 0.25, "off by the same constant"),
    "transposed": (EXPECTED.T, "transpose"),
    "one entry": (EXPECTED + torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64),
                  "1 of 6 entries are wrong (the first at index (1, 1))"),
    "summed over the batch": (EXPECTED.sum(0), "shape"),
    "float32 near miss": (EXPECTED * (1 + 1e-4), "same factor"),
}


def _spellings(value: float) -> set[str]:
    """The ways a printed line could show ``value``: every usual format, of it and of its magnitude."""
    out = set()
    for v in (value, abs(value)):
        out |= {repr(v), str(v), f"{v:.2f}", f"{v:.3f}", f"{v:.4f}", f"{v:.6f}", f"{v:.3g}", f"{v:.4g}", f"{v:.6g}",
                f"{v:.1e}", f"{v:.2e}", f"{v:.3e}", f"{v:+.2f}", f"{v:+.3f}", f"{v:+.4f}"}
    return {s for s in out if len(s.strip("+-0.")) >= 3}


@pytest.mark.parametrize("kind", sorted(WRONG_KINDS))
def test_a_wrong_answer_is_told_what_is_wrong_but_never_the_answer(kind, capsys):
    answer, words = WRONG_KINDS[kind]
    assert check("x", answer, EXPECTED, hint="h", offsets={"the bias": BIAS[:, None]}) is False
    line = _line(capsys)
    assert words in line, line
    leaked = {s for v in EXPECTED.flatten().tolist() for s in _spellings(v) if s in line}
    assert not leaked, f"{kind}: the line quotes the expected value ({leaked}): {line}"


@pytest.mark.parametrize("answer", [4.2, -2.718281, 2.718281 * 10, 2.718281 + 1e-4, [2.718281, 0.0], "e", None])
def test_a_wrong_single_number_is_never_given_back(answer, capsys):
    assert check("e", answer, 2.718281, hint="the exponential of one") is False
    line = _line(capsys)
    assert not any(s in line for s in _spellings(2.718281)), line
    assert check("e", 2.718281 + 1e-4, 2.718281, hint="h") is False
    assert "close, but not within the tolerance" in _line(capsys)


def test_the_spelling_scan_would_catch_a_leak():
    """The scan above is not vacuous: the old message ("... expected 2.71828, got 4.2") is caught."""
    assert any(s in "largest difference 1.48 : expected 2.71828, got 4.2" for s in _spellings(2.718281))
    assert any(s in "expected -0.4829" for s in _spellings(-0.482917))


def _mini_block_model() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3),
                               torch.nn.ReLU(), torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(5, 3))


def _hand_split(model, inputs, layer, target):
    """The exercise's way: capture h with a forward hook, keep its gradient, plain autograd."""
    seen = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.update(h=o))
    logits = model(inputs)
    handle.remove()
    score = logits[torch.arange(len(inputs)), target]
    (w,) = torch.autograd.grad(score.sum(), seen["h"])
    h = seen["h"].detach()
    return h, w, score.detach() - (w * h).flatten(1).sum(1)


def test_check_block_split_agrees_with_decompose_and_diagnoses_the_bias(capsys):
    import pwawidgets as pw

    model = _mini_block_model().double()
    inputs = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = torch.tensor([0, 2])
    ref = pw.decompose(model, inputs, target, ["1"], keep_gradients=True)
    h, w, b = _hand_split(model, inputs, "1", target)
    torch.testing.assert_close(b, ref.bias["1"], rtol=0, atol=1e-12)   # the exercise's way = the library's
    torch.testing.assert_close(w, ref.gradients["1"], rtol=0, atol=1e-12)
    assert exercises.check_block_split("split", (h, w, b), model, inputs, "1", target, hint="h") is True
    assert exercises.check_block_split("split", (h, w, b + 1e-3), model, inputs, "1", target, hint="h") is False
    capsys.readouterr()
    assert exercises.check_block_split("split", (h, w, ref.score), model, inputs, "1", target, hint="h") is False
    out = capsys.readouterr().out
    assert "Σ w·h once too often" in out
    assert exercises.check_block_split("split", (h, 2 * w, b), model, inputs, "1", target, hint="h") is False
    assert exercises.check_block_split("split", ..., model, inputs, "1", target, hint="h") is None
    out = capsys.readouterr().out
    assert "same factor" in out and out.strip().endswith("not done yet.")
    wrong = h.clone()
    assert torch.equal(wrong, h), "the check did not touch the learner's tensors"


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


MARK = "@@expected@@ "
# Run before every check cell at the stub stage: each value a check is given as ``expected`` (also those a
# check computes inside, such as check_block_split's) is printed on a marker line, to scan the cells above for it.
RECORDER = f"""
import json as _json
import pwawidgets.exercises as _ex
if not hasattr(_ex, "_original_check"):
    _ex._original_check = _ex.check
    def _recording_check(label, answer, expected, **kw):
        if expected is not None and not isinstance(expected, (str, bool)):
            try:
                values = _ex._as_array(expected)
                if values.dtype != bool and values.size <= 64:
                    print("{MARK}" + _json.dumps([float(v) for v in values.ravel()]))
            except (TypeError, ValueError):
                pass
        return _ex._original_check(label, answer, expected, **kw)
    _ex.check = _recording_check
if "check" in globals():
    check = _ex.check
"""


def spellings(value: float) -> list[re.Pattern]:
    """Patterns for ``value`` as a sentence or a print could show it (roundings to 3 or more significant digits,
    percentages), not inside a longer number. Too few digits to tell a value from other numbers (0.86, 2.5, small
    integers) give none: the scan looks for this value, not for any number near it."""
    texts = set()
    if value == int(value):
        if abs(value) >= 10:
            texts.add(str(int(abs(value))))
    else:
        v = abs(value)
        texts |= {f"{v:.2f}", f"{v:.3f}", f"{v:.4f}", f"{v:.6f}", f"{v:.3g}", f"{v:.4g}", f"{v:.6g}",
                  f"{v:.2e}", f"{v:.3e}", f"{100 * v:.1f} %", f"{v:.1%}"}
        digits = {t: t.split("e")[0].replace(".", "").replace(" %", "").strip("%").lstrip("0") for t in texts}
        texts = {t for t in texts if len(digits[t]) >= 3}
    return [re.compile(r"(?<![\d.])" + re.escape(t) + r"(?!\.?\d)") for t in sorted(texts)]


def leaks(text: str, values: list[float]) -> list[str]:
    """The spellings of ``values`` found in ``text``."""
    return [pattern.pattern for v in values for pattern in spellings(v) if pattern.search(text)]


def test_the_leak_scan_can_fail():
    """The scan catches the value a cell printed above an exercise, in the roundings a cell would use."""
    assert leaks("the bias is +0.9065 at the input", [0.906512])
    assert leaks("bias / score 0.864", [0.86423])
    assert leaks("bias −1.234e-05", [-1.2341e-5])
    assert leaks("37 of 50 scores are not positive", [37.0])
    assert leaks("mean ratio 12.3 %", [0.12313]) and leaks("mean ratio 12.3%", [0.12313])
    assert not leaks("bias 0.9066 and 37.5 and 137 and 1.9065", [0.906512 + 1e-3, 37.0, 0.9065])
    assert not leaks("layer 1 of 2, p = 0.86", [1.0, 2.0, 0.0, 0.8642])


def _text(cell) -> str:
    if cell.cell_type == "markdown":
        return cell.source
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        for mime, data in out.get("data", {}).items():
            if mime.startswith("text/"):
                parts.append(data if isinstance(data, str) else "".join(data))
    return "\n".join(line for line in "\n".join(parts).splitlines() if not line.startswith(MARK))


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.stem for p in WITH_EXERCISES])
def test_stubs_say_not_done_and_solutions_pass(path):
    """Each stub prints the not-done line and nothing more, each solution passes, and no value that a check
    expects is printed (by a cell's output) or written (in a markdown cell) anywhere above its exercise."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    exercises_ = _exercise_cells(nb)
    by_check = {roles["check"]: ident for ident, roles in exercises_.items()}
    solutions = {roles["solution"] for roles in exercises_.values()}
    run = nbformat.v4.new_notebook(metadata=nb.metadata)
    origin: list[int | None] = []   # the original index of each cell of the run (None: added by the test)
    probes: list[tuple[str, str, int]] = []  # (exercise, "stub" or "solution", index of the check's copy)

    def add(source: str, index: int | None, kind: str = "code") -> None:
        run.cells.append(nbformat.v4.new_code_cell(source) if kind == "code" else nbformat.v4.new_markdown_cell(source))
        origin.append(index)

    last_check = max(by_check)  # the cells below the last check matter to no exercise: the site build runs them
    for i, cell in enumerate(nb.cells[: last_check + 1]):
        if i in solutions or "colab-setup" in _tags(cell):
            continue
        if cell.cell_type == "markdown":
            add(cell.source, i, "markdown")
            continue
        if i in by_check:
            add(RECORDER, None)
        add(cell.source, i)
        if i in by_check:
            ident = by_check[i]
            probes.append((ident, "stub", len(run.cells) - 1))
            add(_solution_code(nb.cells[exercises_[ident]["solution"]]), None)
            add(cell.source, None)
            probes.append((ident, "solution", len(run.cells) - 1))
    NotebookClient(run, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
                   ).execute()
    for ident, stage, index in probes:
        text = "".join(o.get("text", "") for o in run.cells[index].outputs if o.get("output_type") == "stream")
        lines = [line for line in text.splitlines() if line[:1] in (CORRECT, WRONG, NOT_DONE)]
        assert lines, f"{path.name}: {ident} ({stage}) printed no check line: {text!r}"
        if stage == "stub":
            assert all(line.startswith(NOT_DONE) and line.endswith(": not done yet.") for line in lines), \
                f"{path.name}: {ident} stub: the not-done line says only that: {lines}"
            expected = [v for line in text.splitlines() if line.startswith(MARK)
                        for v in json.loads(line[len(MARK):])]
            stub = exercises_[ident]["exercise"]
            above = "\n".join(_text(c) for c, o in zip(run.cells, origin, strict=True) if o is not None and o < stub)
            found = leaks(above, expected)
            assert not found, f"{path.name}: {ident}: an expected value is shown above the exercise: {found}"
        else:
            assert all(line.startswith(CORRECT) for line in lines), f"{path.name}: {ident} solution: {lines}"
