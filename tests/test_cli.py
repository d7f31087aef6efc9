"""Command line: every subcommand through main([...]), no network, and one real ``python -m pwawidgets`` run."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from pwawidgets import cli, models


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    """torchvision's cache in tmp_path; any download attempt fails as without a connection."""
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "checkpoints"


# ------------------------------------------------------------------------------------------------- fetch


def test_fetch_shipped_models(capsys, offline_cache):
    assert cli.main(["fetch", "efficientnet_lite0", "mini_resnet"]) == 0
    out = capsys.readouterr().out
    assert out.count("ships with the package") == 2 and "efficientnet-lite0-57934424.pth" in out


def test_fetch_uncached_without_network(capsys, offline_cache):
    assert cli.main(["fetch", "resnet18"]) == 1
    err = capsys.readouterr().err
    assert "could not be downloaded" in err and "resnet18" in err and str(offline_cache) in err


def test_fetch_downloads_what_is_missing(capsys, monkeypatch, offline_cache):
    fetched = []

    def fake_load(name, pretrained=True):
        fetched.append(name)
        path = models.weights_cache_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")

    monkeypatch.setattr(cli, "load_model", fake_load)
    assert cli.main(["fetch"]) == 0  # default: the paper's three models
    assert fetched == list(models.PAPER_MODELS)
    assert capsys.readouterr().out.count("downloaded to") == 3


def test_fetch_cached_checks_the_checksum(capsys, monkeypatch, offline_cache):
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("nothing should be downloaded"))
    path = models.weights_cache_path("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the real file")
    assert cli.main(["fetch", "resnet18"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "delete" in err and "python -m pwawidgets fetch resnet18" in err
    monkeypatch.setattr(cli, "verify_cached_weights", lambda name: path)  # pretend the checksum matches
    assert cli.main(["fetch", "resnet18"]) == 0
    assert "cached at" in capsys.readouterr().out


def test_fetch_unknown_name_downloads_nothing(capsys, monkeypatch, offline_cache):
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("nothing should be downloaded"))
    assert cli.main(["fetch", "vgg19", "vgg99"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "unknown model 'vgg99'" in captured.err


# ------------------------------------------------------------------------------------------------- audit


def test_audit_efficientnet_lite0_offline(capsys, offline_cache):
    assert cli.main(["audit", "efficientnet_lite0"]) == 0
    assert capsys.readouterr().out.startswith("efficientnet_lite0: piece-wise affine")


def test_audit_not_piecewise_affine(capsys):
    assert cli.main(["audit", "mobilenet_v3_small"]) == 1  # Hardswish, Hardsigmoid
    out = capsys.readouterr().out
    assert "not piece-wise affine" in out and "Hardswish" in out


def test_audit_unknown_model_one_line(capsys):
    assert cli.main(["audit", "resnet19"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("pwawidgets audit: error: unknown model 'resnet19'")
    assert "did you mean 'resnet18'" in captured.err


# ------------------------------------------------------------------------------------------------ course


def test_course_opens_jupyterlab(monkeypatch, tmp_path):
    (tmp_path / "00_start_here.ipynb").write_text("{}")
    calls = []
    monkeypatch.setattr(cli, "notebooks_dir", lambda: tmp_path)
    monkeypatch.setattr(cli.subprocess, "call", lambda args: calls.append(args) or 0)
    assert cli.main(["course"]) == 0
    assert calls == [[sys.executable, "-m", "jupyter", "lab", str(tmp_path / "00_start_here.ipynb")]]


def test_course_outside_a_clone(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "notebooks_dir", lambda: tmp_path / "nowhere")
    monkeypatch.setattr(cli.subprocess, "call", lambda args: pytest.fail("nothing to open"))
    assert cli.main(["course"]) == 1
    assert "from a clone" in capsys.readouterr().err


def test_notebooks_dir_is_the_repository_folder():
    assert cli.notebooks_dir() == Path(__file__).resolve().parent.parent / "notebooks"


# ------------------------------------------------------------------------------------------ usage errors


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["audit"], ["audit", "vgg19", "--fast"], ["fetch", "-x"]])
def test_usage_errors_exit_2(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: pwawidgets") and "error:" in err


def test_help_exits_0(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("fetch", "audit", "course", "reproduce", "site"))


def test_subcommands_are_registered_one_function_each():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"fetch", "audit", "course", "app", "reproduce", "site"} and len(cli.SUBCOMMANDS) == 6


# ---------------------------------------------------------------------------------------- real process


def test_python_m_pwawidgets_unknown_model():
    result = subprocess.run([sys.executable, "-m", "pwawidgets", "audit", "vgg99"], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "unknown model 'vgg99'" in result.stderr
    assert "Traceback" not in result.stderr
