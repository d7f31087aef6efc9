"""The import rules of docs/architecture.md, checked on the source (imports inside functions included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pwawidgets"

# the engine computes; it never reaches for widgets, figures or loaders
ENGINE = {"arguments", "kinds", "region_constants", "placement", "preprocessing", "precision", "audit", "layers",
          "calls", "core", "exactness", "metrics", "baselines", "bias", "robustness", "fidelity"}
NOT_FOR_THE_ENGINE = {"widgets", "viz", "figures", "models", "model_sources", "images", "data", "zoo",
                      "efficientnet_lite", "cli", "regions", "diagrams", "exercises", "answers", "datasets",
                      "reproduce", "integrations"}


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


def test_integrations_stand_on_the_engine_and_nothing_imports_them():
    graph = _graph()
    integrations = {name for name in graph if _top(name) == "integrations"}
    assert {"pwawidgets.integrations.gradcam", "pwawidgets.integrations.quantus"} <= integrations
    for name, deps in graph.items():
        if name in integrations:
            bad = {d for d in deps if _top(d) not in ENGINE | {"integrations"}}
            assert not bad, f"{name} imports {sorted(bad)}: integrations stand on the engine only"
        else:
            assert not deps & integrations, f"{name} imports {sorted(deps & integrations)}"
    # importing the package does not import pytorch-grad-cam or Quantus: the package's __init__ imports nothing
    init = ast.parse((PACKAGE / "integrations" / "__init__.py").read_text())
    assert not [n for n in ast.walk(init) if isinstance(n, (ast.Import, ast.ImportFrom))]


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


# PyTorch internals with no stability contract: saved fields and private methods of autograd nodes, the C
# extension's private functions, autograd node class names, process-global module hooks
PRIVATE_TORCH = re.compile(
    r"_saved_|_raw_saved|torch\._C\b|_sequence_nr|\bAccumulateGrad\b|\.variable\b|\w+Backward\d\b|\._version\b"
    r"|register_module_forward(_pre)?_hook|next_functions|_functorch|_dynamo|_orig_mod|nn\.modules\.\w+\._[A-Za-z]"
)


def test_no_private_pytorch_internals_anywhere_in_the_package():
    found = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_TORCH.search(line.split("#")[0]):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_private_names_check_sees_them():
    for line in ("node._saved_bias_sym_sizes_opt", "torch._C._get_function_stack_at(0)", "node._sequence_nr()",
                 'type(n).__name__ == "HardtanhBackward0"', "edge.variable", "t._version", "model._orig_mod",
                 "nn.modules.batchnorm._BatchNorm"):
        assert PRIVATE_TORCH.search(line), line


STANDS_ON = re.compile(r"^\s*- `(\w+)` stands on (.*)$")


def test_the_stands_on_lists_of_the_architecture_notes_are_true():
    """docs/architecture.md lists, for every engine module, the package modules it imports, each only on modules
    listed above it; the lists must match the source exactly."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    listed = {}
    for line in text.splitlines():
        match = STANDS_ON.match(line)
        if match:
            listed[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
    assert set(listed) == ENGINE, f"modules without a 'stands on' line: {sorted(ENGINE - set(listed))}"
    graph = _graph()
    order = list(listed)
    for name, deps in listed.items():
        actual = {_top(d) for d in graph[f"pwawidgets.{name}"]}
        assert actual == deps, f"{name} stands on {sorted(actual)}, the notes say {sorted(deps)}"
        assert all(order.index(d) < order.index(name) for d in deps), f"{name} is listed above what it stands on"
