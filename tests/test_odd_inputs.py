"""A round of odd and bad inputs, tried as a user would: models, inputs, targets and layers, images, metrics.

Each case expects a clear error that names what is wrong (the argument, or the value), a warning, or a correct
result checked against an independent computation (autograd, hand-written masks). Arguments are passed by position
where the package may still rename them.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import pwawidgets as pw
from pwawidgets import baselines, metrics, regions, robustness
from pwawidgets import fidelity as fd

F64 = torch.float64


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double().eval()


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 6)).double().eval()


class Fn(nn.Module):
    """A model whose forward is ``fn(self, x)``, with two linear layers to use."""

    def __init__(self, fn: Callable, dtype=F64):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.lin2 = nn.Linear(4, 4), nn.Linear(4, 3)
        self.fn = fn
        self.to(dtype).eval()

    def forward(self, x):
        return self.fn(self, x)


class EditsInput(nn.Module):
    """Normalises its input in place, as some user code does."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        x.sub_(0.25).mul_(2.0)
        return self.body(x)


def x4(batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, 4, dtype=F64)


def img(batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, 3, 8, 8, dtype=F64)


def autograd_gradient(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """The gradient of one logit with respect to the input, by plain autograd (the oracle)."""
    xg = x.detach().to(F64).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg)[:, target].sum(), xg)
    return g


# ------------------------------------------------------------------------------------------------- checks


def raises(error: type[BaseException], pattern: str, fn: Callable) -> Callable:
    def check():
        with pytest.raises(error, match=pattern):
            fn()
    return check


def warns(pattern: str, fn: Callable, category=pw.ExactnessWarning) -> Callable:
    def check():
        with pytest.warns(category, match=pattern):
            fn()
    return check


def leaves_alone(call: Callable[[torch.Tensor], object], make: Callable[[], torch.Tensor]) -> Callable:
    """``call(x)`` must not change ``x``."""
    def check():
        x = make()
        before = x.clone()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(x)
        assert torch.equal(x, before), "the caller's tensor was changed"
    return check


# -------------------------------------------------------------------------------------------- model cases


def _sort_times_itself():
    assert not pw.audit(Fn(lambda m, x: m.lin2(m.lin(x) * m.lin(x).sort(1).values))).ok


def _topk_times_itself():
    assert not pw.audit(Fn(lambda m, x: m.lin2(m.lin(x) * m.lin(x).topk(4, 1).values))).ok


def _sort_radius():
    model = Fn(lambda m, x: m.lin2(m.lin(x).sort(1).values))
    x, d = x4(1), torch.ones(1, 4, dtype=F64)
    radius = float(pw.region_radius(model, x, d)[0])
    with torch.no_grad():
        z, dz = model.lin(x)[0], (model.lin(x + d) - model.lin(x))[0]
    # the first t >= 0 at which two entries meet, pair by pair
    meets = [float((z[j] - z[i]) / (dz[i] - dz[j])) for i in range(4) for j in range(4)
             if i != j and dz[i] != dz[j] and (z[j] - z[i]) / (dz[i] - dz[j]) > 0]
    assert radius == pytest.approx(min(meets, default=math.inf), rel=1e-12)


def _median_over_batch():
    report = pw.audit(Fn(lambda m, x: m.lin2(m.lin(x) - m.lin(x).median())))
    assert "batch axis" in str(report)


def _config_dict_switch():
    model = Fn(lambda m, x: torch.tanh(m.lin2(x)) if m.cfg["smooth"] else m.lin2(torch.relu(x)))
    model.cfg = {"smooth": False}
    assert pw.audit(model).verified
    model.cfg["smooth"] = True
    assert not pw.audit(model).ok


def _verify_non_affine():
    model = nn.Sequential(nn.Linear(4, 5), nn.SiLU(), nn.Linear(5, 3)).double().eval()
    with pytest.warns(pw.ExactnessWarning) as caught:
        report = pw.verify(model, x4(), 0, allow_non_affine=True)
    assert len(caught) == 1 and not report.ok and "SiLU" in str(report)


def _no_param_model():
    model = nn.Sequential(nn.Flatten(), nn.ReLU()).eval()
    x = x4()
    dec = pw.decompose(model, x, 0, ["input"], keep_gradients=True)
    assert torch.equal(dec.gradient("input"), autograd_gradient(model.double(), x, 0))


