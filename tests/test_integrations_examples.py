"""The runnable example in each integration module's docstring runs as written."""

from __future__ import annotations

import importlib
import textwrap

import numpy as np
import pytest


def example(module_name: str) -> dict:
    """Run the indented block after ``Example::`` in a module's docstring; return its namespace."""
    doc = importlib.import_module(module_name).__doc__
    block = doc.split("Example::\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    namespace: dict = {}
    exec(textwrap.dedent("\n".join(lines)), namespace)  # noqa: S102 - our own docstring
    return namespace


def test_captum_example() -> None:
    ns = example("pwawidgets.integrations.captum")
    assert ns["attr"].shape == (2, 3, 64, 64) and ns["delta"].abs().max() < 1e-3 and ns["bias"].shape == (2,)
    assert [b.shape[0] for b in ns["blocks"]] == [2, 2] and ns["smooth"].shape == (2, 3, 64, 64)


def test_gradcam_example() -> None:
    ns = example("pwawidgets.integrations.gradcam")
    assert ns["maps"].shape == (2, 64, 64) and ns["maps"].dtype == np.float32
    assert ns["exact"].shape == (2, 64, 64) and ns["bias"].shape == (2,)


def test_quantus_examples() -> None:
    pytest.importorskip("quantus")
    ns = example("pwawidgets.integrations.quantus")
    assert ns["a_batch"].shape == (2, 3, 64, 64)
    assert np.abs(ns["gaps"]).max() < 1e-3 and len(ns["scores"]) == 2
    ns = example("pwawidgets.integrations.quantus_metrics")
    assert np.array(ns["curves"]).shape == (2, 16) and np.isfinite(ns["flipping"].get_auc_score)
    assert set(ns["road"]) == {10, 50}
