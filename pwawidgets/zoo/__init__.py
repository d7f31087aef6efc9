"""Mini zoo: small trained ReLU nets on the generated shapes, mirroring the paper's three architectures.

``mini_vgg`` (VGG-19 without its fully connected head), ``mini_vgg_bn`` (VGG-19-BN), ``mini_resnet``
(ResNet-101) and ``mini_vgg_fc`` (VGG-19 with its head of three biased linear layers).

>>> from pwawidgets import zoo
>>> net = zoo.load("mini_vgg_bn")      # eval mode, weights shipped with the package
>>> zoo.card("mini_vgg_bn")["test_accuracy"]

Retrain with ``python -m pwawidgets.zoo train [--only NAME]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .architectures import BUILDERS, MiniResNet, MiniVGG, Normalize

NAMES: tuple[str, ...] = tuple(BUILDERS)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

__all__ = ["NAMES", "WEIGHTS_DIR", "MiniResNet", "MiniVGG", "Normalize", "build", "card", "load"]


def _check(name: str) -> str:
    if name not in BUILDERS:
        raise ValueError(f"unknown mini-zoo net {name!r}; choose one of: {', '.join(NAMES)}")
    return name


def build(name: str) -> nn.Module:
    """A fresh, untrained net (He-initialised) of the given zoo name."""
    return BUILDERS[_check(name)]()


def weights_path(name: str) -> Path:
    """Where the shipped state_dict of ``name`` lives."""
    return WEIGHTS_DIR / f"{_check(name)}.pt"


def load(name: str) -> nn.Module:
    """The trained net, in eval mode, with its weights loaded by ``torch.load(..., weights_only=True)``.

    The global torch random state is left as it was (the random initialisation is overwritten anyway).
    """
    path = weights_path(name)
    if not path.exists():
        raise FileNotFoundError(f"no weights at {path}: run `python -m pwawidgets.zoo train --only {name}`")
    with torch.random.fork_rng(devices=[]):
        model = build(name)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def card(name: str) -> dict[str, Any]:
    """The model card written at training time: data, seeds, recipe, test accuracy, parameters, train time."""
    path = WEIGHTS_DIR / f"{_check(name)}.json"
    if not path.exists():
        raise FileNotFoundError(f"no card at {path}: run `python -m pwawidgets.zoo train --only {name}`")
    return json.loads(path.read_text())
