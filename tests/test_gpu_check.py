"""benchmarks/gpu_check.py, step [5]: the course through nbval on a GPU, and what it does without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_the_command_runs_every_notebook_through_nbval_with_this_interpreter():
    command = gpu_check.course_command()
    assert command[:3] == [sys.executable, "-m", "pytest"]
    assert "--nbval-lax" in command and "--nbval-current-env" in command
    assert Path(command[-1]) == ROOT / "notebooks" and any(Path(command[-1]).glob("*.ipynb"))


@pytest.fixture
def runs(monkeypatch):
    """What gpu_check would start, recorded instead of run."""
    started = []

    def fake_run(command, **kwargs):
        started.append((command, kwargs))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    return started


def test_without_a_gpu_it_says_it_skipped_and_starts_nothing(monkeypatch, runs, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.course_on_gpu() is None
    assert runs == []
    assert "skipped, no CUDA GPU" in capsys.readouterr().out


def test_with_a_gpu_it_runs_the_course_and_prints_the_card_and_the_time(monkeypatch, runs, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Test Card 80GB")
    assert gpu_check.course_on_gpu() == 0
    (command, kwargs), = runs
    assert command == gpu_check.course_command() and kwargs["cwd"] == ROOT
    assert str(ROOT) in kwargs["env"]["PYTHONPATH"].split(os.pathsep)  # the notebooks import this checkout's package
    out = capsys.readouterr().out
    assert "on Test Card 80GB: passed in" in out and out.rstrip().endswith(" s")


def test_a_dry_run_names_the_card_and_starts_nothing(monkeypatch, runs, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Test Card 80GB")
    assert gpu_check.course_on_gpu(dry_run=True) is None
    assert runs == []
    out = capsys.readouterr().out
    assert "Test Card 80GB" in out and "--nbval-lax" in out and "dry run" in out


def test_a_failed_course_run_is_reported_with_its_status(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Test Card 80GB")
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 1))
    assert gpu_check.course_on_gpu() == 1
    assert "FAILED (exit status 1)" in capsys.readouterr().out
