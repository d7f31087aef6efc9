"""PiecewiseAffine and LayerPiecewiseAffine: Captum's own cases for InputXGradient and LayerGradientXActivation run
with our classes in their place, each compared with Captum's method on the same model and inputs (an independent
computation), within that case's own tolerance; then Captum's generic target and hook-removal checks."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import InputXGradient, LayerActivation, LayerGradientXActivation, NoiseTunnel
from captum.testing.attr.helpers.get_config_util import get_basic_config, get_multiargs_basic_config
from captum.testing.helpers.basic_models import (
    BasicEmbeddingModel,
    BasicModel_MultiLayer,
    BasicModel_MultiLayer_MultiInput,
)
from captum.testing.helpers.classification_models import SoftmaxModel
from torch import nn

import pwawidgets as pw
from pwawidgets.integrations.captum import LayerPiecewiseAffine, PiecewiseAffine


def close(ours, theirs, delta: float) -> None:
    """Every tensor of a (nested) structure within ``delta`` of the other's (max absolute difference), same shape."""
    if isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            close(a, b, delta)
        return
    theirs = torch.as_tensor(theirs, dtype=ours.dtype).detach()
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= delta


# ---------------------------------------------------------------- Captum's InputXGradient cases (test_input_x_gradient)

CONFIGS = {"basic": get_basic_config, "multiargs": get_multiargs_basic_config}


