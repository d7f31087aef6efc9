"""The graph route of bias_sources (constants read off the autograd graph) against the traced forward pass: the same
sources, in the same order, with the same parts; and every case it does not read handed to the tracer."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from test_bias import CappedChain, _randomise_bn, relu6_net, vgg_bn_like
from torch import nn

import pwawidgets as pw
from pwawidgets import bias as B
from pwawidgets.bias import REMAINDER, bias_sources, bias_sources_at


def _routes(model, x, target, layers, **kwargs) -> list[str]:
    """The routes one call took."""
    taken = []
    traced, graph = B._forward, B._forward_graph

    def trace(*a):
        taken.append(B.COPY if a[4] else B.TRACE)
        return traced(*a)

    def read(*a):
        taken.append(B.CAPTURE if a[5] else B.GRAPH)
        return graph(*a)

    B._forward, B._forward_graph = trace, read
    try:
        if isinstance(layers, str):
            bias_sources(model, x, target, layers, **kwargs)
        else:
            bias_sources_at(model, x, target, layers, **kwargs)
    finally:
        B._forward, B._forward_graph = traced, graph
    return taken


def _graph_and_trace(model, x, target, layers, **kwargs):
    """The same call through the graph route and through the tracer (the graph route refused for it)."""
    names = [layers] if isinstance(layers, str) else layers
    key = tuple(spec.name for spec in B.resolve_layers(model, names)[0])
    B._ROUTES.pop(id(model), None)
    first = _routes(model, x, target, layers, **kwargs)
    assert first in ([B.GRAPH], [B.GRAPH, B.CAPTURE]), f"the graph route gave up: {first}"
    call = bias_sources if isinstance(layers, str) else bias_sources_at
    assert _routes(model, x, target, layers, **kwargs) == first[-1:]  # remembered
    graph = call(model, x, target, layers, **kwargs)
    B._remember(model, key, B.TRACE)
    try:
        assert _routes(model, x, target, layers, **kwargs)[0] == B.TRACE
        traced = call(model, x, target, layers, **kwargs)
    finally:
        B._ROUTES.pop(id(model), None)
    return graph, traced


def _same(graph: B.BiasSources, traced: B.BiasSources) -> None:
    assert list(graph) == list(traced)  # same names, same order (the order the network adds them)
    assert graph.kinds == traced.kinds
    scale = graph.score.abs() + graph.bias.abs()
    for name in graph:
        assert ((graph[name] - traced[name]).abs() <= 1e-11 * scale).all(), name
    assert ((graph.remainder).abs() <= 1e-10 * scale).all()
    assert graph.maps.keys() == traced.maps.keys()
    for name in graph.maps:
        torch.testing.assert_close(graph.maps[name], traced.maps[name], rtol=1e-10, atol=1e-12)


@pytest.fixture
def x2() -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


@pytest.mark.parametrize("layer", ["input", "1", "6", "10"])
@pytest.mark.parametrize("batch", [1, 2])
def test_vgg_bn_like_graph_equals_trace(layer, batch, x2):
    graph, traced = _graph_and_trace(vgg_bn_like(), x2[:batch], None, layer)
    _same(graph, traced)
    assert {"input": "0", "1": "4", "6": "9", "10": "12"}[layer] in graph  # the first conv or linear bias after it


def test_saturated_caps_in_place_caps_and_an_add_graph_equals_trace(x2):
    model = relu6_net()
    for batch, target in [(1, None), (2, "top2")]:
        graph, traced = _graph_and_trace(model, x2[:batch] * 4, target, "input")
        _same(graph, traced)
        assert graph["2"].abs().min() > 0 and graph["6"].abs().min() > 0  # ReLU6 and Hardtanh caps, saturated


def test_caps_between_batchnorms_and_maps_graph_equals_trace(x2):
    model = _randomise_bn(CappedChain(False), 6).double().eval()
    for batch, maps in [(1, False), (1, True), (2, True)]:
        graph, traced = _graph_and_trace(model, x2[:batch] * 2, None, "stem", maps=maps)
        _same(graph, traced)
        assert ("act1" in graph.maps) == maps


def test_several_layers_graph_equals_trace(x2):
    model = vgg_bn_like()
    graph, traced = _graph_and_trace(model, x2, "top2", ["input", "2", "10"])
    for layer in graph:
        _same(graph[layer], traced[layer])
    assert "0" in graph["input"] and "0" not in graph["2"]


def test_efficientnet_lite0_and_the_mini_zoo_graph_equals_trace():
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model = pw.load_model("efficientnet_lite0").double()
    for layer in ["stem", "input"]:
        graph, traced = _graph_and_trace(model, x, None, layer)
        _same(graph, traced)
    assert sum(kind == B.CAP for kind in graph.kinds.values()) == 33  # every ReLU6 of the network
    for name in ["mini_vgg_fc", "mini_vgg_bn", "mini_resnet"]:
        model = pw.load_model(name).double()
        graph, traced = _graph_and_trace(model, x, None, model.block_layers[next(iter(model.block_layers))])
        _same(graph, traced)


def test_resnet18_from_the_input_graph_equals_trace():
    model = _randomise_bn(torchvision.models.resnet18(weights=None), 2).double().eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    graph, traced = _graph_and_trace(model, x, None, "input")
    _same(graph, traced)


class _Net(nn.Module):
    """A conv, a ReLU and a classifier, with one feature the graph route does not read (``case``)."""

    def __init__(self, case: str):
        super().__init__()
        torch.manual_seed(0)
        self.case = case
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 3)
        self.skip = nn.Conv2d(3, 4, 3)
        if case == "frozen bias":
            self.conv2.bias.requires_grad_(False)

    def forward(self, x):
        h = self.relu(self.conv(x))
        if self.case == "scalar added":
            h = h + 0.25
        if self.case == "padding value":
            h = F.pad(h, (1, 1, 1, 1), value=0.5)
        if self.case == "functional clamp":
            h = F.relu6(h * 40)
        h = self.conv2(h)
        if self.case == "shortcut":
            h = h + self.skip(x)  # reaches the score around the layer
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("case", ["scalar added", "padding value", "functional clamp", "frozen bias"])
def test_what_the_graph_route_does_not_read_goes_to_the_tracer(case, x2):
    model = _Net(case).double().eval()
    B._ROUTES.pop(id(model), None)
    assert _routes(model, x2, None, "relu") == [B.GRAPH, B.TRACE]  # the first call tries, and remembers
    assert _routes(model, x2, None, "relu") == [B.TRACE]
    sources = bias_sources(model, x2, None, "relu")
    expected = pw.decompose(model, x2, None, ["relu"]).bias["relu"]
    attributed = torch.stack([v for k, v in sources.items() if k != REMAINDER]).sum(0)
    torch.testing.assert_close(attributed, expected, rtol=1e-10, atol=1e-12)
    named = {"scalar added": "model (constant)", "padding value": "model (padding)",
             "functional clamp": "model (relu6)", "frozen bias": "conv2"}[case]
    assert sources[named].abs().max() > 0
    if case == "frozen bias":  # refused per layer set: after conv2, only the classifier's bias
        assert _routes(model, x2, None, "conv2") == [B.GRAPH]


def test_graph_route_with_every_feature_read_takes_one_forward_pass(x2):
    model = _Net("none").double().eval()
    B._ROUTES.pop(id(model), None)
    assert _routes(model, x2, "top2", "relu") == [B.GRAPH]
    assert B._route(model, ("relu",)) == B.GRAPH


def test_refusals_are_dropped_with_the_model(x2):
    import gc

    model = _Net("scalar added").double().eval()
    assert _routes(model, x2, None, "relu") == [B.GRAPH, B.TRACE]
    assert _routes(model, x2, None, "relu") == [B.TRACE]
    key = id(model)
    assert key in B._ROUTES
    del model
    gc.collect()
    assert key not in B._ROUTES


def test_a_shortcut_around_the_layer_is_read_from_the_values_a_second_pass_keeps(x2):
    model = _Net("shortcut").double().eval()
    B._ROUTES.pop(id(model), None)
    assert _routes(model, x2, None, "relu") == [B.GRAPH, B.CAPTURE]  # the first call learns it needs the values
    graph, traced = _graph_and_trace(model, x2, None, "relu")
    _same(graph, traced)
    assert graph.kinds["model (shortcut)"] == B.SHORTCUT and graph["model (shortcut)"].abs().min() > 0
    assert "skip" not in graph  # the shortcut's own bias lies before the sum: it is inside the shortcut's part


@pytest.mark.parametrize("layers", ["layer1.0.relu@0", "layer2.0.bn1", ["input", "layer1.0.relu@0", "layer3"]])
def test_resnet18_inside_a_block_graph_with_values_equals_trace(layers):
    model = _randomise_bn(torchvision.models.resnet18(weights=None), 2).double().eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for batch, target in [(1, None), (2, "top2")]:
        graph, traced = _graph_and_trace(model, x[:batch], target, layers)
        pairs = [(graph, traced)] if isinstance(layers, str) else zip(graph.values(), traced.values(), strict=True)
        for g, t in pairs:
            _same(g, t)
    one = graph if isinstance(layers, str) else graph["layer1.0.relu@0"]
    assert one.kinds[next(n for n in one if n.endswith("(shortcut)"))] == B.SHORTCUT


def test_a_compiled_model_is_read_through_its_original_modules(x2):
    model = vgg_bn_like()
    compiled = torch.compile(model)  # never run: bias_sources works on the eager original
    direct = bias_sources(model, x2, None, "1")
    through = bias_sources(compiled, x2, None, "1")
    assert list(through) == list(direct) and "4" in through
    for name in direct:
        torch.testing.assert_close(through[name], direct[name], rtol=0, atol=0)


class _SecondUse(nn.Module):
    """BatchNorm, ReLU6, a bias-free conv, BatchNorm: a cap read from the two BatchNorms' parameter gradients, unless
    a value on the way has a second use (``k`` times the cap's output added to the score)."""

    def __init__(self, k: float):
        super().__init__()
        torch.manual_seed(0)
        self.conv0, self.bn0, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.fc, self.k = nn.Linear(4, 3), k

    def forward(self, x):
        z = self.act(self.bn0(self.conv0(x)))
        out = self.fc(self.bn1(self.conv1(z)).mean((2, 3)))
        return out + self.k * z.mean((1, 2, 3)).unsqueeze(1) if self.k else out


@pytest.mark.parametrize("k", [0.0, 1e-9, 1.0])
def test_a_second_use_of_a_cap_output_sends_the_cap_to_a_hook(k, x2):
    model = _randomise_bn(_SecondUse(k), 3).double().eval()
    x = x2[:1] * 20  # saturate the ReLU6
    spec = B.resolve_one(model, "conv0")
    modules = dict(model.named_modules())
    for forward in (lambda: B._forward(model, modules, [spec], x, False)[0],
                    lambda: B._forward_graph(model, modules, [spec], x, False, False)[0]):
        recorder = forward()
        assert {s.name for s in recorder.sources if s.between} == ({"act"} if k == 0 else set())
        recorder.release()
    sources = bias_sources(model, x, None, "conv0")
    expected = pw.decompose(model, x, None, ["conv0"]).bias["conv0"]
    attributed = torch.stack([v for n, v in sources.items() if n != REMAINDER]).sum(0)
    assert sources["act"].abs().min() > 0
    torch.testing.assert_close(attributed, expected, rtol=1e-12, atol=1e-13)


def test_a_bias_shared_by_two_layers_or_reused_in_functional_code_goes_to_the_tracer(x2):
    class Shared(nn.Module):
        def __init__(self, functional: bool):
            super().__init__()
            torch.manual_seed(1)
            self.c, self.r = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
            self.f1, self.f2, self.fc = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 5)
            self.functional = functional
            if not functional:
                self.f2.bias = self.f1.bias

        def forward(self, x):
            v = self.r(self.c(x)).mean((2, 3))
            if self.functional:  # f1's own parameters used again outside its call
                return self.fc(self.r(F.linear(self.r(self.f1(v)), self.f1.weight, self.f1.bias)))
            return self.fc(self.r(self.f2(self.r(self.f1(v)))))

    for functional, names in [(False, ["f1", "f2"]), (True, ["f1", "f1.bias"])]:
        model = Shared(functional).double().eval()
        for batch in (1, 2):
            B._ROUTES.pop(id(model), None)
            assert _routes(model, x2[:batch], None, "r@0")[:2] == [B.GRAPH, B.TRACE]
            sources = bias_sources(model, x2[:batch], None, "r@0")
            assert all(sources[n].abs().min() > 0 for n in names), list(sources)
            expected = pw.decompose(model, x2[:batch], None, ["r@0"]).bias["r@0"]
            attributed = torch.stack([v for n, v in sources.items() if n != REMAINDER]).sum(0)
            torch.testing.assert_close(attributed, expected, rtol=1e-12, atol=1e-13)


