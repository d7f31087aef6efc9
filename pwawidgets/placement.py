"""Where a model lives: its device and floating-point dtype, found one way for the whole library."""

from __future__ import annotations

import torch
from torch import nn


def best_device() -> torch.device:
    """The device a notebook or command runs its models on: the CUDA GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory order when it is a 4-D batch on a CPU, else ``x`` itself; the values are the same.

    Convolutions run faster on it on a CPU (oneDNN; ``benchmarks/bench_fidelity.py`` prints the ratio). The library
    uses it only for forward passes whose tensors it never hands back (masked and perturbed images, Quantus' calls),
    so a user's tensors keep their usual layout.
    """
    if x.dim() == 4 and x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def model_device(model: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """The device of the model's first parameter (else first buffer); ``default`` for a model with neither."""
    for tensor in _tensors(model):
        return tensor.device
    return torch.device(default)


def model_dtype(model: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (else buffer); ``default`` if it has none."""
    for tensor in _tensors(model):
        if tensor.is_floating_point():
            return tensor.dtype
    return default


def _tensors(model: nn.Module):
    yield from model.parameters()
    yield from model.buffers()