def _hook_warns():
    model = mlp()
    model[1].register_forward_hook(lambda mod, args, out: out * 2)
    with pytest.warns(pw.ExactnessWarning, match="hook"):
        pw.decompose(model, x4(), 0)


def _batchnorm_training():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double().train()
    with pytest.raises(ValueError, match="training mode"):
        pw.decompose(model, x4(), 0)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x) if x.sum() > 0 else -self.lin(x)


def _untraceable_warns():
    with pytest.warns(pw.ExactnessWarning, match="trace"):
        pw.decompose(DataDependent().double().eval(), x4(), 0)


MODELS = {
    "product with its own sort is refused": _sort_times_itself,
    "product with its own top-k is refused": _topk_times_itself,
    "sorted values: radius is the first meeting of two entries": _sort_radius,
    "median over the whole batch is unverified": _median_over_batch,
    "a config dict edited in place is seen": _config_dict_switch,
    "verify a SiLU model with allow_non_affine": _verify_non_affine,
    "a model without parameters": _no_param_model,
    "a forward hook warns": _hook_warns,
    "BatchNorm in training mode is refused": _batchnorm_training,
    "an untraceable forward warns": _untraceable_warns,
    "a tuple output is refused": raises(ValueError, "logits", lambda: pw.decompose(
        Fn(lambda m, x: (m.lin2(x), x)), x4(), 0)),
    "a dict output is refused": raises(ValueError, "logits", lambda: pw.decompose(
        Fn(lambda m, x: {"logits": m.lin2(x)}), x4(), 0)),
    "a 1-D output is refused": raises(ValueError, "logits", lambda: pw.decompose(
        Fn(lambda m, x: m.lin2(x).sum(1)), x4(), 0)),
    "detach in forward is refused": raises(ValueError, "allow_non_affine", lambda: pw.decompose(
        Fn(lambda m, x: m.lin2(m.lin(x).detach() + x)), x4(), 0)),
    "the audit of something not a module": raises(TypeError, "nn.Module|module", lambda: pw.audit("resnet18")),
    "allow_non_affine as a string": raises(TypeError, "allow_non_affine", lambda: pw.decompose(
        mlp(), x4(), 0, allow_non_affine="yes")),
    "strict as a string": raises(TypeError, "strict", lambda: pw.decompose(mlp(), x4(), 0, strict="no")),
    "region_radius allow_non_affine as a number": raises(TypeError, "allow_non_affine", lambda: pw.region_radius(
        mlp(), x4(), x4(), allow_non_affine=1)),
}

# -------------------------------------------------------------------------------------------- input cases


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = math.nan
    return t


