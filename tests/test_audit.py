"""The audit judges each operation by what it does to values that depend on the input: both ways, every case."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pwawidgets as pw


class Wrap(nn.Module):
    """A model whose forward is a given function of the input and two linear layers."""

    def __init__(self, fn):
        super().__init__()
        self.lin, self.lin2 = nn.Linear(4, 4), nn.Linear(4, 2)
        self.W = nn.Parameter(torch.randn(4, 2))
        self.log_s = nn.Parameter(torch.zeros(4))
        self.fn = fn

    def forward(self, x):
        return self.fn(self, x)


AFFINE_CASES = {
    "matmul by a parameter": lambda m, x: torch.matmul(torch.relu(x), m.W),
    "@ by a parameter": lambda m, x: F.relu(m.lin(x)) @ m.W,
    "scale by exp of a parameter": lambda m, x: m.lin2(m.lin(x) * m.log_s.exp()),
    "divide by a parameter": lambda m, x: m.lin2(m.lin(x) / (1 + m.log_s.exp())),
    "mask times value": lambda m, x: m.lin2(m.lin(x) * (m.lin(x) > 0).float()),
    "where with a comparison": lambda m, x: m.lin2(torch.where(x > 0, x, 0.1 * x)),
    "clamp and abs": lambda m, x: m.lin2(m.lin(x).clamp(-1, 1) + x.abs()),
    "shape arithmetic padding": lambda m, x: m.lin2(F.pad(x, (0, 1 + x.shape[-1] % 2))[..., :4]),
    "max over a dimension": lambda m, x: m.lin2(x) + m.lin(x).max(dim=1, keepdim=True).values,
    "x ** 1": lambda m, x: m.lin2(x ** 1),
    "in-place relu": lambda m, x: m.lin2(m.lin(x).relu_()),
    "hardsigmoid": lambda m, x: m.lin2(F.hardsigmoid(m.lin(x))),
    "sorted values": lambda m, x: m.lin2(m.lin(x).sort(1).values),
    "top-k values": lambda m, x: m.lin2(F.pad(torch.topk(m.lin(x), 2, dim=1).values, (0, 2))),
    "k-th value and median": lambda m, x: m.lin2(x) + m.lin(x).kthvalue(2, 1, keepdim=True).values
    + m.lin(x).median(1, keepdim=True).values,
    "gather by argsort": lambda m, x: m.lin2(m.lin(x).gather(1, x.argsort(1))),
}

SMOOTH_CASES = {
    "product of two computed values": lambda m, x: m.lin2(m.lin(x) * m.lin(x)),
    "one over a computed value": lambda m, x: m.lin2(1.0 / m.lin(x)),
    "division by a computed value": lambda m, x: m.lin2(x / m.lin(x)),
    "hand-written GELU (erf)": lambda m, x: m.lin2(0.5 * m.lin(x) * (1 + torch.erf(m.lin(x) / 2 ** 0.5))),
    "in-place sigmoid": lambda m, x: m.lin2(m.lin(x).sigmoid_()),
    "where with a square": lambda m, x: m.lin2(torch.where(x > 0, x, x * x)),
    "erf alone": lambda m, x: m.lin2(torch.erf(x)),
    "square": lambda m, x: m.lin2(x ** 2),
    "matmul of two computed values": lambda m, x: m.lin2(torch.matmul(m.lin(x).unsqueeze(2), x.unsqueeze(1)).sum(2)),
    "exp of the input": lambda m, x: m.lin2(x.exp()),
    "detach": lambda m, x: m.lin2(m.lin(x).detach() + x),
    "softsign": lambda m, x: m.lin2(F.softsign(x)),
    "training dropout call": lambda m, x: m.lin2(F.dropout(x, 0.5)),
    "times its own sorted values": lambda m, x: m.lin2(m.lin(x) * m.lin(x).sort(1).values),
    "times its own top-k values": lambda m, x: m.lin2(m.lin(x) * m.lin(x).topk(4, 1)[0]),
    "times its own median": lambda m, x: m.lin2(m.lin(x) * m.lin(x).median(1, keepdim=True).values),
    "times its own k-th value": lambda m, x: m.lin2(x * torch.kthvalue(m.lin(x), 2, 1, True).values),
}


@pytest.mark.parametrize("name", sorted(AFFINE_CASES))
def test_piecewise_affine_forward_passes(name):
    model = Wrap(AFFINE_CASES[name]).eval()
    report = pw.audit(model)
    assert report.verified, f"{name}: {report}"
    pw.decompose(model, torch.randn(2, 4), 0, strict=True)  # no refusal, no warning


@pytest.mark.parametrize("name", sorted(SMOOTH_CASES))
def test_non_affine_forward_is_refused(name):
    model = Wrap(SMOOTH_CASES[name]).eval()
    report = pw.audit(model)
    assert not report.ok, f"{name}: {report}"
    with pytest.raises(ValueError, match="allow_non_affine"):
        pw.decompose(model, torch.randn(2, 4), 0)


def test_modules_by_kind_and_mode():
    assert pw.audit(nn.Sequential(nn.Linear(4, 4), nn.Softsign(), nn.Linear(4, 2)).eval()).offending
    assert pw.audit(nn.Sequential(nn.Linear(4, 4), nn.Hardsigmoid(), nn.Linear(4, 2)).eval()).verified
    assert pw.audit(nn.Sequential(nn.Linear(4, 4), nn.Hardswish(), nn.Linear(4, 2)).eval()).offending
    rrelu = nn.Sequential(nn.Linear(4, 4), nn.RReLU(), nn.Linear(4, 2))
    assert "random negative slopes" in str(pw.audit(rrelu.train()))
    assert pw.audit(rrelu.eval()).verified
    assert pw.audit(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)).eval()).offending


class Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.act(self.fc(x)))


def test_offending_module_is_named_and_decompose_refuses_it():
    report = pw.audit(Gelu().eval())
    assert not report.ok and [f.where for f in report.offending] == ["act"]
    with pytest.raises(ValueError, match="act.*GELU"):
        pw.decompose(Gelu().eval(), torch.randn(1, 4), 0)
    with pytest.warns(pw.ExactnessWarning, match="not piece-wise affine"):
        pw.decompose(Gelu().eval(), torch.randn(1, 4), 0, allow_non_affine=True)


def test_train_mode_batchnorm_and_dropout(small_cnn, vgg11, resnet18):
    assert pw.audit(vgg11).verified and pw.audit(resnet18).verified and pw.audit(small_cnn).verified
    small_cnn.train()
    report = pw.audit(small_cnn)
    assert {f.where for f in report.offending} == {"1", "13"}
    assert "model.eval()" in str(report)
    with pytest.raises(ValueError, match="training mode"):
        pw.decompose(small_cnn, torch.zeros(1, 3, 8, 8, dtype=torch.float64), 0)
    small_cnn.eval()
    assert pw.audit(small_cnn).ok


class Dynamic(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow cannot be traced
            return self.fc(x)
        return -self.fc(x)


def test_untraceable_code_is_unverified_and_decompose_warns_or_raises():
    report = pw.audit(Dynamic().eval())
    assert report.ok and not report.verified and not report.traced and "could not be traced" in str(report)
    with pytest.warns(pw.ExactnessWarning, match="could not be traced"):
        pw.decompose(Dynamic().eval(), torch.ones(1, 3), 0)
    with pytest.raises(ValueError, match="strict=True"):
        pw.decompose(Dynamic().eval(), torch.ones(1, 3), 0, strict=True)


def test_unknown_operation_is_unverified():
    model = Wrap(lambda m, x: m.lin2(torch.special.i0(x))).eval()
    report = pw.audit(model)
    assert report.ok and report.unverified and "unknown" in str(report)


def test_custom_modules_are_checked_inside():
    class Centre(nn.Module):  # custom, but only affine operations with a constant buffer
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.full((1, 4), 0.5))

        def forward(self, x):
            return (x - self.mean) / self.mean

    class Squash(nn.Module):  # custom, with a smooth operation inside
        def forward(self, x):
            return torch.tanh(x)

    assert pw.audit(nn.Sequential(Centre(), nn.Linear(4, 2)).eval()).verified
    report = pw.audit(nn.Sequential(nn.Linear(4, 4), Squash(), nn.Linear(4, 2)).eval())
    assert not report.ok and "tanh" in str(report)


class Switchable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.smooth = False

    def forward(self, x):
        return torch.sigmoid(self.fc(x)) if self.smooth else self.fc(torch.relu(x))


def test_cache_follows_flags_modes_and_replaced_modules():
    model = Switchable().eval()
    assert pw.audit(model).verified
    model.smooth = True  # a Python flag switches a smooth path on
    assert not pw.audit(model).ok
    model.smooth = False
    assert pw.audit(model).verified

    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    assert pw.audit(net).verified
    net[1].track_running_stats = False  # now uses batch statistics
    assert "batch statistics" in str(pw.audit(net))
    net[1].track_running_stats = True
    net[2] = nn.Tanh()  # replaced in place
    assert not pw.audit(net).ok


def test_a_setting_edited_in_place_is_seen_at_once():
    """forward switches on a config dict edited in place: no cached verdict may outlive the edit."""

    class Configured(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.config = {"smooth": False}

        def forward(self, x):
            return torch.sigmoid(self.fc(x)) if self.config["smooth"] else self.fc(torch.relu(x))

    model = Configured().eval()
    assert pw.audit(model).verified
    model.config["smooth"] = True
    assert not pw.audit(model).ok
    with pytest.raises(ValueError, match="sigmoid"):
        pw.decompose(model, torch.randn(1, 4), 0)
    model.config["smooth"] = False
    assert pw.audit(model).verified


def test_the_report_belongs_to_the_caller():
    model = Switchable().eval()
    report = pw.audit(model)
    report.offending.append("tampered")
    assert pw.audit(model).verified


def test_the_non_affine_warning_says_each_thing_once():
    with pytest.warns(pw.ExactnessWarning) as caught:
        pw.decompose(Gelu().eval(), torch.randn(1, 4), 0, allow_non_affine=True)
    lines = str(caught[0].message).splitlines()
    assert lines[0] == "not piece-wise affine here:" and "allow_non_affine=True" in lines[-1]
    assert len(lines) == len(set(lines))


def test_embedding_output_is_a_new_variable():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.fc = nn.Linear(4, 3)

        def forward(self, ids):
            return self.fc(torch.relu(self.embed(ids)).mean(1))

    assert pw.audit(Tokens().eval()).verified
    bad = Wrap(lambda m, x: m.lin2(torch.sigmoid(x))).eval()
    assert not pw.audit(bad).ok


def test_hooks_are_unverified():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    handle = net[1].register_forward_hook(lambda module, args, out: torch.sigmoid(out))
    report = pw.audit(net)
    assert report.ok and not report.verified and "hook" in str(report)
    with pytest.warns(pw.ExactnessWarning, match="hook"):
        pw.decompose(net, torch.randn(1, 4), 0)
    handle.remove()
    assert pw.audit(net).verified  # the cache follows hooks too


def test_reductions_over_the_batch_axis_are_unverified():
    across = Wrap(lambda m, x: m.lin2(m.lin(x) - m.lin(x).mean(0))).eval()
    assert "batch axis" in str(pw.audit(across))
    whole = Wrap(lambda m, x: m.lin2(x) - x.sum()).eval()
    assert "batch axis" in str(pw.audit(whole))
    within = Wrap(lambda m, x: m.lin2(m.lin(x) - m.lin(x).mean(1, keepdim=True))).eval()
    assert pw.audit(within).verified


AUDIT_MODULE = importlib.import_module("pwawidgets.audit")


class Settable(nn.Module):
    """forward reads a Python setting: a ReLU, a sigmoid, or a product of two computed values."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 2)
        self.mode = "relu"

    def forward(self, x):
        h = self.fc(x)
        h = {"relu": torch.relu, "sigmoid": torch.sigmoid, "square": lambda v: v * v}[self.mode](h)
        return self.out(h)