@pytest.mark.parametrize("nt_type", ["vanilla", "smoothgrad", "vargrad"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_input_cases_match_input_x_gradient(config: str, nt_type: str) -> None:
    model, inputs, grads, extra = CONFIGS[config]()
    ours_method, theirs_method = PiecewiseAffine(model), InputXGradient(model)
    assert ours_method.multiplies_by_inputs and ours_method.has_convergence_delta()
    if nt_type == "vanilla":
        ours = ours_method.attribute(inputs, additional_forward_args=extra)
        theirs = theirs_method.attribute(inputs, additional_forward_args=extra)
        expected = tuple(g * x for g, x in zip(grads, inputs, strict=True)) if isinstance(inputs, tuple) \
            else grads * inputs
        close(ours, expected, 0.05)  # the case's own tolerance, against its precomputed gradients
    else:
        kwargs = dict(nt_type=nt_type, nt_samples=10, stdevs=0.0002, additional_forward_args=extra)
        torch.manual_seed(1)
        ours = NoiseTunnel(ours_method).attribute(inputs, **kwargs)
        torch.manual_seed(1)  # the same noise: our method draws no random numbers
        theirs = NoiseTunnel(theirs_method).attribute(inputs, **kwargs)
    close(ours, theirs, 1e-6)
    shapes = [t.shape for t in (inputs if isinstance(inputs, tuple) else (inputs,))]
    assert [t.shape for t in (ours if isinstance(ours, tuple) else (ours,))] == shapes


@pytest.mark.parametrize("nt_type", ["vanilla", "smoothgrad", "vargrad"])
def test_classification_case_softmax_model(nt_type: str) -> None:
    torch.manual_seed(0)
    model = SoftmaxModel(5, 20, 10)
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    target = torch.tensor(5)
    method = PiecewiseAffine(model.forward)  # a bound forward, as in Captum's case
    with pytest.raises(ValueError, match="(?s)not piece-wise affine.*softmax.*allow_non_affine=True"):
        method.attribute(x, target)  # our audit refuses the softmax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if nt_type == "vanilla":
            ours = method.attribute(x, target, allow_non_affine=True)
            model(x)[:, target].backward()
            close(ours, x.grad * x, 1e-5)
            close(ours, InputXGradient(model.forward).attribute(x, target), 1e-5)
        else:
            torch.manual_seed(2)
            ours = NoiseTunnel(method).attribute(x, nt_type=nt_type, nt_samples=10, stdevs=1.0, target=target,
                                                 allow_non_affine=True)
            torch.manual_seed(2)
            theirs = NoiseTunnel(InputXGradient(model.forward)).attribute(x, nt_type=nt_type, nt_samples=10,
                                                                          stdevs=1.0, target=target)
            close(ours, theirs, 1e-5)
    assert ours.shape == x.shape


def test_attribute_future_is_not_implemented_as_in_captum() -> None:
    with pytest.raises(NotImplementedError):
        PiecewiseAffine(SoftmaxModel(5, 20, 10).forward).attribute_future()


# ------------------------------------------- Captum's LayerGradientXActivation cases (test_layer_gradient_x_activation)


def _net(kind: str) -> nn.Module:
    if kind == "multi_input":
        return BasicModel_MultiLayer_MultiInput()
    return BasicModel_MultiLayer(multi_input_module=kind == "multi_module")


X0 = [[0.0, 100.0, 0.0]]
X1 = [[3.0, 4.0, 0.0]]
LAYER_CASES = {  # name: (model kind, layers, inputs, expected, additional_forward_args, no_grad, frozen params)
    "input_gradient_activation": ("basic", ["linear0"], X0, [[0.0, 400.0, 0.0]], None, False, False),
    "input_gradient_activation_no_grad": ("basic", ["linear0"], X0, [[0.0, 400.0, 0.0]], None, True, False),
    "linear_gradient_activation": ("basic", ["linear1"], X0, [[90.0, 101.0, 101.0, 101.0]], None, False, False),
    "multi_layer_linear": ("basic", [["linear0", "linear1"]], X0, [[[0.0, 400.0, 0.0]], [[90.0, 101.0, 101.0, 101.0]]],
                           None, False, False),
    "linear_gradient_activation_frozen": ("basic", ["linear1"], X0, [[90.0, 101.0, 101.0, 101.0]], None, False, True),
    "multi_gradient_activation": ("multi_module", ["multi_relu"], X1, ([[0.0, 8.0, 8.0, 8.0]], [[0.0, 8.0, 8.0, 8.0]]),
                                  None, False, False),
    "relu_gradient_activation": ("basic", ["relu"], X1, [[0.0, 8.0, 8.0, 8.0]], None, False, False),
    "multi_layer_multi_gradient": ("multi_module", [["multi_relu", "linear0"]], X1,
                                   [([[0.0, 8.0, 8.0, 8.0]], [[0.0, 8.0, 8.0, 8.0]]), [[9.0, 12.0, 0.0]]],
                                   None, False, False),
    "output_gradient_activation": ("basic", ["linear2"], X0, [[392.0, 0.0]], None, False, False),
    "multi_input_linear2": ("multi_input", ["model.linear2"], ([[0.0, 10.0, 0.0]], [[0.0, 10.0, 0.0]],
                                                               [[0.0, 5.0, 0.0]]), [[392.0, 0.0]], (4,), False, False),
    "multi_input_relu": ("multi_input", ["model.relu"], ([[0.0, 10.0, 1.0]], [[0.0, 4.0, 5.0]]),
                         [[90.0, 101.0, 101.0, 101.0]], ("x3", 5), False, False),
}


def _structure(value):
    """Expected values in the structure Captum returns: a tensor per layer output, a tuple for a tuple output."""
    if isinstance(value, tuple):
        return tuple(torch.tensor(v) for v in value)
    return torch.tensor(value)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_cases_match_layer_gradient_x_activation(case: str) -> None:
    kind, layers, inputs, expected, extra, no_grad, frozen = LAYER_CASES[case]
    net = _net(kind)
    if frozen:
        for p in net.parameters():
            p.requires_grad = False
    layer = net.get_submodule(layers[0]) if isinstance(layers[0], str) else [net.get_submodule(n) for n in layers[0]]
    several = isinstance(inputs, tuple)
    x = tuple(torch.tensor(v) for v in inputs) if several else torch.tensor(inputs, requires_grad=True)
    if extra is not None and extra[0] == "x3":
        extra = (torch.tensor([[0.0, 0.0, 0.0]]), extra[1])
    ours_method = LayerPiecewiseAffine(net, layer)
    assert ours_method.multiplies_by_inputs and ours_method.has_convergence_delta()
    with torch.no_grad() if no_grad else torch.enable_grad():
        ours, delta, bias = ours_method.attribute(x, target=0, additional_forward_args=extra,
                                                  return_convergence_delta=True, return_bias=True)
        theirs = LayerGradientXActivation(net, layer).attribute(x, target=0, additional_forward_args=extra)
        grads = LayerGradientXActivation(net, layer, multiply_by_inputs=False).attribute(
            x, target=0, additional_forward_args=extra)
        acts = LayerActivation(net, layer).attribute(x, additional_forward_args=extra)
    want = [_structure(e) for e in expected] if isinstance(layer, list) else _structure(expected)
    close(ours, want, 0.01)  # the case's own tolerance
    close(ours, theirs, 1e-4)
    if isinstance(layer, list):
        products = [tuple(a * g for a, g in zip(act, grad, strict=True)) if isinstance(act, tuple) else act * grad
                    for act, grad in zip(acts, grads, strict=True)]
    else:
        products = tuple(a * g for a, g in zip(acts, grads, strict=True)) if isinstance(acts, tuple) else acts * grads
    close(ours, products, 0.01)
    # the delta is ~0 and the bias is what the layer leaves of the score
    score = net(*(x if isinstance(x, tuple) else (x,)), *(extra or ()))[:, 0].double()
    for d, b, a in zip(*(v if isinstance(layer, list) else [v] for v in (delta, bias, ours)), strict=True):
        parts = a if isinstance(a, tuple) else (a,)
        total = sum(p.double().sum() for p in parts)
        assert abs(d).max().item() < 1e-4
        torch.testing.assert_close(score - total, b.double(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("no_grad", [False, True])
def test_embedding_case(no_grad: bool) -> None:
    torch.manual_seed(0)
    model = BasicEmbeddingModel()
    if no_grad:
        for p in model.parameters():
            p.requires_grad = False
    inputs = (torch.tensor([2, 5, 0, 1]), torch.tensor([3, 0, 0, 2]))
    with torch.no_grad() if no_grad else torch.enable_grad():
        ours = LayerPiecewiseAffine(model, model.embedding1).attribute(inputs=inputs)
        theirs = LayerGradientXActivation(model, model.embedding1).attribute(inputs=inputs)
    assert list(ours.shape) == [4, 100]
    close(ours, theirs, 1e-4)
    with pytest.raises(ValueError, match="integer inputs.*after the embedding"):
        PiecewiseAffine(model).attribute(inputs)


def test_unused_layer_gives_zeros_with_a_warning() -> None:
    model = BasicModel_MultiLayer(multi_input_module=True)
    x = torch.tensor([[3.0, 4.0, 0.0]], requires_grad=True)
    layers = [model.linear1, model.relu]
    with pytest.warns(UserWarning, match=r"does not depend on layer\(s\) \['relu'\].*zeros"):
        ours = LayerPiecewiseAffine(model, layers).attribute(inputs=x, target=0,
                                                             grad_kwargs={"materialize_grads": True})
    theirs = LayerGradientXActivation(model, layers).attribute(inputs=x, target=0,
                                                              grad_kwargs={"materialize_grads": True})
    assert len(ours) == 2 and [list(a.shape) for a in ours] == [[1, 4], [1, 4]]
    close(ours, theirs, 1e-5)
    assert torch.equal(ours[1], torch.zeros(1, 4))


# -------------------------------------------------------------------------------- Captum's generic target checks


@pytest.mark.parametrize("target, multidim", [
    (0, False), (1, False), (torch.tensor(1), False), (torch.tensor([0, 1, 1]), False), ([1, 0, 1], False),
    ((1,), False), ((1, 0, 1), True), ([(0, 1, 0), (1, 0, 1), (0, 0, 0)], True),
])
def test_every_target_form_matches_captum(target, multidim: bool) -> None:
    model = BasicModel_MultiLayer().double()
    torch.manual_seed(0)
    x = torch.randn(3, 3, dtype=torch.float64)
    extra = (None, multidim)
    ours = PiecewiseAffine(model).attribute(x, target, extra)
    close(ours, InputXGradient(model).attribute(x, target, extra), 1e-12)
    ours = LayerPiecewiseAffine(model, model.relu).attribute(x, target, extra)
    close(ours, LayerGradientXActivation(model, model.relu).attribute(x, target, extra), 1e-12)


@pytest.mark.parametrize("target, words", [
    (None, "target=None.*more than one score"), (0, "tuple of 3 ints"), ((1, 0), "one int per dimension"),
    ((2, 0, 0), "out of range"), (torch.zeros(2, 1, dtype=torch.long), r"shape \(2, 1\).*one int per example"),
])
def test_bad_targets_are_refused_clearly(target, words: str) -> None:
    model = BasicModel_MultiLayer().double()
    x = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=words):
        PiecewiseAffine(model).attribute(x, target, (None, True))


def test_delta_and_bias_are_exact_in_float64() -> None:
    """The bias against an independent computation: the network with each example's ReLU pattern frozen, at x = 0."""
    model = BasicModel_MultiLayer().double()
    torch.manual_seed(3)
    x = torch.randn(4, 3, dtype=torch.float64)
    attr, delta, bias = PiecewiseAffine(model).attribute(x, 1, return_convergence_delta=True, return_bias=True)
    gate = (model.linear1(model.linear0(x)) > 0).double()
    at_zero = model.linear2(gate * model.linear1(model.linear0(torch.zeros_like(x))))[:, 1]
    torch.testing.assert_close(bias, at_zero.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attr.sum(1) + bias, model(x)[:, 1].detach(), rtol=1e-12, atol=1e-12)
    assert delta.dtype == torch.float64 and delta.abs().max() < 1e-12
    _, deltas = NoiseTunnel(PiecewiseAffine(model)).attribute(x, nt_samples=3, stdevs=0.1, target=1,
                                                               return_convergence_delta=True)
    assert deltas.shape == (12,) and deltas.abs().max() < 1e-12


def test_noise_tunnel_wraps_the_layer_class() -> None:
    model = BasicModel_MultiLayer().double()
    x = torch.randn(2, 3, dtype=torch.float64)
    kwargs = dict(nt_type="smoothgrad_sq", nt_samples=5, stdevs=0.5, target=[0, 1])
    torch.manual_seed(4)
    ours = NoiseTunnel(LayerPiecewiseAffine(model, model.relu)).attribute(x, **kwargs)
    torch.manual_seed(4)
    theirs = NoiseTunnel(LayerGradientXActivation(model, model.relu)).attribute(x, **kwargs)
    close(ours, theirs, 1e-12)


def test_layer_not_in_the_model_and_layer_input_are_refused() -> None:
    model = BasicModel_MultiLayer()
    with pytest.raises(ValueError, match="not a submodule of the model"):
        LayerPiecewiseAffine(model, nn.ReLU())
    with pytest.raises(ValueError, match="device_ids.*not supported"):
        LayerPiecewiseAffine(model, model.relu, device_ids=[0])
    with pytest.raises(ValueError, match="model.module"):
        PiecewiseAffine(nn.DataParallel(model))
    with pytest.raises(ValueError, match="attribute_to_layer_input"):
        LayerPiecewiseAffine(model, model.relu).attribute(torch.rand(1, 3), 0, attribute_to_layer_input=True)
    with pytest.raises(ValueError, match="return_convergence_delta=True"):
        PiecewiseAffine(model).compute_convergence_delta(torch.rand(1, 3))


# ------------------------------------------------------------------------------------------- hook removal


class Failing(nn.Module):
    """Raises inside forward when asked (Captum's hook-removal check)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = BasicModel_MultiLayer()

    def forward(self, x: torch.Tensor, fail: bool = False) -> torch.Tensor:
        out = self.net(x)
        if fail:
            raise RuntimeError("failing on purpose")
        return out


def _hooks_left(model: nn.Module) -> list:
    """The hooks our audit finds on the model (its public report names each)."""
    return [f for f in pw.audit(model).unverified if "hook" in f.why]


@pytest.mark.parametrize("fail", [False, True])
def test_no_hook_is_left_after_attribute(fail: bool) -> None:
    model = Failing()
    x = torch.rand(2, 3)
    for method in (PiecewiseAffine(model), LayerPiecewiseAffine(model, [model.net.relu, model.net.linear1])):
        if fail:
            with pytest.raises(RuntimeError, match="failing on purpose"):
                method.attribute(x, 0, (True,))
        else:
            method.attribute(x, 0, (False,))
        assert _hooks_left(model) == []
