"""region_radius() and verify(): against brute force, inside and beyond the region, and on bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pwawidgets as pw


def _pattern(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Activation pattern of every ReLU and the argmax of every max-pool window (independent of the engine)."""
    pattern = []
    h = x
    for module in model:
        if isinstance(module, nn.MaxPool2d):
            h, idx = nn.functional.max_pool2d(h, module.kernel_size, module.stride, return_indices=True)
            pattern.append(idx)
            continue
        h = module(h)
        if isinstance(module, nn.ReLU):
            pattern.append(h > 0)
    return pattern


def _first_switch(model: nn.Module, x: torch.Tensor, d: torch.Tensor, hi: float) -> float:
    """Smallest t where the pattern changes, by a scan then bisection."""
    base = _pattern(model, x)

    def same(t: float) -> bool:
        return all(torch.equal(a, b) for a, b in zip(base, _pattern(model, x + t * d), strict=True))

    grid = torch.linspace(0, hi, 2001, dtype=torch.float64)[1:]
    prev = 0.0
    for t in grid.tolist():
        if not same(t):
            lo, up = prev, t
            break
        prev = t
    else:
        return float("inf")
    for _ in range(60):
        mid = (lo + up) / 2
        lo, up = (mid, up) if same(mid) else (lo, mid)
    return up


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_radius_equals_first_pattern_switch(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4, 3),
    ).double().eval()
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    d = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    radius = float(pw.region_radius(model, x, d)[0])
    brute = _first_switch(model, x, d, hi=min(1.0, 20 * radius))
    assert radius == pytest.approx(brute, rel=1e-8)


def test_region_radius_of_an_affine_model_is_infinite():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    r = pw.region_radius(model, torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    assert torch.isinf(r).all() and r.shape == (2,)


def test_verify_inside_and_outside_the_region(small_cnn, vgg11, resnet18, images64):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for model, inputs, layers in ((small_cnn, x, [None, "2", "5"]),
                                  (vgg11, images64[:1], [None, "conv2", "conv4"]),
                                  (resnet18, images64[:1], [None, "layer1", "layer3"])):
        for layer in layers:
            report = pw.verify(model, inputs, 1, layer)
            assert report.ok, f"{layer}: {report}"
            assert report.max_error < 1e-6


def test_verify_fails_beyond_the_region():
    """f(x) = relu(x - 1) + x at x = 0.5 along +1: radius 0.5; one radius further the slope is 2, not 1."""
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        model[0].bias.copy_(torch.tensor([-1.0, 10.0]))
        model[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
        model[2].bias.copy_(torch.tensor([-10.0]))
    x, d = torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64)
    report = pw.verify(model, x, 0, direction=d, steps=(0.5, 0.99, 2.0))
    assert float(report.radius[0]) == pytest.approx(0.5, rel=1e-12)
    assert report.ok and report.max_error < 1e-12
    # at t = 1: f changes by 1 + 0.5 = 1.5, the affine prediction says 1.0
    assert float(report.rel_error[0, 2]) == pytest.approx(0.5, rel=1e-9)
    strict = pw.verify(model, x, 0, direction=d, steps=(2.0,))
    assert strict.inside == [] and strict.max_error != strict.max_error  # NaN: no step inside


def test_verify_shows_float32_loses_exactness(vgg11, images64):
    report = pw.verify(vgg11, images64[:1], 2, steps=(0.01,), dtype=torch.float32)
    assert report.rel_error.max() > 1e-3  # small steps are lost in float32 rounding
    assert "rounding" in str(report) or not report.ok


def test_verify_refuses_a_point_on_a_region_edge():
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)).double().eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0), model[0].bias.fill_(-1.0)
    report = pw.verify(model, torch.tensor([[1.0]], dtype=torch.float64), 0,
                       direction=torch.tensor([[1.0]], dtype=torch.float64))
    assert float(report.radius[0]) == 0.0 and not report.ok and "region edge" in str(report)


