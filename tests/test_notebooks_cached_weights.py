"""The notebook cells that run only where the paper's networks are cached, run here with stand-ins.

No VGG-19 / ResNet-101 weights reach these machines, so the cells of notebooks 05 and 06 that use them would never
run in the test suite. Here the loader hands out mini-zoo nets of the same family under those names (each accepts
224 px images: global pooling) and the cells run as a learner with cached weights would run them."""

from __future__ import annotations

import json
from pathlib import Path

import pwawidgets as pw

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
STAND_INS = {"vgg19": "mini_vgg", "vgg19_bn": "mini_vgg_bn", "resnet101": "mini_resnet"}


def cells(notebook: str) -> list[str]:
    found = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    code = ["".join(c["source"]) for c in found if c["cell_type"] == "code"]
    return ["\n".join(line for line in c.splitlines() if not line.startswith("%")) for c in code]  # no magics


def run_cells(notebook: str, setup_marks: list[str], cached_mark: str, monkeypatch) -> dict:
    code = cells(notebook)
    real_load = pw.load_model
    monkeypatch.setattr(pw, "load_model", lambda name, **kw: real_load(STAND_INS.get(name, name), **kw))
    namespace: dict = {}
    for mark in setup_marks:
        exec(next(c for c in code if mark in c), namespace)  # noqa: S102 - our own notebook's cells
    namespace["has_cached_weights"] = lambda name: name in STAND_INS
    exec(next(c for c in code if cached_mark in c), namespace)  # noqa: S102
    return namespace


def test_notebook_05_runs_its_vgg19_cell(monkeypatch, capsys):
    namespace = run_cells("05_fidelity.ipynb", ["# Imports and settings", "def show(", "# The network and every"],
                          'if has_cached_weights("vgg19"):', monkeypatch)
    printed = capsys.readouterr().out
    photos = len(namespace["x"])  # every offline photograph, as in the rest of the notebook
    assert photos > 10 and f"VGG-19, conv4, the same {photos} photos" in printed and "not cached" not in printed
    result = namespace["vgg_result"]
    assert result.layers == ["conv4"] and len(result.values("ours", "conv4")) == photos


def test_notebook_06_runs_its_paper_networks_cell(monkeypatch, capsys):
    namespace = run_cells("06_bias_and_robustness.ipynb", ["import copy"],
                          "cached = [name for name in PAPER_MODELS", monkeypatch)
    printed = capsys.readouterr().out
    assert "cached: ['vgg19', 'vgg19_bn', 'resnet101']" in printed
    assert set(namespace["paper_curves"]) == {"vgg19", "vgg19_bn", "resnet101"}
    assert "VGG-19-BN - VGG-19 on the same 10 photos" in printed
    assert "bias / score at the input" in printed and "prediction changed, FGSM" in printed
