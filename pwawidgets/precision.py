"""Numerical precision: TF32 off for exact work, fp16/bf16 warnings, and TF32 simulated on a CPU for teaching."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn


class ExactnessWarning(UserWarning):
    """The decomposition is not exact here (low precision, a non piece-wise affine model...)."""


_TF32_BACKENDS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn")


def _backend(path: str):
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@contextlib.contextmanager
def exact_math(device: torch.device | str | None = None) -> Iterator[None]:
    """Turn TF32 off for cuBLAS and cuDNN inside the block; restore the caller's flags afterwards.

    On Ampere/Hopper GPUs PyTorch runs float32 convolutions in TF32 (10-bit mantissa) by default, which makes
    the local affine prediction wrong for small steps. ``device``: where the work inside the block runs. The
    flags are process-wide and only CUDA reads them, so for a device other than CUDA (a CPU) the block leaves
    them alone (another thread's GPU work keeps its settings); None or a CUDA device sets them.
    """
    if device is not None and torch.device(device).type != "cuda":
        yield
        return
    new_api = hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision")
    if new_api:
        saved = {path: _backend(path).fp32_precision for path in _TF32_BACKENDS}
        try:
            for path in _TF32_BACKENDS:
                _backend(path).fp32_precision = "ieee"
            yield
        finally:
            for path, value in saved.items():
                _backend(path).fp32_precision = value
    else:  # older PyTorch
        saved_legacy = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        try:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_legacy


def check_precision(dtype: torch.dtype, strict: bool, stacklevel: int = 3) -> None:
    """Warn (``ExactnessWarning``), or raise with ``strict``, for half-precision dtypes."""
    if dtype in (torch.float16, torch.bfloat16):
        msg = (
            f"{dtype} loses exactness: the decomposition is only as exact as the arithmetic. "
            "Use model.float() (or .double()) for exact contributions."
        )
        if strict:
            raise ValueError(msg)
        warnings.warn(msg, ExactnessWarning, stacklevel=stacklevel)


# --------------------------------------------------------------------------------------------------------
# TF32 on a CPU, for teaching


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """Round float32 values to TF32 (10 explicit mantissa bits, nearest, ties away from zero)."""
    if t.dtype != torch.float32:
        raise TypeError("TF32 rounding applies to float32 tensors")
    bits = t.contiguous().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF
    return torch.where(torch.isfinite(t), rounded.view(torch.float32), t)


def _tf32_inputs(module: nn.Module, args: tuple) -> tuple:
    """Round a layer's input to TF32 in value; derivatives pass straight through (as if the rounding were
    an error added to the input), so gradients and forward-mode tangents stay those of the layer."""
    x = args[0]
    rounded = round_to_tf32(x.detach())
    return (x + (rounded - x.detach()), *args[1:])


def simulate_tf32(model: nn.Module) -> nn.Module:
    """A float32 copy of ``model`` whose convolutions and linear layers compute as TF32 tensor cores do.

    Weights are rounded once and inputs at every call to TF32, products accumulate in float32. This lets a
    CPU show what a GPU's default TF32 convolutions do to the decomposition's exactness.
    """
    copy_ = copy.deepcopy(model).float()
    with torch.no_grad():
        for module in copy_.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                module.weight.copy_(round_to_tf32(module.weight))
                module.register_forward_pre_hook(_tf32_inputs)
    return copy_