def _first_kink(model: nn.Module, x: torch.Tensor, d: torch.Tensor, hi: float) -> float:
    """Smallest t at which the logits stop following their tangent at x (brute force, float64)."""
    x = x.double()
    with torch.no_grad():
        base = model(x)
    slope = torch.autograd.functional.jvp(model, x, d)[1].detach()

    def affine(t: float) -> bool:
        with torch.no_grad():
            out = model(x + t * d)
        return bool(((out - base - t * slope).abs() <= 1e-12 * (1 + base.abs())).all())

    grid = torch.linspace(0, hi, 4001, dtype=torch.float64)[1:].tolist()
    prev = 0.0
    for t in grid:
        if not affine(t):
            lo, up = prev, t
            break
        prev = t
    else:
        return float("inf")
    for _ in range(60):
        mid = (lo + up) / 2
        lo, up = (mid, up) if affine(mid) else (lo, mid)
    return up


class Functional(nn.Module):
    """Piece-wise parts called as functions inside forward: relu, clamp, maximum, max-pool, a comparison."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = torch.nn.functional.relu(self.conv(x))
        h = torch.clamp(h, max=0.8) + torch.maximum(h, 0.3 * x.mean(1, keepdim=True))
        h = torch.nn.functional.max_pool2d(h, 2)
        return self.fc(torch.where(h > 0.2, h, 0.5 * h).flatten(1))


def _functional_pattern(model: Functional, x: torch.Tensor) -> list[torch.Tensor]:
    """Every switch state of Functional's forward, written out by hand (independent of the engine)."""
    z = model.conv(x)
    h = torch.relu(z)
    m = 0.3 * x.mean(1, keepdim=True)
    g = torch.clamp(h, max=0.8) + torch.maximum(h, m)
    pooled, idx = torch.nn.functional.max_pool2d(g, 2, return_indices=True)
    return [z > 0, h > 0.8, h > m, idx, pooled > 0.2]


@pytest.mark.parametrize("seed", [0, 1])
def test_region_radius_sees_functional_calls(seed):
    torch.manual_seed(seed)
    model = Functional().double().eval()
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    d = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    radius = float(pw.region_radius(model, x, d)[0])
    assert 0 < radius < float("inf")
    base = _functional_pattern(model, x)

    def same(t: float) -> bool:
        return all(torch.equal(a, b) for a, b in zip(base, _functional_pattern(model, x + t * d), strict=True))

    assert same(radius * (1 - 1e-9)) and not same(radius * (1 + 1e-9))


def test_region_radius_counts_relu6_caps():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU6(), nn.Linear(8, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.mul_(20)  # large pre-activations: several units sit above the cap of 6
    x = torch.randn(1, 3, dtype=torch.float64)
    with torch.no_grad():
        z = model[0](x)
    assert (z > 6).any(), "the test needs capped units"
    d = torch.randn(1, 3, dtype=torch.float64)
    radius = float(pw.region_radius(model, x, d)[0])
    rate = (d @ model[0].weight.T).detach()
    steps = [((level - z) / rate)[((level - z) / rate) > 0] for level in (0.0, 6.0)]
    assert radius == pytest.approx(float(torch.cat(steps).min()), rel=1e-12)
    assert radius == pytest.approx(_first_kink(model, x, d, hi=20 * radius), rel=1e-6)


def test_region_radius_refuses_ambiguous_layers_and_bad_numbers(resnet18, images64):
    x = images64[:1]
    with pytest.raises(ValueError, match="ran 2 times.*layer1.0.relu@0"):
        pw.region_radius(resnet18, x, torch.randn(1, 64, 16, 16, dtype=torch.float64), "layer1.0.relu")
    r = pw.region_radius(resnet18, x, torch.randn(1, 64, 16, 16, dtype=torch.float64), "layer1.0.relu@1")
    assert r.shape == (1,) and 0 < float(r[0]) < float("inf")
    with pytest.raises(ValueError, match="names several layers"):
        pw.region_radius(resnet18, x, x, "blocks")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"inputs holds NaN"):
        pw.region_radius(resnet18, bad, x)
    with pytest.raises(ValueError, match="the direction holds NaN"):
        pw.region_radius(resnet18, x, bad)
    with pytest.raises(ValueError, match="direction has shape"):
        pw.region_radius(resnet18, x, x[:, :2])
    with pytest.raises(ValueError, match="direction has shape"):
        pw.region_radius(resnet18, x, x, "layer2")


