"""Your own model from the command line: every source form of ``pwawidgets.model_sources``, end to end through
``python -m pwawidgets audit`` (``cli.main`` and one real subprocess), with tiny models written to tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from pwawidgets import cli
from pwawidgets.model_sources import DEFAULT_FACTORY, ModelSourceError, is_torchscript, load_source

ROOT = Path(__file__).resolve().parent.parent
NET = textwrap.dedent(f"""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * 16 * 16, 10))

        def forward(self, x):
            return self.head(self.features(x))

    def {DEFAULT_FACTORY}():
        return Net()

    def wide():
        return Net(width=12)

    def smooth():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(10))

    def not_a_model():
        return 3

    def broken():
        raise RuntimeError("no GPU here")

    TABLE = {{}}
""")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "usernet.py").write_text(NET)
    return tmp_path


def _module(folder: Path):
    """The test's own copy of the user module (imported independently of the resolver)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("usernet_reference", folder / "usernet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _audit(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(["audit", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_file_with_the_default_factory_and_a_named_one(folder: Path, capsys) -> None:
    status, out, err = _audit(capsys, str(folder / "usernet.py"))
    assert status == 0 and "usernet.py: piece-wise affine" in out and err == ""
    assert _audit(capsys, f"{folder / 'usernet.py'}:smooth")[0] == 1  # GELU: the audit says no
    model = load_source(f"{folder / 'usernet.py'}:wide")
    assert model.features[0].out_channels == 12 and not model.training


def test_module_colon_callable(folder: Path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(folder))
    status, out, _ = _audit(capsys, "usernet:build_model")
    assert status == 0 and out.startswith("usernet:build_model: piece-wise affine")


def test_a_state_dict_with_a_factory_gives_the_saved_network(folder: Path, capsys) -> None:
    reference = _module(folder).Net()
    torch.save(reference.state_dict(), folder / "w.pt")
    model = load_source(str(folder / "usernet.py"), folder / "w.pt")
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    assert torch.equal(model.double()(x), reference.eval().double()(x))
    assert _audit(capsys, str(folder / "usernet.py"), "--weights", str(folder / "w.pt"))[0] == 0


def test_a_torchscript_file_is_recognised_by_its_content(folder: Path, capsys) -> None:
    reference = _module(folder).Net().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(reference), folder / "net.model")  # any suffix
    torch.save(reference.state_dict(), folder / "w.pt")
    assert is_torchscript(folder / "net.model") and not is_torchscript(folder / "w.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(load_source(str(folder / "net.model"))(x), reference(x))
    status, out, err = _audit(capsys, str(folder / "net.model"))
    assert status == 1 and "TorchScript model" in out and "file.py:factory --weights" in out and err == ""


@pytest.mark.parametrize("source, extra, message", [
    ("missing.py", [], "'{d}/missing.py': no such file"),
    ("usernet.py:nope", [], f"has no attribute 'nope' (the default factory name for a file is '{DEFAULT_FACTORY}'); "
                            "its callables: Net, broken"),
    ("usernet.py:not_a_model", [], "not_a_model() returned 'int', not a torch.nn.Module"),
    ("usernet.py:TABLE", [], "'TABLE' is a dict, not a callable"),
    ("usernet.py:broken", [], "calling broken() failed (RuntimeError: no GPU here)"),
    ("no_such_package:build", [], "cannot import it"),
    ("w.pt", [], "is not a TorchScript file; if it holds a state dict, give the architecture and the file"),
    ("usernet.py", ["--weights", "nothere.pt"], "--weights '{d}/nothere.pt': no such file"),
    ("usernet.py:wide", ["--weights", "w.pt"], "does not fit the model: shape differs for features.0.weight, "
                                               "features.0.bias, head.1.weight"),
    ("usernet.py", ["--weights", "other.pt"], "does not fit the model: missing features.0.weight, features.0.bias, "
                                              "head.1.weight, head.1.bias; unexpected layer.weight"),
    ("usernet.py", ["--weights", "usernet.py"], "not a state dict torch.load can read"),
    ("resnet19", [], "did you mean 'resnet18'"),
    ("mini_vgg", ["--weights", "w.pt"], "does not fit the model: missing normalize.mean, normalize.std, "),
])
def test_each_failure_is_one_line_exit_2(folder: Path, capsys, source, extra, message) -> None:
    torch.save(_module(folder).Net().state_dict(), folder / "w.pt")
    torch.save({"layer.weight": torch.zeros(2)}, folder / "other.pt")
    argv = [str(folder / source) if source.startswith(("missing", "usernet", "w.")) else source]
    argv += [extra[0], str(folder / extra[1])] if extra else []
    status, out, err = _audit(capsys, *argv)
    assert status == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert message.format(d=folder) in err


def test_load_source_refuses_a_blank_source() -> None:
    with pytest.raises(ModelSourceError, match="non-empty string"):
        load_source("  ")


def test_python_m_pwawidgets_audit_module_callable(folder: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pwawidgets", "audit", "usernet:build_model"], cwd=folder,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usernet:build_model: piece-wise affine")


def test_a_known_name_with_weights_gets_exactly_those(tmp_path: Path) -> None:
    import pwawidgets as pw

    torch.manual_seed(9)
    saved = pw.load_model("mini_vgg", pretrained=False).state_dict()
    torch.save(saved, tmp_path / "mine.pt")
    loaded = load_source("mini_vgg", tmp_path / "mine.pt").state_dict()
    assert list(loaded) == list(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved)