def _inf(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[-1] = math.inf
    return t


def _gradient_matches(make: Callable[[], torch.Tensor], model_fn=cnn) -> Callable:
    def check():
        model, x = model_fn(), make()
        dec = pw.decompose(model, x, 2, ["input"], keep_gradients=True)
        assert torch.allclose(dec.gradient("input"), autograd_gradient(model, x.contiguous(), 2), rtol=1e-12,
                              atol=1e-14)
    return check


def _requires_grad_input():
    model, x = cnn(), img().requires_grad_(True)
    dec = pw.decompose(model, x, 1, ["input"], keep_gradients=True)
    assert x.grad is None and x.requires_grad
    assert torch.allclose(dec.gradient("input"), autograd_gradient(model, x, 1), rtol=1e-12, atol=1e-14)


def _inference_tensor():
    model = cnn()
    with torch.inference_mode():
        x = img()
    dec = pw.decompose(model, x, 0, ["input"], keep_gradients=True)
    assert torch.allclose(dec.gradient("input"), autograd_gradient(model, x.clone(), 0), rtol=1e-12, atol=1e-14)


def _float32_input():
    model, x = cnn(), img().float()
    dec = pw.decompose(model, x, 3, ["input"], keep_gradients=True)
    assert dec.gradient("input").dtype == F64
    assert torch.allclose(dec.gradient("input"), autograd_gradient(model, x.double(), 3), rtol=1e-12, atol=1e-14)


INPUTS = {
    "NaN to decompose": raises(ValueError, "NaN", lambda: pw.decompose(mlp(), _nan(x4()), 0)),
    "inf to decompose": raises(ValueError, "NaN or infinite", lambda: pw.decompose(mlp(), _inf(x4()), 0)),
    "NaN to region_radius": raises(ValueError, "NaN", lambda: pw.region_radius(mlp(), _nan(x4()), x4())),
    "NaN direction to region_radius": raises(ValueError, "direction.*NaN", lambda: pw.region_radius(
        mlp(), x4(), _nan(x4()))),
    "NaN to verify": raises(ValueError, "NaN", lambda: pw.verify(mlp(), _nan(x4()), 0)),
    "NaN to attribute": raises(ValueError, "inputs.*NaN", lambda: baselines.attribute(
        "gradient", cnn(), _nan(img()), 0, "input")),
    "inf to attribute": raises(ValueError, "inputs.*infinite", lambda: baselines.attribute(
        "gradcam", cnn(), _inf(img()), 0, "1")),
    "NaN to metrics.fidelity": raises(ValueError, "inputs.*NaN", lambda: metrics.fidelity(
        cnn(), _nan(img()), torch.rand(2, 8, 8), 0.3, 3)),
    "NaN to masked_topk_overlap": raises(ValueError, "masked.*NaN", lambda: metrics.masked_topk_overlap(
        cnn(), img(), _nan(img()), 3)),
    "NaN to robustness.gaussian": raises(ValueError, "inputs.*NaN", lambda: robustness.gaussian(cnn(), _nan(img()))),
    "NaN to robustness.fgsm": raises(ValueError, "inputs.*NaN", lambda: robustness.fgsm(cnn(), _nan(img()))),
    "NaN in fidelity.evaluate data": raises(ValueError, "NaN", lambda: fd.evaluate(
        cnn(), _nan(img()), ("ours",), ["1"], progress=False)),
    "uint8 image": raises(TypeError, "uint8", lambda: pw.decompose(cnn(), (img() * 50).to(torch.uint8), 0)),
    "bool input": raises(TypeError, "bool", lambda: pw.decompose(mlp(), x4() > 0, 0)),
    "complex input": raises(TypeError, "complex", lambda: pw.decompose(mlp(), x4().to(torch.complex128), 0)),
    "empty batch": raises(ValueError, "at least one example", lambda: pw.decompose(mlp(), x4()[:0], 0)),
    "0-d input": raises(ValueError, "batch", lambda: pw.decompose(mlp(), torch.tensor(1.0), 0)),
    "unbatched image": raises(RuntimeError, "shape", lambda: pw.decompose(cnn(), img()[0], 0)),
    "integer input at the input layer": raises(ValueError, "integer", lambda: pw.decompose(
        mlp(), torch.ones(2, 4, dtype=torch.long), 0, ["input"])),
    "non-contiguous input": _gradient_matches(lambda: img().transpose(2, 3)),
    "channels-last input": _gradient_matches(lambda: img().contiguous(memory_format=torch.channels_last)),
    "input that requires grad": _requires_grad_input,
    "tensor made under inference_mode": _inference_tensor,
    "float32 input, float64 model": _float32_input,
    "direction of another shape": raises(ValueError, "direction has shape", lambda: pw.region_radius(
        mlp(), x4(), torch.ones(2, 5, dtype=F64))),
    "direction of ints": raises(TypeError, "direction", lambda: pw.region_radius(
        mlp(), x4(), torch.ones(2, 4, dtype=torch.long))),
    "numpy input to region_radius": raises(TypeError, "tensors", lambda: pw.region_radius(
        mlp(), x4().numpy(), x4())),
    "numpy input to attribute": raises(ValueError, "inputs must be", lambda: baselines.attribute(
        "gradient", cnn(), img().numpy(), 0, "input")),
    "list input to gaussian": raises(ValueError, "inputs must be a float batch", lambda: robustness.gaussian(
        cnn(), img().tolist())),
    "int images to gaussian": raises(ValueError, "inputs must be a float batch", lambda: robustness.gaussian(
        cnn(), torch.ones(2, 3, 8, 8, dtype=torch.long))),
}

# --------------------------------------------------------------------------------- the caller's tensors


def _evaluate_edit(x):
    fd.evaluate(EditsInput(cnn()), x, ("ours", "gradient"), ["body.1"], (0.3,), k=3, progress=False)


MUTATION = {
    "decompose": leaves_alone(lambda x: pw.decompose(EditsInput(cnn()), x, 0, ["input", "body.1"]), img),
    "region_radius at the input": leaves_alone(lambda x: pw.region_radius(EditsInput(cnn()), x, img()), img),
    "verify at a layer (float64 input)": leaves_alone(lambda x: pw.verify(EditsInput(cnn()), x, 0, "body.1"), img),
    "verify at the input": leaves_alone(lambda x: pw.verify(EditsInput(cnn()), x, 0), img),
    "metrics.fidelity": leaves_alone(lambda x: metrics.fidelity(EditsInput(cnn()), x, torch.rand(2, 8, 8), 0.3, 3),
                                     img),
    "masked_topk_overlap": leaves_alone(lambda x: metrics.masked_topk_overlap(EditsInput(cnn()), x, x * 0, 3), img),
    "attribute gradient": leaves_alone(lambda x: baselines.attribute("gradient", EditsInput(cnn()), x, 0, "input"),
                                       img),
    "attribute gradcam": leaves_alone(lambda x: baselines.attribute("gradcam", EditsInput(cnn()), x, 0, "body.1"),
                                      img),
    "robustness.gaussian at a layer": leaves_alone(lambda x: robustness.gaussian(EditsInput(cnn()), x, None, 0.1,
                                                                                 "body.1"), img),
    "robustness.fgsm": leaves_alone(lambda x: robustness.fgsm(EditsInput(cnn()), x), img),
    "robustness.pgd at a layer": leaves_alone(lambda x: robustness.pgd(EditsInput(cnn()), x, None, 0.1, "body.1"),
                                              img),
    "fidelity.evaluate": leaves_alone(_evaluate_edit, img),
}


def _gaussian_at_a_layer_is_the_clean_score():
    """With an editing model, repeated runs at a layer must see the same input: sigma=0 gives the clean score."""
    model, x = EditsInput(cnn()), img()
    r = robustness.gaussian(model, x, 1, 0.0, "body.1", draws=3)
    with torch.no_grad():
        expected = model(x.clone())[:, 1]
    assert torch.allclose(r.perturbed, expected[:, None].expand(-1, 3), rtol=1e-12, atol=1e-14)
    assert torch.allclose(r.clean, expected, rtol=1e-12, atol=1e-14)


MUTATION["robustness at a layer: every run sees the same input"] = _gaussian_at_a_layer_is_the_clean_score

# ---------------------------------------------------------------------------------- targets and layers

TARGETS = {
    "target past the last class": raises(ValueError, "target", lambda: pw.decompose(mlp(), x4(), 3)),
    "negative target": raises(ValueError, "target", lambda: pw.decompose(mlp(), x4(), -1)),
    "float target": raises(TypeError, "target", lambda: pw.decompose(mlp(), x4(), 1.0)),
    "bool target": raises(TypeError, "target", lambda: pw.decompose(mlp(), x4(), True)),
    "top0": raises(ValueError, "target", lambda: pw.decompose(mlp(), x4(), "top0")),
    "top99 of 3 classes": raises(ValueError, "target", lambda: pw.decompose(mlp(), x4(), "top99")),
    "one target for two of a batch of three": raises(ValueError, "target", lambda: pw.decompose(
        mlp(), x4(3), [0, 1])),
    "unknown layer": raises(ValueError, "nolayer", lambda: pw.decompose(mlp(), x4(), 0, ["nolayer"])),
    "no layer at all": raises(ValueError, "layer", lambda: pw.decompose(mlp(), x4(), 0, [])),
    "a preset to verify": raises(ValueError, "all", lambda: pw.verify(cnn(), img(), 0, "all")),
    "a per-class target to verify": raises(ValueError, "one class per example", lambda: pw.verify(
        mlp(), x4(), "top2")),
    "a (B, k) target to attribute": raises(ValueError, "one class per example", lambda: baselines.attribute(
        "gradient", cnn(), img(), torch.zeros(2, 2, dtype=torch.long), "input")),
    "Grad-CAM at the input": raises(ValueError, "feature layer", lambda: baselines.attribute(
        "gradcam_captum", cnn(), img(), 0, "input")),
    "a method name list to attribute": raises(ValueError, "unknown method", lambda: baselines.attribute(
        ["gradient"], cnn(), img(), 0, "input")),
    "float target to gaussian": raises(TypeError, "target", lambda: robustness.gaussian(cnn(), img(), 1.5)),
    "target past the last class to fgsm": raises(ValueError, "target", lambda: robustness.fgsm(cnn(), img(), 6)),
    "targets for another batch to gaussian": raises(ValueError, "target", lambda: robustness.gaussian(
        cnn(), img(), [0, 1, 2])),
    "a string target to pgd": raises(ValueError, "target", lambda: robustness.pgd(cnn(), img(), "top5")),
    "unknown layer to gaussian": raises(ValueError, "conv9", lambda: robustness.gaussian(cnn(), img(), None, 0.1,
                                                                                         "conv9")),
    "reference 'pixels'": raises(ValueError, "reference", lambda: pw.decompose(mlp(), x4(), 0, reference="pixels")),
    "reference raw without normalisation": raises(ValueError, "normali", lambda: pw.decompose(
        cnn(), img(), 0, reference="raw")),
}


def _attribute_gradient_is_autograd():
    model, x = cnn(), img()
    got = baselines.attribute("gradient", model, x, 4, "input")
    assert torch.allclose(got, autograd_gradient(model, x, 4).sum(1), rtol=1e-12, atol=1e-14)


TARGETS["attribute gradient equals autograd"] = _attribute_gradient_is_autograd

# ----------------------------------------------------------------------------------------- images, maps


def _black_fill_by_hand():
    norm = ((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    images, maps = img(1), torch.arange(64, dtype=F64).view(1, 8, 8)
    kept = metrics.keep_top(images, maps, 0.25, "black", norm)
    top = maps[0] >= 48  # the 16 largest cells
    black = torch.tensor([-0.5 / 0.2, -0.4 / 0.25, -0.3 / 0.5], dtype=F64)
    assert torch.equal(kept[0][:, top], images[0][:, top])
    assert torch.allclose(kept[0][:, ~top], black[:, None].expand(3, 48), rtol=0, atol=1e-15)


def _given_fill_values():
    images, maps = img(1), torch.arange(64, dtype=F64).view(1, 8, 8)
    removed = metrics.remove_top(images, maps, 0.5, (1.0, 2.0, 3.0))
    top = maps[0] >= 32
    assert torch.equal(removed[0][:, ~top], images[0][:, ~top])
    assert torch.equal(removed[0][:, top], torch.tensor([1.0, 2.0, 3.0], dtype=F64)[:, None].expand(3, 32))


def _evaluate_with_given_fill():
    model, x = cnn(), img(3)
    result = fd.evaluate(model, x, ("random",), ["1"], (0.4,), k=3, fill=(0.1, -0.2, 0.3), progress=False)
    maps = torch.stack([fd.random_map((8, 8), 0, i, "1") for i in range(3)])
    expected = metrics.fidelity(model, x, maps, 0.4, 3, (0.1, -0.2, 0.3))
    assert torch.equal(result.values("random", "1", "topk", 0.4), expected)
    assert result.fill == (0.1, -0.2, 0.3)


IMAGES = {
    "keep_top with 3-D images": raises(ValueError, "inputs must be", lambda: metrics.keep_top(
        img()[0], torch.rand(3, 8, 8))),
    "keep_top with maps for another batch": raises(ValueError, "maps for 2 images", lambda: metrics.keep_top(
        img(), torch.rand(3, 8, 8))),
    "keep_top fraction 0": raises(ValueError, "fraction", lambda: metrics.keep_top(img(), torch.rand(2, 8, 8), 0)),
    "keep_top fraction NaN": raises(TypeError, "fraction", lambda: metrics.keep_top(
        img(), torch.rand(2, 8, 8), math.nan)),
    "keep_top fraction True": raises(TypeError, "fraction", lambda: metrics.keep_top(
        img(), torch.rand(2, 8, 8), True)),
    "keep_top fraction as a string": raises(TypeError, "fraction", lambda: metrics.keep_top(
        img(), torch.rand(2, 8, 8), "30%")),
    "fill 'blue'": raises(ValueError, "fill", lambda: metrics.keep_top(img(), torch.rand(2, 8, 8), 0.3, "blue")),
    "fill 'black' without normalisation": raises(ValueError, "normalisation", lambda: metrics.keep_top(
        img(), torch.rand(2, 8, 8), 0.3, "black")),
    "fill with two values for three channels": raises(ValueError, "fill has 2 values", lambda: metrics.keep_top(
        img(), torch.rand(2, 8, 8), 0.3, (0.0, 1.0))),
    "fill NaN": raises(ValueError, "fill", lambda: metrics.keep_top(img(), torch.rand(2, 8, 8), 0.3, math.nan)),
    "fill True": raises(ValueError, "fill", lambda: metrics.keep_top(img(), torch.rand(2, 8, 8), 0.3, True)),
    "black fill, by hand": _black_fill_by_hand,
    "given fill values, by hand": _given_fill_values,
    "evaluate takes the same fill as metrics.fidelity": _evaluate_with_given_fill,
    "a map holding NaN": raises(ValueError, "NaN", lambda: metrics.top_fraction_mask(_nan(torch.rand(1, 4, 4)), 0.5)),
    "boolean maps": raises(TypeError, "maps of dtype", lambda: metrics.keep_top(img(), torch.rand(2, 8, 8) > 0.5)),
    "a string as maps": raises(TypeError, "maps", lambda: metrics.as_maps("saliency")),
    "masks with values 0, 1, 2": raises(ValueError, "masks hold values", lambda: metrics.pointing_game(
        torch.rand(1, 4, 4), torch.randint(0, 3, (1, 4, 4)).index_fill_(1, torch.tensor([0]), 2))),
    "pointing game on a NaN map": raises(ValueError, "NaN", lambda: metrics.pointing_game(
        _nan(torch.rand(1, 4, 4)), torch.ones(1, 4, 4, dtype=torch.bool))),
    "cells_kept fraction 1.5": raises(ValueError, "fraction", lambda: metrics.cells_kept(1.5, 10)),
    "cells_kept cells 2.5": raises(TypeError, "cells", lambda: metrics.cells_kept(0.5, 2.5)),
    "a grid of size 0": raises(ValueError, "size", lambda: metrics.to_image_grid(torch.rand(1, 4, 4), (0, 4))),
    "a grid of one number": raises(ValueError, "size", lambda: metrics.to_image_grid(torch.rand(1, 4, 4), 8)),
}

# --------------------------------------------------------------------------------------------- metrics

METRICS = {
    "topk_intersection k=0": raises(ValueError, "k must", lambda: metrics.topk_intersection(
        torch.rand(2, 5), torch.rand(2, 5), 0)),
    "topk_intersection k=2.5": raises(TypeError, "k must be an int", lambda: metrics.topk_intersection(
        torch.rand(2, 5), torch.rand(2, 5), 2.5)),
    "topk_intersection k past the classes": raises(ValueError, r"k must lie in \[1, 5\]", lambda:
                                                   metrics.topk_intersection(torch.rand(2, 5), torch.rand(2, 5), 6)),
    "topk_intersection of two shapes": raises(ValueError, "differ in shape", lambda: metrics.topk_intersection(
        torch.rand(2, 5), torch.rand(3, 5), 2)),
    "masked_topk_overlap of two shapes": raises(ValueError, "differ in shape", lambda: metrics.masked_topk_overlap(
        cnn(), img(2), img(3), 3)),
    "metrics.fidelity k past the classes": raises(ValueError, "k must lie", lambda: metrics.fidelity(
        cnn(), img(), torch.rand(2, 8, 8), 0.3, 7)),
    "metrics.fidelity k as a float": raises(TypeError, "k must be an int", lambda: metrics.fidelity(
        cnn(), img(), torch.rand(2, 8, 8), 0.3, 2.0)),
    "bootstrap_ci n_boot 2.5": raises(TypeError, "n_boot", lambda: metrics.bootstrap_ci(torch.rand(5), 2.5)),
    "bootstrap_ci level 1": raises(ValueError, "level", lambda: metrics.bootstrap_ci(torch.rand(5), 100, 1.0)),
    "bootstrap_ci level 1 on all-NaN values": raises(ValueError, "level", lambda: metrics.bootstrap_ci(
        torch.full((5,), math.nan), 100, 1.0)),
    "bootstrap_ci of infinite values": raises(ValueError, "infinite", lambda: metrics.bootstrap_ci(
        torch.tensor([1.0, math.inf]))),
    "bootstrap_ci seed as a string": raises(TypeError, "seed", lambda: metrics.bootstrap_ci(torch.rand(5), 10, 0.9,
                                                                                           "0")),
    "curve_area of decreasing fractions": raises(ValueError, "increasing", lambda: metrics.curve_area(
        [0.5, 0.1], torch.rand(2, 2))),
    "curve_area of a list of values": raises(TypeError, "values", lambda: metrics.curve_area([0, 1], [[0.5, 0.1]])),
    "bias_ratios of a dict": raises(TypeError, "Decomposition", lambda: metrics.bias_ratios({"input": 1})),
    "bias_ratios positive_only as a string": raises(TypeError, "positive_only", lambda: metrics.bias_ratios(
        pw.decompose(mlp(), x4(), 0), "no")),
    # fidelity.evaluate
    "evaluate chunk 0": raises(ValueError, "chunk", lambda: fd.evaluate(cnn(), img(), ("ours",), ["1"], chunk=0)),
    "evaluate chunk 2.5": raises(TypeError, "chunk", lambda: fd.evaluate(cnn(), img(), ("ours",), ["1"],
                                                                         chunk=2.5)),
    "evaluate methods as one string": raises(TypeError, "methods", lambda: fd.evaluate(cnn(), img(), "ours", ["1"])),
    "evaluate an unknown method": raises(ValueError, "unknown method", lambda: fd.evaluate(
        cnn(), img(), ("ours", "lime"), ["1"])),
    "evaluate keeps as one number": raises(TypeError, "keeps", lambda: fd.evaluate(cnn(), img(), ("ours",), ["1"],
                                                                                   0.3)),
    "evaluate keeps past 1": raises(ValueError, "keeps", lambda: fd.evaluate(cnn(), img(), ("ours",), ["1"], (1.5,))),
    "evaluate curves NaN": raises(TypeError, "curves", lambda: fd.evaluate(cnn(), img(), ("ours",), ["1"],
                                                                           curves=(0.0, math.nan))),
    "evaluate k 0": raises(ValueError, "k must", lambda: fd.evaluate(cnn(), img(), ("ours",), ["1"], k=0)),
    "evaluate sign 'positive'": raises(ValueError, "sign", lambda: fd.evaluate(cnn(), img(), ("ours",), ["1"],
                                                                               sign="positive")),
    "evaluate seed as a float": raises(TypeError, "seed", lambda: fd.evaluate(cnn(), img(), ("ours",), ["1"],
                                                                              seed=1.5)),
    "evaluate progress as a string": raises(TypeError, "progress", lambda: fd.evaluate(
        cnn(), img(), ("ours",), ["1"], progress="no")),
    "evaluate fill 'grey'": raises(ValueError, "fill", lambda: fd.evaluate(cnn(), img(), ("ours",), ["1"],
                                                                          fill="grey")),
    "evaluate data of lists": raises(ValueError, "inputs must give", lambda: fd.evaluate(
        cnn(), [img().tolist()], ("ours",), ["1"], progress=False)),
    "evaluate data as a number": raises(TypeError, "inputs", lambda: fd.evaluate(cnn(), 3, ("ours",), ["1"],
                                                                               progress=False)),
    "batches of size 0": raises(ValueError, "batch_size", lambda: list(fd.batches(img(), 0))),
    "batches with masks for another count": raises(ValueError, "masks", lambda: list(fd.batches(
        img(4), 2, torch.ones(3, 8, 8, dtype=torch.bool)))),
    "layer_grids size 0": raises(ValueError, "size", lambda: fd.layer_grids(cnn(), 0, ["1"])),
    # robustness
    "gaussian sigma -1": raises(ValueError, "sigma", lambda: robustness.gaussian(cnn(), img(), None, -1.0)),
    "gaussian draws 0": raises(ValueError, "draws", lambda: robustness.gaussian(cnn(), img(), draws=0)),
    "gaussian batch_size 0": raises(ValueError, "batch_size", lambda: robustness.gaussian(cnn(), img(),
                                                                                         batch_size=0)),
    "fgsm eps NaN": raises(TypeError, "eps", lambda: robustness.fgsm(cnn(), img(), None, math.nan)),
    "pgd steps 0": raises(ValueError, "steps", lambda: robustness.pgd(cnn(), img(), steps=0)),
    "pgd step_size 0": raises(ValueError, "step_size", lambda: robustness.pgd(cnn(), img(), step_size=0.0)),
    "radius_along directions for another batch": raises(ValueError, "direction", lambda: robustness.radius_along(
        cnn(), img(2), img(3))),
    "radius_along dtype int": raises(TypeError, "dtype", lambda: robustness.radius_along(
        cnn(), img(), img(), "input", torch.int64)),
    "bootstrap n 0": raises(ValueError, "n must", lambda: robustness.bootstrap(
        lambda a: float(a.mean()), torch.rand(5), n=0)),
    "correlation level 2": raises(ValueError, "level", lambda: robustness.correlation(
        torch.rand(5), torch.rand(5), level=2.0)),
    "paired_difference of samples of two sizes": raises(ValueError, "one value per image", lambda:
                                                        robustness.paired_difference(torch.rand(5), torch.rand(4))),
    "bias curve summary 'mode'": raises(ValueError, "average", lambda: robustness.BiasCurve(
        ["input"], torch.rand(2, 1, 1), torch.rand(2, 1) + 1, torch.zeros(2, 1, dtype=torch.long)).summary("mode")),
    "bias curve quantiles past 1": raises(ValueError, "q", lambda: robustness.BiasCurve(
        ["input"], torch.rand(2, 1, 1), torch.rand(2, 1) + 1, torch.zeros(2, 1, dtype=torch.long)).quantiles((2.0,))),
    "bias_curve batch_size 0": raises(ValueError, "batch_size", lambda: robustness.bias_curve(
        cnn(), img(), None, ["input"], batch_size=0)),
    "bias_curve progress as a string": raises(TypeError, "progress", lambda: robustness.bias_curve(
        cnn(), img(), None, ["input"], progress="yes")),
    # regions
    "regions of a conv net": raises(ValueError, "Conv2d|Linear", lambda: regions.enumerate_regions(
        cnn(), ((-1, 1), (-1, 1)))),
    "regions on a NaN box": raises(ValueError, "finite", lambda: regions.enumerate_regions(
        regions.build_mlp((3,)), ((math.nan, 1), (-1, 1)))),
    "regions on a reversed box": raises(ValueError, "reversed", lambda: regions.enumerate_regions(
        regions.build_mlp((3,)), ((1, -1), (-1, 1)))),
    "regions of a 3-input net": raises(ValueError, "2 inputs|two inputs|plane", lambda: regions.enumerate_regions(
        regions.build_mlp((3,), n_in=3), ((-1, 1), (-1, 1)))),
    "an unknown bound": raises(ValueError, "unknown bound", lambda: regions.region_upper_bound((3, 3), kind="x")),
    "a 500-unit layer is refused before it is cut": raises(regions.RegionLimitError, "counted before cutting",
                                                           lambda: regions.enumerate_regions(
                                                               regions.build_mlp((500,), seed=2), ((-2, 2), (-2, 2)))),
}


def _a_result() -> fd.FidelityResult:
    return fd.evaluate(cnn(), img(), ("random",), ["1"], (0.3,), k=3, progress=False)


METRICS |= {
    "random_map with a side of 0": raises(ValueError, "size", lambda: fd.random_map((0, 4), 0, 0, "conv3")),
    "random_map seed as a float": raises(TypeError, "seed", lambda: fd.random_map((4, 4), 0.5, 0, "conv3")),
    "random_map layer as a number": raises(TypeError, "layer", lambda: fd.random_map((4, 4), 0, 0, 3)),
    "result values of an unknown score": raises(ValueError, "score", lambda: _a_result().values(
        "random", "1", "top5")),
    "result values of fraction 30": raises(ValueError, "fraction", lambda: _a_result().values(
        "random", "1", "topk", 30)),
    "audit modules as a list": raises(TypeError, "modules", lambda: pw.audit(mlp(), list(mlp().modules()))),
}


FAMILIES = {"models": MODELS, "inputs": INPUTS, "mutation": MUTATION, "targets": TARGETS, "images": IMAGES,
            "metrics": METRICS}
CASES = [pytest.param(check, id=f"{family}: {re.sub(r'[^A-Za-z0-9_ ,.()-]', '', name)}")
         for family, cases in FAMILIES.items() for name, check in cases.items()]


@pytest.mark.parametrize("check", CASES)
def test_odd_input(check: Callable[[], None]) -> None:
    check()