def test_batchnorm_statistics_changed_between_calls_are_read_again(x2):
    """Through ``.data`` (no version bump) and by replacing the buffer: the shifts are computed at every call."""
    model = vgg_bn_like()
    bias_sources(model, x2, None, "input")
    with torch.no_grad():
        model[1].running_mean.data.sub_(0.3)
    model[5].running_var = torch.rand(16, dtype=torch.float64) + 0.5
    sources = bias_sources(model, x2, None, "input")
    expected = pw.decompose(model, x2, None, ["input"]).bias["input"]
    torch.testing.assert_close(sources.total() - sources.remainder, expected, rtol=1e-12, atol=1e-13)
    assert B._route(model, ("input",)) == B.GRAPH


def test_a_model_in_training_mode_is_left_as_found():
    """Running statistics and the random state are put back, whichever routes the call took (here two passes:
    BatchNorm in training mode sends the graph route to the tracer)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 2)).double().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    rng = torch.get_rng_state()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _routes(model, x, 0, "0", allow_non_affine=True)[:2] == [B.GRAPH, B.TRACE]
    said = " ".join(str(w.message) for w in caught)  # BatchNorm in training mode: no rule, so a remainder, said
    assert "not piece-wise affine" in said and "not attributed" in said
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_a_frozen_bias_between_a_cap_and_a_batchnorm_sends_the_cap_to_a_hook(x2):
    """The frozen bias leaves the convolution's gradient edge empty, as no bias would: the cap is not read from
    the two BatchNorms' parameter gradients (that would count the bias twice), so no rerun is needed."""
    model = _randomise_bn(_SecondUse(0.0), 3).double().eval()
    model.conv1 = nn.Conv2d(4, 4, 3, padding=1).double()
    model.conv1.bias.requires_grad_(False)
    x = x2[:1] * 20
    B._ROUTES.pop(id(model), None)
    assert _routes(model, x, None, "conv0") == [B.GRAPH, B.TRACE]  # no rerun with copies
    recorder, _ = B._forward(model, dict(model.named_modules()), [B.resolve_one(model, "conv0")], x, False)
    assert not any(s.between for s in recorder.sources)
    recorder.release()
    sources = bias_sources(model, x, None, "conv0")
    expected = pw.decompose(model, x, None, ["conv0"]).bias["conv0"]
    torch.testing.assert_close(sources.total() - sources.remainder, expected, rtol=1e-12, atol=1e-13)
    assert sources["act"].abs().min() > 0 and sources["conv1"].abs().min() > 0
