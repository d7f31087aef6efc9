"""The import rules of docs/architecture.md, checked on the source (imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pwawidgets"

# the engine computes; it never reaches for widgets, figures or loaders
ENGINE = {"kinds", "placement", "preprocessing", "precision", "audit", "layers", "calls", "core", "exactness",
          "metrics", "baselines", "bias", "bias_graph", "bias_trace", "bias_rules", "robustness", "fidelity"}
NOT_FOR_THE_ENGINE = {"widgets", "viz", "figures", "models", "images", "data", "zoo", "efficientnet_lite", "cli",
                      "regions", "exercises", "datasets", "reproduce"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Internal modules imported by ``name`` (``pwawidgets.x`` and ``pwawidgets.x.y`` forms)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            candidates = [stem] + [f"{stem}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for c in candidates:
            while c and c not in known:
                c = c.rpartition(".")[0]
            if c and c != name and c != "pwawidgets" and not name.startswith(c + "."):
                found.add(c)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _top(name: str) -> str:
    return name.split(".")[1] if "." in name else name


def test_the_engine_imports_no_widget_figure_or_loader():
    for name, deps in _graph().items():
        if _top(name) in ENGINE:
            bad = {d for d in deps if _top(d) in NOT_FOR_THE_ENGINE}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_figures_take_arrays_not_networks():
    assert _graph()["pwawidgets.viz"] == set()


def test_only_widgets_import_widgets_and_only_main_imports_the_cli():
    for name, deps in _graph().items():
        if not name.startswith("pwawidgets.widgets"):
            assert not {d for d in deps if d.startswith("pwawidgets.widgets")}, name
        if name not in ("pwawidgets.__main__", "pwawidgets.cli") and not name.startswith("pwawidgets.reproduce"):
            assert "pwawidgets.cli" not in deps, name


def test_imports_run_one_way():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_the_rules_see_real_imports():
    graph = _graph()
    assert "pwawidgets.core" in graph["pwawidgets.exactness"]  # exactness stands on the engine
    assert "pwawidgets.kinds" in graph["pwawidgets.layers"]
