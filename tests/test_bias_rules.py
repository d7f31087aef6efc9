"""The reductions that read a constant's part from gradients, against direct float64 computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pwawidgets import bias_rules as R

GEN = torch.Generator().manual_seed(0)


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(1, 7), (3, 7), (1, 4, 5, 6), (3, 4, 5, 6)])
def test_row_dots_are_per_example_dot_products(shape):
    a, b = _randn(*shape), _randn(*shape)
    expected = torch.stack([(a[i] * b[i]).sum() for i in range(shape[0])])
    torch.testing.assert_close(R.row_dots(a, b), expected, rtol=1e-13, atol=1e-13)


def _clamp_offset_part(fn, low: float, high: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd's gradients through ``fn`` and the part computed from the offset ``out - J x`` directly, where J
    is the slope autograd uses (1 where it passes the gradient, 0 where it blocks it)."""
    x = x.clone().requires_grad_(True)
    out = fn(x)
    g_out = _randn(*x.shape)
    (g_in,) = torch.autograd.grad(out, x, g_out)
    _, slope = torch.autograd.functional.jvp(fn, x.detach(), torch.ones_like(x))  # 1 or 0 per unit
    offset = out.detach() - slope * x.detach()
    assert set(offset[offset != 0].unique().tolist()) <= {low, high}
    return R.capped_part(g_out, g_in, out.detach(), False)[0], (g_out * offset).flatten(1).sum(1)


@pytest.mark.parametrize("fn,low,high", [
    (lambda t: F.hardtanh(t, -1.0, 2.0), -1.0, 2.0),
    (F.relu6, 0.0, 6.0),
    (lambda t: torch.clamp(t, -0.5, 1.5), -0.5, 1.5),
    (lambda t: torch.clamp(t, max=1.0), 0.0, 1.0),
])
def test_capped_part_is_the_cap_times_the_gradient_on_saturated_units(fn, low, high):
    x = _randn(3, 4, 5, 5) * 4
    x[0, 0, 0, :3] = torch.tensor([low, high, high])  # units exactly on the caps: autograd's slope decides
    part, expected = _clamp_offset_part(fn, low, high, x)
    torch.testing.assert_close(part, expected, rtol=1e-12, atol=1e-12)
    assert expected.abs().min() > 0


def test_capped_part_maps_sum_to_the_part():
    x = _randn(2, 3, 4, 4).mul(4).requires_grad_(True)
    out = F.relu6(x)
    g_out = _randn(2, 3, 4, 4)
    (g_in,) = torch.autograd.grad(out, x, g_out)
    part, cells = R.capped_part(g_out, g_in, out.detach(), True)
    assert cells.shape == (2, 4, 4)
    torch.testing.assert_close(cells.flatten(1).sum(1), part, rtol=1e-12, atol=1e-12)


def test_capped_node_knows_one_clamp_and_nothing_else():
    x = _randn(2, 3).requires_grad_(True)
    assert R.capped_node(F.relu6(x), True) and R.capped_node(torch.clamp(x, -1, 1), True)
    assert R.capped_node(nn.ReLU6(inplace=True)(x * 1), True)
    assert not R.capped_node(torch.relu(x), True)  # no cap
    assert not R.capped_node(F.relu6(x), False)  # a module whose forward does more than one clamp
    assert not R.capped_node(F.relu6(x.detach()), True)  # no autograd node


@pytest.mark.parametrize("shape,dim", [((3, 4, 5, 6), 1), ((3, 4), -1), ((3, 2, 4), -1)])
def test_channel_part_is_the_gradient_times_the_broadcast_constant(shape, dim):
    g, vector = _randn(*shape), _randn(shape[dim])
    view = [1] * len(shape)
    view[dim] = -1
    expected = (g * vector.view(view)).flatten(1).sum(1)
    part, cells = R.channel_part(g, vector, dim % len(shape), maps=len(shape) == 4)
    torch.testing.assert_close(part, expected, rtol=1e-12, atol=1e-12)
    if len(shape) == 4:
        torch.testing.assert_close(cells, (g * vector.view(view)).sum(1), rtol=1e-12, atol=1e-12)


def test_batch_norm_shifts_all_at_once_equal_each_module_alone():
    mods = [nn.BatchNorm2d(3), nn.BatchNorm1d(4, eps=1e-3), nn.BatchNorm2d(2, affine=False),
            nn.BatchNorm2d(5).double(), nn.BatchNorm2d(2, track_running_stats=False)]
    with torch.no_grad():
        for m in mods:
            if m.running_mean is not None:
                m.running_mean.uniform_(-1, 1, generator=GEN)
                m.running_var.uniform_(0.5, 2, generator=GEN)
            if m.weight is not None:
                m.weight.uniform_(0.5, 1.5, generator=GEN)
                m.bias.uniform_(-0.3, 0.3, generator=GEN)
    shifts = R.batch_norm_shifts(mods)
    assert id(mods[-1]) not in shifts  # no running statistics: not affine per example
    for m in mods[:-1]:
        expected = -m.running_mean / (m.running_var + m.eps).sqrt()
        if m.weight is not None:
            expected = expected * m.weight + m.bias
        assert shifts[id(m)].dtype == m.running_mean.dtype
        torch.testing.assert_close(shifts[id(m)], expected.detach(), rtol=1e-6, atol=1e-7)


def test_additive_terms_of_every_form():
    a, b = object(), object()
    assert R.additive_terms("add", (a, b), {"alpha": 2}) == [(a, 1.0), (b, 2)]
    assert R.additive_terms("sub", (a, b), {}) == [(a, 1.0), (b, -1)]
    assert R.additive_terms("__rsub__", (a, b), {}) == [(a, -1.0), (b, 1.0)]
    assert R.additive_terms("rsub", (a, b), {"alpha": 3}) == [(a, -3), (b, 1.0)]


def test_a_convolution_node_says_whether_it_adds_a_bias_even_a_frozen_one():
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    with_bias, frozen, without = nn.Conv2d(2, 3, 3), nn.Conv2d(2, 3, 3), nn.Conv2d(2, 3, 3, bias=False)
    frozen.bias.requires_grad_(False)
    assert R.convolution_adds_bias(with_bias(x).grad_fn)
    assert R.convolution_adds_bias(frozen(x).grad_fn)  # its gradient edge is empty, as a missing bias's
    assert frozen(x).grad_fn.next_functions[2][0] is None
    assert not R.convolution_adds_bias(without(x).grad_fn)