def test_a_kept_verdict_is_watched_on_every_pass(monkeypatch):
    """decompose keeps the audit's verdict for an unchanged model and traces it again only when the pass runs an
    operation that verdict does not cover: a setting flipped between two calls is caught before any backward."""
    calls = []
    real = AUDIT_MODULE.audit
    monkeypatch.setattr(AUDIT_MODULE, "audit", lambda *a, **k: calls.append(1) or real(*a, **k))
    model, x = Settable().double().eval(), torch.randn(2, 4, dtype=torch.float64)
    pw.decompose(model, x, 0)
    pw.decompose(model, x, 0)
    assert len(calls) == 1  # the second pass ran only covered operations: no second trace
    for mode, match in (("sigmoid", "sigmoid"), ("square", "product")):
        model.mode = mode
        with pytest.raises(ValueError, match=match):
            pw.decompose(model, x, 0)
    model.mode = "relu"
    before = len(calls)
    torch.testing.assert_close(pw.decompose(model, x, 0).bias["input"], pw.decompose(model, x, 0).bias["input"])
    assert len(calls) == before + 1  # traced once after the state it was kept for changed, then kept again


def test_a_changed_module_or_mode_is_audited_before_the_pass():
    model, x = Settable().eval(), torch.randn(2, 4)
    pw.decompose(model, x, 0)
    model.fc = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    with pytest.raises(ValueError, match="GELU"):
        pw.decompose(model, x, 0)
    model.fc = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
    pw.decompose(model, x, 0)
    model.fc.train()
    with pytest.raises(ValueError, match="training mode"):
        pw.decompose(model, x, 0)
