"""audit(), region_radius() and verify()."""

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


class Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.act(self.fc(x)))


class FunctionalSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return torch.sigmoid(self.fc(torch.relu(x)))


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        return self.a(x) * self.b(x)


def test_audit_flags_gelu_functional_sigmoid_and_products():
    report = pw.audit(Gelu().eval())
    assert not report.ok and [f.where for f in report.offending] == ["act"]
    report = pw.audit(FunctionalSigmoid().eval())
    assert not report.ok and "sigmoid" in str(report)
    report = pw.audit(Gated().eval())
    assert report.ok and report.unverified and "product" in str(report)
    with pytest.raises(ValueError, match="act.*GELU"):
        pw.decompose(Gelu().eval(), torch.randn(1, 4), 0)
    with pytest.warns(pw.ExactnessWarning, match="not piece-wise affine"):
        pw.decompose(Gelu().eval(), torch.randn(1, 4), 0, allow_non_affine=True)


def test_audit_flags_train_mode_batchnorm_and_dropout(small_cnn, vgg11, resnet18):
    assert pw.audit(vgg11).ok and pw.audit(resnet18).ok and pw.audit(small_cnn).ok
    small_cnn.train()
    report = pw.audit(small_cnn)
    assert {f.where for f in report.offending} == {"1", "13"}
    assert "model.eval()" in str(report)
    with pytest.raises(ValueError, match="training mode"):
        pw.decompose(small_cnn, torch.zeros(1, 3, 8, 8, dtype=torch.float64), 0)
    small_cnn.eval()
    assert pw.audit(small_cnn).ok


def test_audit_reports_untraceable_code_as_unverified():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow cannot be traced
                return self.fc(x)
            return -self.fc(x)

    report = pw.audit(Dynamic().eval())
    assert report.ok and not report.traced and "could not be traced" in str(report)


def test_tf32_rounding_and_simulation(vgg11, images64):
    x = torch.tensor([1.0, 1.0 + 2**-10, 1.0 + 2**-11 + 2**-13, 1.0 + 2**-12, 3.14159265], dtype=torch.float32)
    got = pw.exactness.round_to_tf32(x)
    assert got.tolist()[:4] == [1.0, 1.0 + 2**-10, 1.0 + 2**-10, 1.0]
    assert abs(got[4].item() - 3.14159265) <= 2**-10 * 2  # 10 mantissa bits at exponent 1
    tf32 = pw.exactness.simulate_tf32(vgg11)
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


def test_verify_refuses_a_point_on_a_region_edge():
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)).double().eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0), model[0].bias.fill_(-1.0)
    report = pw.verify(model, torch.tensor([[1.0]], dtype=torch.float64), 0,
                       direction=torch.tensor([[1.0]], dtype=torch.float64))
    assert float(report.radius[0]) == 0.0 and not report.ok and "region edge" in str(report)


def test_audit_checks_inside_custom_modules():
    class Centre(nn.Module):  # custom, but only affine operations with a constant buffer
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.full((1, 4), 0.5))

        def forward(self, x):
            return (x - self.mean) / self.mean

    class Squash(nn.Module):  # custom, with a smooth operation inside
        def forward(self, x):
            return torch.tanh(x)

    assert str(pw.audit(nn.Sequential(Centre(), nn.Linear(4, 2)).eval())).startswith("piece-wise affine")
    report = pw.audit(nn.Sequential(nn.Linear(4, 4), Squash(), nn.Linear(4, 2)).eval())
    assert not report.ok and "tanh" in str(report)
