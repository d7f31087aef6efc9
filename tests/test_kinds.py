"""The registry of operation kinds: complete for torch.nn's activations, and right about where each switches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pwawidgets as pw
from pwawidgets import kinds

# each piece-wise activation with the input levels at which it switches, written out by hand
LEVELS = [
    (nn.ReLU(), [0.0]),
    (nn.LeakyReLU(0.2), [0.0]),
    (nn.PReLU(), [0.0]),
    (nn.ReLU6(), [0.0, 6.0]),
    (nn.Hardtanh(-2.0, 3.0), [-2.0, 3.0]),
    (nn.RReLU(), [0.0]),
    (nn.Threshold(0.5, -1.0), [0.5]),
    (nn.Hardsigmoid(), [-3.0, 3.0]),
    (nn.Softshrink(0.7), [-0.7, 0.7]),
    (nn.Hardshrink(0.4), [-0.4, 0.4]),
]


@pytest.mark.parametrize("module, levels", LEVELS, ids=[type(m).__name__ for m, _ in LEVELS])
def test_radius_of_each_activation_is_its_first_level_crossing(module, levels):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 50, generator=gen, dtype=torch.float64) * 5
    dz = torch.randn(3, 50, generator=gen, dtype=torch.float64)
    model = nn.Sequential(module).double().eval()
    radius = pw.region_radius(model, z, dz)
    steps = torch.stack([(level - z) / dz for level in levels])
    expected = torch.where(steps >= 0, steps, torch.inf).amin(0).amin(1)
    torch.testing.assert_close(radius, expected, rtol=1e-12, atol=0)
    assert kinds.is_activation(module)


def test_every_torch_activation_module_has_a_kind():
    from torch.nn.modules import activation

    for name in activation.__all__:
        cls = getattr(activation, name)
        if not isinstance(cls, type) or not issubclass(cls, nn.Module):
            continue
        kind = kinds.kind_of_module(object.__new__(cls))  # judged by type: no need to build it
        assert kind is not None, name
        assert kind.category in (kinds.PIECEWISE, kinds.SMOOTH, kinds.MODE), (name, kind)


def test_piecewise_and_step_kinds_know_where_they_switch():
    for kind in kinds.KINDS:
        if kind.category in (kinds.PIECEWISE, kinds.STEP):
            assert kind.switches is not None, kind.name


def test_lookups_by_function_method_and_module():
    assert kinds.kind_of_function(F.relu).name == "relu"
    assert kinds.kind_of_function(torch.Tensor.relu_).name == "relu"
    assert kinds.kind_of_function(F.max_pool2d).name == "max_pool"
    assert kinds.kind_of_function(torch.erf).category == kinds.SMOOTH
    assert kinds.kind_of_method("sigmoid_").category == kinds.SMOOTH
    assert kinds.kind_of_method("clamp_").name == "clamp"
    assert kinds.kind_of_method("no_such_method") is None
    assert kinds.kind_of_module(nn.ReLU6()).name == "relu6"  # the most derived class wins over Hardtanh
    assert kinds.kind_of_module(nn.Conv2d(1, 1, 1)).category == kinds.BILINEAR
    assert kinds.kind_of_module(nn.Module()) is None
    assert nn.ReLU in kinds.ACTIVATION_MODULES and nn.MaxPool2d not in kinds.ACTIVATION_MODULES


def test_training_findings():
    assert kinds.training_finding(nn.BatchNorm2d(3).eval()) is None
    assert "training mode" in kinds.training_finding(nn.BatchNorm2d(3).train())
    assert "batch statistics" in kinds.training_finding(nn.BatchNorm2d(3, track_running_stats=False).eval())
    assert kinds.training_finding(nn.Dropout(0.0).train()) is None
    assert "random masks" in kinds.training_finding(nn.Dropout(0.3).train())


def test_crossing_and_window_steps():
    z = torch.tensor([[1.0, -1.0, 0.0, 2.0]], dtype=torch.float64)
    dz = torch.tensor([[-1.0, 2.0, 0.0, 1.0]], dtype=torch.float64)
    assert kinds.crossing(z, dz).tolist() == [[1.0, 0.5, float("inf"), float("inf")]]
    steps = kinds._window_steps(z.view(1, 1, 4, 1), dz.view(1, 1, 4, 1), axis=2)
    # the maximum 2 rises at rate 1; 1.0 falls, -1.0 closes the gap of 3 at rate 1 -> step 3
    assert steps.flatten().tolist() == [float("inf"), 3.0, float("inf"), float("inf")]


@pytest.mark.parametrize("kernel, stride, dilation", [((2, 2), (2, 2), (1, 1)), ((3, 2), (1, 2), (1, 1)),
                                                      ((3, 3), (2, 1), (2, 1))])
def test_pool_windows_equal_unfold(kernel, stride, dilation):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    ours = kinds._windows(x, kernel, stride, dilation)
    reference = F.unfold(x.reshape(6, 1, 9, 8), kernel, dilation=dilation, stride=stride)
    torch.testing.assert_close(ours, reference.view(2, 3, *reference.shape[1:]), rtol=0, atol=0)
