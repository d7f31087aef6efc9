"""Shared fixtures: small float64 networks and torchvision models with random weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pwawidgets as pw


def small_cnn_layers() -> list[nn.Module]:
    """A small CNN as a flat list of modules, so the network after any layer is ``Sequential(*rest)``."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():  # non-trivial running statistics, as after training
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return [
        nn.Conv2d(3, 6, 3, padding=1), bn, nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True), nn.AvgPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 5),
    ]


@pytest.fixture
def small_cnn() -> nn.Sequential:
    return nn.Sequential(*small_cnn_layers()).double().eval()


def no_inplace(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose modules never work in place (an independent reference)."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    return clone


@pytest.fixture(scope="session")
def vgg11() -> nn.Module:
    torch.manual_seed(1)
    return pw.load_model("vgg11", pretrained=False).double()


@pytest.fixture(scope="session")
def resnet18() -> nn.Module:
    torch.manual_seed(2)
    model = pw.load_model("resnet18", pretrained=False)
    with torch.no_grad():  # random BatchNorm statistics so the blocks are not near-identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.double()


@pytest.fixture
def images64() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(3, 3, 64, 64, generator=gen, dtype=torch.float64)
