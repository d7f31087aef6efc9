"""Precision: the TF32 guard restores the caller's flags, half precision warns, TF32 simulated on a CPU."""

from __future__ import annotations

import pytest
import torch

import pwawidgets as pw
from pwawidgets.precision import check_precision, exact_math, round_to_tf32, simulate_tf32


def test_tf32_rounding_and_simulation(vgg11, images64):
    x = torch.tensor([1.0, 1.0 + 2**-10, 1.0 + 2**-11 + 2**-13, 1.0 + 2**-12, 3.14159265], dtype=torch.float32)
    got = round_to_tf32(x)
    assert got.tolist()[:4] == [1.0, 1.0 + 2**-10, 1.0 + 2**-10, 1.0]
    assert abs(got[4].item() - 3.14159265) <= 2**-10 * 2  # 10 mantissa bits at exponent 1
    tf32 = simulate_tf32(vgg11)
    x = images64[:1].float()
    with torch.no_grad():  # the simulated net computes (nearly) the same logits...
        torch.testing.assert_close(tf32(x), vgg11.float()(x), rtol=0.05, atol=0.01)
    vgg11.double()
    d32 = pw.decompose(tf32, x, 2, keep_gradients=True)
    assert d32.gradients["input"].abs().sum() > 0  # gradients flow straight through the rounding
    # ...but its affine prediction of a step along a direction is far worse than float32's
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    exact = pw.verify(vgg11, x, 2, direction=direction, dtype=torch.float32, steps=(10.0,))
    rounded = pw.verify(tf32, x, 2, direction=direction, dtype=torch.float32, steps=(10.0,))
    assert torch.isfinite(rounded.radius).all()
    assert rounded.rel_error.max() > 10 * exact.rel_error.max()




def test_exact_math_restores_flags_after_an_error():
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with pytest.raises(RuntimeError, match="boom"), exact_math():
        assert conv.fp32_precision == "ieee"
        raise RuntimeError("boom")
    assert conv.fp32_precision == before


def test_half_precision_warns_or_raises():
    with pytest.warns(pw.ExactnessWarning, match="float16 loses exactness"):
        check_precision(torch.float16, strict=False)
    with pytest.raises(ValueError, match="bfloat16"):
        check_precision(torch.bfloat16, strict=True)
    check_precision(torch.float32, strict=True)  # no warning, no error


def test_exact_math_honours_its_device():
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = (conv.fp32_precision, matmul.fp32_precision)
    try:
        conv.fp32_precision = matmul.fp32_precision = "tf32"
        with exact_math("cpu"):  # CUDA's flags are not the CPU's business: left as they are
            assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
        for device in (None, "cuda", torch.device("cuda", 0)):
            with exact_math(device):
                assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
            assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
    finally:
        conv.fp32_precision, matmul.fp32_precision = before


def test_exactness_no_longer_reexports_other_modules():
    from pwawidgets import exactness

    assert not {"simulate_tf32", "audit", "exact_math", "AuditReport"} & set(exactness.__all__)
