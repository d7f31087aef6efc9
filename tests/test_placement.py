"""A model's device and dtype, found one way: parameters first, then buffers, then the defaults."""

from __future__ import annotations

import torch
from torch import nn

from pwawidgets.placement import channels_last, model_device, model_dtype


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


def test_channels_last_changes_the_layout_not_the_values():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    fast = channels_last(x)
    assert fast.is_contiguous(memory_format=torch.channels_last) and torch.equal(fast, x)
    conv = nn.Conv2d(3, 4, 3).double()
    torch.testing.assert_close(conv(fast), conv(x), rtol=1e-12, atol=1e-12)
    flat = torch.randn(2, 3)
    assert channels_last(flat) is flat  # not an image batch: as it is
    if torch.cuda.is_available():  # left alone on a GPU, where its speed was not measured
        on_gpu = x.cuda()
        assert channels_last(on_gpu) is on_gpu
