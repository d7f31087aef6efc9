"""The public API: every name the notebooks, README and docs reach through ``pw.`` exists, and one style."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pwawidgets as pw
from pwawidgets import baselines, core, exactness, fidelity, metrics, robustness

ROOT = Path(__file__).resolve().parents[1]


def _texts() -> dict[str, str]:
    texts = {}
    for path in sorted(ROOT.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts[path.name] = "\n".join("".join(c["source"]) for c in cells)
    for path in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))]:
        texts[path.name] = path.read_text()
    return texts


def test_every_name_used_through_pw_exists():
    used = {(name, m) for name, text in _texts().items() for m in re.findall(r"\bpw\.([A-Za-z_]\w*)", text)}
    assert used, "the notebooks use pw."
    missing = sorted((name, m) for name, m in used if not hasattr(pw, m))
    assert not missing, f"used through pw. but not exported: {missing}"
    assert set(pw.__all__) <= set(dir(pw))


def test_the_exports_cover_results_and_modules():
    for name in ("BiasSources", "VerifyReport", "LayerBiases", "layer_biases", "Decomposition", "baselines",
                 "fidelity", "robustness", "metrics"):
        assert name in pw.__all__, name


def test_the_input_argument_is_inputs_everywhere():
    """A model input is called ``inputs`` in every public function of the engine (no x, images or data)."""
    wrong = []
    for module in (core, exactness, metrics, baselines, fidelity, robustness):
        for name, fn in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != module.__name__:
                continue
            params = set(inspect.signature(fn).parameters)
            wrong += [f"{module.__name__}.{name}({p})" for p in ("x", "images", "data") if p in params]
    wrong += ["display_image"] if "inputs" not in inspect.signature(pw.display_image).parameters else []
    assert not wrong, wrong


def test_dead_code_and_old_names_are_gone():
    assert not hasattr(robustness, "summarize")
    assert not hasattr(baselines, "maps_from") and not hasattr(baselines, "default_layer")
    assert not hasattr(pw.Decomposition, "maps") and not hasattr(pw.Decomposition, "total")
    assert set(exactness.__all__) == {"VerifyReport", "region_radius", "verify"}  # no re-exports of other modules
