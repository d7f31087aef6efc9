"""A model's device and dtype, found one way: parameters first, then buffers, then the defaults."""

from __future__ import annotations

import torch
from torch import nn

from pwawidgets.placement import model_device, model_dtype


def test_parameters_buffers_and_defaults():
    assert model_dtype(nn.Linear(2, 2).double()) == torch.float64
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    empty = nn.Sequential(nn.ReLU())
    assert model_dtype(empty) == torch.float32 and model_dtype(empty, torch.float16) == torch.float16
    assert model_device(empty, "meta") == torch.device("meta")
    counted = nn.Module()
    counted.register_buffer("steps", torch.zeros(1, dtype=torch.long))  # integer buffers say nothing of the dtype
    counted.register_buffer("scale", torch.ones(1, dtype=torch.float64))
    assert model_dtype(counted) == torch.float64
