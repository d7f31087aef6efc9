"""Every notebook, README and docs example builds a model's input the model's way.

Read statically from the cell sources (nothing is run): each call that makes or shows a model input
(``load_image``, ``display_image``, the image sets of :mod:`pwawidgets.datasets`) names the model it is for with
``model=`` and gives no normalisation of its own, and nothing reads the retired ``.normalization`` attribute. The
old notebook 02 section 5 (``load_image(photo, size=224, crop=224)`` fed to EfficientNet-Lite0, ImageNet-normalised)
is flagged; the test below keeps that cell as a witness. A second test runs each notebook's ``load_image`` call as
written and compares its batch with the model's preprocessing written out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
import torch
import torchvision.transforms.v2.functional as TF

import pwawidgets as pw
from pwawidgets import data

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = [ROOT / "docs" / "make_figure.py"]

MAKERS = {"load_image", "bundled_photos", "folder", "voc", "open_images"}  # calls that make a model input
OVERRIDES = {"normalization", "normalize"}  # a normalisation of one's own: the model's is the one to use

OLD_02_SECTION_5 = '''effnet = pw.load_model("efficientnet_lite0")
print("normalisation (mean, std):", effnet.normalization)
photo = pw.load_image(pw.data.sample_photo("chelsea"), size=224, crop=224)   # normalised, as the model expects
d_norm = pw.decompose(effnet, photo, None, ["input"])
'''


def _name(func: ast.expr) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def problems(source: str) -> list[str]:
    """What in ``source`` builds or shows a model input otherwise than the model's way."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and _name(node.func) in MAKERS | {"display_image"}:
            what = _name(node.func)
            keywords = {k.arg for k in node.keywords}
            if what in MAKERS and "model" not in keywords:
                found.append(f"line {node.lineno}: {what}(...) without model=")
            if what == "display_image" and "model" not in keywords:
                found.append(f"line {node.lineno}: display_image(...) without model=")
            if keywords & OVERRIDES:
                found.append(f"line {node.lineno}: {what}(...) with its own {sorted(keywords & OVERRIDES)}")
        if isinstance(node, ast.Attribute) and node.attr == "normalization" and _name(node.value) != "preprocessing":
            found.append(f"line {node.lineno}: .normalization (the model's preprocessing is .preprocessing)")
        if isinstance(node, ast.Attribute) and node.attr == "NORMALIZATION" and _name(node.value) != "pw":
            found.append(f"line {node.lineno}: {ast.unparse(node)} (use the model's preprocessing)")
    return found


def _code_cells(path: Path) -> list[tuple[int, str]]:
    nb = nbformat.read(path, as_version=4)
    return [(i, c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:  # a sketch with "..." in it, not code
        return False
    return True


def _python_blocks(path: Path) -> list[tuple[int, str]]:
    """The ``python`` blocks of a Markdown file that are code (they parse)."""
    blocks = re.finditer(r"```python\n(.*?)```", path.read_text(), re.S)
    return [(m.start(), m.group(1)) for m in blocks if _parses(m.group(1))]


def test_the_readme_example_is_read():
    assert any("load_image" in block for _, block in _python_blocks(ROOT / "README.md"))


def test_the_old_section_5_of_notebook_02_is_flagged():
    found = problems(OLD_02_SECTION_5)
    assert "line 3: load_image(...) without model=" in found
    assert any(".normalization" in p for p in found)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_builds_model_inputs_the_model_way(path):
    bad = {f"cell {i}": found for i, source in _code_cells(path) if (found := problems(source))}
    assert not bad, f"{path.name}: {bad}"


@pytest.mark.parametrize("path", DOCS + SCRIPTS, ids=lambda p: p.name)
def test_docs_and_readme_build_model_inputs_the_model_way(path):
    blocks = [(0, path.read_text())] if path.suffix == ".py" else _python_blocks(path)
    bad = {f"at {at}": found for at, source in blocks if (found := problems(source))}
    assert not bad, f"{path.name}: {bad}"


def _loaded(value: ast.expr) -> ast.expr:
    """``pw.load_model(...)`` out of ``pw.load_model(...).to(device)`` (and other method calls chained on it)."""
    while (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and _name(value.func) != "load_model"
           and isinstance(value.func.value, ast.Call)):
        value = value.func.value
    return value


def _loading_calls() -> list[tuple[str, str, str]]:
    """``(notebook, call, model name)`` for every ``load_image(data.sample_photo(...), model=NAME)`` call of the
    notebooks whose model is loaded in the same notebook by ``NAME = pw.load_model("...")`` (``.to(device)``
    allowed); calls on files are checked statically, above."""
    out = []
    for path in NOTEBOOKS:
        source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                           for _, cell in _code_cells(path) for line in cell.splitlines())
        tree = ast.parse(source)
        models = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                call = _loaded(node.value)
                if (isinstance(call, ast.Call) and _name(call.func) == "load_model" and call.args
                        and isinstance(call.args[0], ast.Constant)):
                    models[node.targets[0].id] = call.args[0].value
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) == "load_image":
                model = next((k.value for k in node.keywords if k.arg == "model"), None)
                call = ast.get_source_segment(source, node)
                if isinstance(model, ast.Name) and model.id in models and "sample_photo(" in call:
                    out.append((path.stem, call, models[model.id]))
    return out


def _expected(image, p: pw.Preprocessing) -> torch.Tensor:
    """The model's preprocessing written out in float64 with torchvision's functions."""
    x = torch.from_numpy(image).permute(2, 0, 1).double() / 255
    x = TF.resize(x, [p.size], interpolation=TF.InterpolationMode(p.interpolation), antialias=True)
    x = TF.center_crop(x, [p.crop, p.crop]).clamp(0, 1)
    return ((x - torch.tensor(p.mean, dtype=torch.float64).view(-1, 1, 1))
            / torch.tensor(p.std, dtype=torch.float64).view(-1, 1, 1))[None]


@pytest.mark.parametrize("notebook, call, model_name", _loading_calls())
def test_the_notebooks_loading_calls_give_their_model_preprocessing(notebook, call, model_name):
    """Each call as the notebook writes it, run (a loop's photo variable set to chelsea): its batch equals the
    model's own preprocessing applied to the photo."""
    model = pw.load_model(model_name)
    target = re.search(r"model=(\w+)", call).group(1)
    namespace = {"pw": pw, "data": data, target: model, "photo": "chelsea", "p": "chelsea", "name": "chelsea"}
    x = eval(call, namespace)  # noqa: S307 - the notebook's own call, from this repository
    source = re.search(r"sample_photo\((\"?\w+\"?)\)", call).group(1)
    photo = data.sample_photo(eval(source, namespace))  # noqa: S307
    torch.testing.assert_close(x.double(), _expected(photo, model.preprocessing), rtol=0, atol=2e-5)


def test_the_loading_calls_are_found():
    found = {notebook for notebook, _, _ in _loading_calls()}
    assert {"00_start_here", "02_affine_decomposition", "06_bias_and_robustness"} <= found