def test_models_without_parameters():
    model = nn.Sequential(nn.ReLU(), nn.Flatten()).eval()
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    r = pw.region_radius(model, x, torch.tensor([[-1.0, 1.0]], dtype=torch.float64))
    assert float(r[0]) == pytest.approx(1.0)
    report = pw.verify(model, x, 0, direction=torch.tensor([[-1.0, 0.0]], dtype=torch.float64))
    assert report.ok


def test_verify_names_one_layer(vgg11, images64):
    with pytest.raises(ValueError, match="names several layers.*conv1"):
        pw.verify(vgg11, images64[:1], 0, layer="blocks")
    with pytest.raises(ValueError, match="unknown layer"):
        pw.verify(vgg11, images64[:1], 0, layer="no_such_layer")
    with pytest.raises(ValueError, match="one class per example"):
        pw.verify(vgg11, images64[:1], "top2")
    with pytest.raises(ValueError, match="direction has shape"):
        pw.verify(vgg11, images64[:1], 0, direction=torch.zeros(1, 3, 8, 8))


class InPlaceInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))

    def forward(self, x):
        x.sub_(0.5)
        return self.body(x)


def test_region_radius_refuses_what_decompose_refuses():
    x, d = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    smooth = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)).double().eval()
    with pytest.raises(ValueError, match="allow_non_affine"):
        pw.region_radius(smooth, x, d)
    assert torch.isinf(pw.region_radius(smooth, x, d, allow_non_affine=True)).all()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside torch.inference_mode"):
        pw.region_radius(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), x, d)

    class Cut(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return torch.relu(self.lin(x.detach() * 0 + 1))

    with pytest.raises(ValueError, match="cuts it off|allow_non_affine"):
        pw.region_radius(Cut().double().eval(), x, d)


def test_radius_and_verify_leave_the_callers_tensors_alone():
    torch.manual_seed(0)
    model = InPlaceInput().double().eval()
    x, d = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    before = x.clone()
    radius = pw.region_radius(model, x, d)
    assert torch.equal(x, before) and torch.isfinite(radius).all()
    assert pw.verify(model, x, 0, direction=d).ok and torch.equal(x, before)
    r32 = pw.region_radius(model.float(), x, d)  # float64 point, float32 model: converted like decompose
    assert r32.dtype == torch.float32


def test_verify_arguments_are_checked():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    x = torch.randn(1, 3, dtype=torch.float64)
    cases = [
        (dict(steps=(0.5, float("nan"))), ValueError, "positive fractions"),
        (dict(steps=(-0.5,)), ValueError, "positive fractions"),
        (dict(steps="abc"), TypeError, "fractions of the region radius"),
        (dict(tol=-1), ValueError, "tol must be"),
        (dict(dtype="float64"), TypeError, "floating torch.dtype"),
        (dict(dtype=torch.int64), TypeError, "floating torch.dtype"),
        (dict(seed="a"), TypeError, "seed must be an int"),
        (dict(direction=torch.zeros(1, 3)), ValueError, "direction is zero"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            pw.verify(model, x, 0, **kwargs)
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        pw.verify(model, x.numpy(), 0)
    report = pw.verify(model, x, 0, steps=0.5)  # one number is one step
    assert report.steps == (0.5,) and report.ok
    outside = pw.verify(model, x, 0, steps=(2.0,))
    assert not outside.ok and "no step inside the region" in str(outside)


class Ordered(nn.Module):
    """A linear map, then an operation that reads the order of its outputs."""

    def __init__(self, op):
        super().__init__()
        self.lin = nn.Linear(4, 7)
        self.op = op

    def forward(self, x):
        return self.op(self.lin(x))


ORDER_OPS = {  # the operation, and the state it switches on, written out independently
    "sort": (lambda z: z.sort(1).values, lambda z: torch.argsort(z, dim=1, stable=True)),
    "sort descending": (lambda z: torch.sort(z, 1, descending=True)[0], lambda z: torch.argsort(z, dim=1, stable=True)),
    "topk": (lambda z: z.topk(3, 1).values, lambda z: torch.argsort(z, dim=1, descending=True, stable=True)[:, :3]),
    "topk smallest": (lambda z: torch.topk(z, 2, dim=1, largest=False).values,
                      lambda z: torch.argsort(z, dim=1, stable=True)[:, :2]),
    "kthvalue": (lambda z: z.kthvalue(3, 1, keepdim=True).values, lambda z: torch.argsort(z, dim=1, stable=True)[:, 2]),
    "median": (lambda z: z.median(1, keepdim=True).values, lambda z: torch.argsort(z, dim=1, stable=True)[:, 3]),
    "gather by argsort": (lambda z: z.gather(1, z.argsort(1)[:, :2]), lambda z: torch.argsort(z, dim=1, stable=True)),
    "min": (lambda z: z.min(1, keepdim=True).values, lambda z: z.argmin(1)),
    "amin": (lambda z: z.amin(1, keepdim=True), lambda z: z.argmin(1)),
    "gather by argmin": (lambda z: z.gather(1, z.argmin(1, keepdim=True)), lambda z: z.argmin(1)),
    "index by argmax over everything": (lambda z: z + z.flatten()[torch.argmax(z)], lambda z: torch.argmax(z)),
}


@pytest.mark.parametrize("name", sorted(ORDER_OPS))
@pytest.mark.parametrize("seed", [0, 1])
def test_order_reading_operations_are_switches(name, seed):
    """sort, topk, kthvalue, median, argsort gathers and min: the radius is the first change of the order they read,
    found by bisection on the order itself."""
    op, state = ORDER_OPS[name]
    torch.manual_seed(seed)
    model = Ordered(op).double().eval()
    x, d = torch.randn(1, 4, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    assert pw.audit(model).verified
    with torch.no_grad():
        base = state(model.lin(x))
    finite = 0
    for direction in (d, -d):  # one of them meets a switch (a minimum with the lowest rate never switches forward)
        radius = float(pw.region_radius(model, x, direction)[0])

        def same(t: float, direction=direction) -> bool:
            with torch.no_grad():
                return torch.equal(state(model.lin(x + t * direction)), base)

        if radius == float("inf"):
            assert same(1e3) and same(1e6)
            continue
        finite += 1
        lo, up = 0.0, 1.0
        while same(up):
            lo, up = up, 2 * up
        for _ in range(60):
            mid = (lo + up) / 2
            lo, up = (mid, up) if same(mid) else (lo, mid)
        assert radius == pytest.approx(up, rel=1e-9)
    assert finite


def test_verify_checks_a_non_affine_model_when_allowed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3)).double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="allow_non_affine"):
        pw.verify(model, x)
    with pytest.warns(pw.ExactnessWarning) as caught:
        report = pw.verify(model, x, allow_non_affine=True)
    assert len(caught) == 1  # said once, not once per inner call
    assert not report.ok and "NOT affine" in str(report) and "GELU" in str(report)
    # the error it reports is the network's own departure from its tangent, computed here with autograd
    d = torch.randn(2, 4, dtype=torch.float64)
    with pytest.warns(pw.ExactnessWarning):
        report = pw.verify(model, x, 1, direction=d, steps=(0.5,), allow_non_affine=True)  # radius inf: t = 0.5
    xg = x.clone().requires_grad_(True)
    (w,) = torch.autograd.grad(model(xg)[:, 1].sum(), xg)
    with torch.no_grad():
        expected = (model(x + 0.5 * d)[:, 1] - model(x)[:, 1] - 0.5 * (w * d).sum(1)).abs()
    assert torch.allclose(report.abs_error[:, 0], expected, rtol=1e-9, atol=1e-15)
    with pytest.raises(TypeError, match="allow_non_affine must be True or False"):
        pw.verify(model, x, allow_non_affine="yes")


def test_verify_at_a_layer_leaves_a_float64_input_alone():
    torch.manual_seed(0)
    model = InPlaceInput().double().eval()
    x = torch.randn(2, 3, dtype=torch.float64)
    before = x.clone()
    report = pw.verify(model, x, 0, layer="body.1")
    assert torch.equal(x, before) and report.ok
