"""decompose(): exactness against independent computations, in float64."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradientXActivation
from conftest import no_inplace, small_cnn_layers
from torch import nn

import pwawidgets as pw


def frozen_piece(modules: Sequence[nn.Module], h: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The affine piece of ``Sequential(*modules)`` around ``h``, built without autograd: every ReLU, LeakyReLU and
    max-pool keeps the pattern it has at ``h`` (its gains, its window argmax); every other module (convolutions,
    eval BatchNorm, average pools, linear layers, eval dropout) is affine already. Its value at 0 is the bias."""
    ops: list[Callable[[torch.Tensor], torch.Tensor]] = []
    v = h.detach()
    with torch.no_grad():
        for m in modules:
            if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
                slope = m.negative_slope if isinstance(m, nn.LeakyReLU) else 0.0
                gain = torch.where(v > 0, torch.ones_like(v), torch.full_like(v, slope))
                op = (lambda g: lambda u: u * g)(gain)
            elif isinstance(m, nn.MaxPool2d):
                _, idx = F.max_pool2d(v, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                                      return_indices=True)
                op = (lambda i: lambda u: u.flatten(2).gather(2, i.flatten(2)).view(i.shape))(idx)
            else:
                op = no_inplace(m)
            ops.append(op)
            v = op(v)

    def piece(u: torch.Tensor) -> torch.Tensor:
        for op in ops:
            u = op(u)
        return u

    return piece


def test_tiny_mlp_matches_hand_computed_affine_map():
    torch.manual_seed(0)
    w1, b1 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    w2, b2 = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(w1), model[0].bias.copy_(b1), model[2].weight.copy_(w2), model[2].bias.copy_(b2)
    x = torch.tensor([[0.3, -1.2, 0.7]], dtype=torch.float64)
    mask = ((w1 @ x[0] + b1) > 0).double()
    assert 0 < mask.sum() < 4, "pick an x where the ReLU pattern is mixed"
    W = w2 @ torch.diag(mask) @ w1  # noqa: N806 -- the paper's W and b
    b = w2 @ (mask * b1) + b2
    for c in range(2):
        d = pw.decompose(model, x, c, ["input", "1"])
        torch.testing.assert_close(d.contributions["input"][0], W[c] * x[0], rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(d.bias["input"][0], b[c], rtol=1e-14, atol=1e-14)
        # at the hidden layer: W_hidden = w2[c], b_hidden = b2[c]
        hidden = torch.relu(w1 @ x[0] + b1)
        torch.testing.assert_close(d.contributions["1"][0], w2[c] * hidden, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(d.bias["1"][0], b2[c], rtol=1e-13, atol=1e-13)


def test_small_cnn_matches_the_frozen_pattern_piece_at_every_layer(small_cnn):
    """Independent oracle: the affine piece around x, built by freezing every ReLU mask and max-pool window
    (no autograd); its slope by jacrev, its bias as its value at 0 (not as score minus contributions)."""
    layers = small_cnn_layers()  # same seed, same weights
    reference = nn.Sequential(*layers).double().eval()
    reference.load_state_dict(small_cnn.state_dict())
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    names = ["input"] + [str(i) for i in range(len(layers) - 1)]
    target = torch.tensor([1, 3])
    d = pw.decompose(small_cnn, x, target, names, keep_gradients=True)
    for name in names:
        start = 0 if name == "input" else int(name) + 1
        head = no_inplace(reference[:start]) if start else nn.Identity()
        for b in range(2):
            h = head(x[b : b + 1]).detach()
            piece = frozen_piece(list(reference[start:]), h)
            score = piece(h)[0, target[b]]
            torch.testing.assert_close(score, reference(x[b : b + 1])[0, target[b]].detach(), rtol=1e-13, atol=1e-13)
            w = torch.func.jacrev(lambda v, b=b, piece=piece: piece(v)[0, target[b]])(h)
            bias = piece(torch.zeros_like(h))[0, target[b]]
            torch.testing.assert_close(d.activations[name][b], h[0], rtol=0, atol=1e-13)
            torch.testing.assert_close(d.gradients[name][b], w[0], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(d.contributions[name][b], (w * h)[0], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(d.contribution_sum(name)[b], (w * h).sum(), rtol=1e-10, atol=1e-11)
            torch.testing.assert_close(d.bias[name][b], bias, rtol=1e-10, atol=1e-11)
            torch.testing.assert_close(d.score[b], score, rtol=1e-13, atol=1e-13)


def test_inplace_relu_sees_value_before_overwrite(vgg11, images64):
    """features.0 is a conv whose output torchvision's ReLU(inplace=True) overwrites."""
    x = images64[:1]
    d = pw.decompose(vgg11, x, 7, ["features.0", "features.3", "conv2"], keep_gradients=True)
    ref = pw.decompose(no_inplace(vgg11), x, 7, ["features.0", "features.3", "conv2"], keep_gradients=True)
    conv_out = vgg11.features[0](x)
    assert (d.activations["features.0"] < 0).any()  # a ReLU'd tensor would have no negative value
    torch.testing.assert_close(d.activations["features.0"], conv_out.detach(), rtol=0, atol=1e-12)
    for name in ref.layers:
        torch.testing.assert_close(d.contributions[name], ref.contributions[name], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(d.bias[name], ref.bias[name], rtol=1e-12, atol=1e-12)


def test_resnet_block_add_inplace(resnet18, images64):
    """layer1.0.bn2's output is overwritten by ``out += identity``: compare with a hand-written tail."""
    model, x = resnet18, images64[:1]
    d = pw.decompose(model, x, 11, ["layer1.0.bn2"], keep_gradients=True)
    with torch.no_grad():
        identity = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        block = model.layer1[0]
        h = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(identity)))))

    def tail(v):
        out = torch.relu(v + identity)
        out = model.layer1[1](out)
        for stage in (model.layer2, model.layer3, model.layer4):
            out = stage(out)
        return model.fc(torch.flatten(model.avgpool(out), 1))[0, 11]

    jac = torch.func.jacrev(tail)(h)
    torch.testing.assert_close(d.activations["layer1.0.bn2"], h, rtol=0, atol=1e-12)
    torch.testing.assert_close(d.gradients["layer1.0.bn2"], jac, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(d.bias["layer1.0.bn2"][0], tail(h) - (jac * h).sum(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
def test_batch_equals_one_by_one_and_k_classes_equal_k_calls(name, request, images64):
    model = request.getfixturevalue(name)
    targets = torch.tensor([[3, 10, 500], [0, 999, 42], [7, 7, 8]])
    d = pw.decompose(model, images64, targets, ["input", "blocks"])
    assert d.per_class and d.score.shape == (3, 3)
    for b in range(3):
        for j in range(3):
            single = pw.decompose(model, images64[b : b + 1], int(targets[b, j]), ["input", "blocks"])
            torch.testing.assert_close(d.score[b, j], single.score[0], rtol=1e-12, atol=1e-12)
            for layer in single.layers:
                torch.testing.assert_close(d.contributions[layer][b, j], single.contributions[layer][0],
                                           rtol=1e-10, atol=1e-13)
                torch.testing.assert_close(d.bias[layer][b, j], single.bias[layer][0], rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("name", ["vgg11", "resnet18"])
def test_agrees_with_captum_layer_gradient_x_activation(name, request, images64):
    model = request.getfixturevalue(name)
    blocks = pw.layer_presets(model)["blocks"]
    modules = dict(model.named_modules())
    x, target = images64[:2], torch.tensor([4, 321])
    ours = pw.decompose(model, x, target, list(blocks))
    captum = LayerGradientXActivation(model, [modules[m] for m in blocks.values()])
    theirs = captum.attribute(x, target=target)
    assert len(theirs) == len(blocks)
    for alias, attr in zip(blocks, theirs, strict=True):
        torch.testing.assert_close(ours.contributions[alias], attr, rtol=1e-10, atol=1e-13)


def test_raw_pixel_reference_moves_mean_into_bias(vgg11, images64):
    norm = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    x = images64[:1]
    normed = pw.decompose(vgg11, x, 2, keep_gradients=True)
    raw = pw.decompose(vgg11, x, 2, reference="raw", normalization=norm, keep_gradients=True)
    mean = torch.tensor(norm[0], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(norm[1], dtype=torch.float64).view(1, 3, 1, 1)
    pixels, w = x * std + mean, normed.gradients["input"]
    torch.testing.assert_close(raw.contributions["input"], w / std * pixels, rtol=1e-12, atol=1e-14)
    expected_bias = normed.bias["input"] - (w * mean / std).sum()
    torch.testing.assert_close(raw.bias["input"], expected_bias, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(raw.score, normed.score)
    with pytest.raises(ValueError, match="normalization"):
        pw.decompose(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).double(), x[:, :, :2, :2], 0, reference="raw")


def test_all_preset_names_every_relu_call(resnet18, images64):
    d = pw.decompose(resnet18, images64[:1], 0, "all")
    relus = [n for n in d.layers if "relu" in n]
    assert len(relus) == len(d.layers) == 1 + 8 * 2  # stem ReLU + two ReLU calls in each of 8 blocks
    assert "layer1.0.relu@0" in d.layers and "layer1.0.relu@1" in d.layers
    for name in d.layers:
        assert (d.activations[name] >= 0).all()
    with pytest.raises(ValueError, match="ran 2 times"):
        pw.decompose(resnet18, images64[:1], 0, ["layer1.0.relu"])


def test_pixel_map_target_none_and_errors(vgg11, images64):
    d = pw.decompose(vgg11, images64[:2], None, ["input", "conv3"])
    torch.testing.assert_close(d.target, d.logits.argmax(1))
    assert d.pixel_map("conv3").shape == (2, 16, 16)
    torch.testing.assert_close(d.pixel_map("conv3"), d.contributions["conv3"].sum(1), rtol=0, atol=0)
    assert d.pixel_map("conv3", size=64).shape == (2, 64, 64)
    assert d.pixel_map("conv3", size=(8, 24), mode="area").shape == (2, 8, 24)
    with pytest.raises(KeyError, match="conv5"):
        d.pixel_map("conv5")
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        pw.decompose(vgg11, images64[:1], 0, ["conv9"])
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        pw.decompose(vgg11, images64[:1], 1000)
    with pytest.raises(ValueError, match="one per example"):
        pw.decompose(vgg11, images64[:2], [1, 2, 3])


def test_hooks_removed_and_model_state_untouched(vgg11, images64):
    vgg11.features[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in vgg11.parameters()]
    with pytest.raises(ValueError):
        pw.decompose(vgg11, images64[:1], 5000, ["conv1", "conv2", "all"])  # fails after the forward pass
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in vgg11.modules())
    pw.decompose(vgg11, images64[:1], 1, "all")
    assert all(not m._forward_hooks for m in vgg11.modules())
    assert [p.requires_grad for p in vgg11.parameters()] == flags
    assert all(p.grad is None for p in vgg11.parameters())
    assert not vgg11.training
    vgg11.features[0].weight.requires_grad_(True)


def test_model_raising_inside_forward_leaves_no_hook():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.relu = nn.ReLU()

        def forward(self, x):
            self.relu(self.lin(x))
            raise RuntimeError("boom")

    model = Broken().eval()
    with pytest.raises(RuntimeError, match="boom"), pytest.warns(pw.ExactnessWarning, match="could not be traced"):
        pw.decompose(model, torch.zeros(1, 2), 0, ["relu"])
    assert not model.relu._forward_hooks


def test_low_precision_warns_or_raises():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).to(torch.bfloat16).eval()
    x = torch.randn(2, 4)
    with pytest.warns(pw.ExactnessWarning, match="loses exactness"):
        d = pw.decompose(model, x, 0)
    assert d.contributions["input"].dtype == torch.bfloat16
    assert d.exact is False and any("bfloat16" in note for note in d.notes)
    with pytest.raises(ValueError, match="loses exactness"):
        pw.decompose(model, x, 0, strict=True)


def test_tf32_guard_is_asked_for_the_inputs_device_and_flags_are_restored(small_cnn, monkeypatch):
    """decompose runs under exact_math(device of the inputs); on a CPU that leaves CUDA's flags alone (exact_math
    itself is tested on CUDA devices in test_precision)."""
    from pwawidgets import core

    devices = []
    real = core.exact_math
    monkeypatch.setattr(core, "exact_math", lambda device=None: devices.append(device) or real(device))
    matmul = torch.backends.cuda.matmul
    conv = torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    try:
        matmul.fp32_precision, conv.fp32_precision = "tf32", "tf32"
        seen = []
        hook = small_cnn[0].register_forward_hook(
            lambda *a: seen.append((matmul.fp32_precision, conv.fp32_precision)))
        with pytest.warns(pw.ExactnessWarning, match="hook"):  # the test's own hook is reported, as any hook is
            pw.decompose(small_cnn, torch.zeros(1, 3, 8, 8, dtype=torch.float64), 0)
        hook.remove()
        assert devices == [torch.device("cpu")]
        assert seen == [("tf32", "tf32")]
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        with pytest.raises(RuntimeError, match="inside"), pw.exact_math():
            raise RuntimeError("inside")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def test_top_k_string_target_matches_explicit_classes(vgg11, images64):
    d = pw.decompose(vgg11, images64[:2], "top3", ["conv2"], keep_gradients=True)
    explicit = pw.decompose(vgg11, images64[:2], d.logits.topk(3, dim=1).indices, ["conv2"])
    assert d.per_class and torch.equal(d.target, explicit.target)
    torch.testing.assert_close(d.contributions["conv2"], explicit.contributions["conv2"], rtol=0, atol=0)
    assert d.gradient("conv2").shape == d.contributions["conv2"].shape
    with pytest.raises(ValueError, match="keep_gradients"):
        explicit.gradient("conv2")
    with pytest.raises(ValueError, match="top1"):
        pw.decompose(vgg11, images64[:1], "best")


# ------------------------------------------------------------------------------------ bad and odd input


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _mlp()

    def forward(self, x):
        with torch.no_grad():
            h = self.body[0](x)
        return self.body[2](torch.relu(h))


def test_score_cut_off_from_the_input_is_an_error_not_a_zero_map():
    with pytest.raises(ValueError, match="does not depend on layer 'input'.*no_grad"):
        pw.decompose(Detached().eval(), torch.randn(2, 4, dtype=torch.float64), 0)


def test_non_finite_inputs_and_scores():
    x = torch.randn(2, 4, dtype=torch.float64)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(examples \[1\]\)"):
        pw.decompose(_mlp(), x, 0)
    model = _mlp()
    with torch.no_grad():
        model[2].bias.fill_(float("inf"))
    with pytest.raises(ValueError, match="scores hold NaN or infinite"):
        pw.decompose(model, torch.randn(2, 4, dtype=torch.float64), 0)


def test_wrong_input_kinds():
    model = _mlp()
    with pytest.raises(TypeError, match="uint8 image tensor.*255"):
        pw.decompose(model, torch.zeros(1, 4, dtype=torch.uint8), 0)
    with pytest.raises(TypeError, match="must be a tensor"):
        pw.decompose(model, [[0.0, 1.0, 2.0, 3.0]], 0)
    with pytest.raises(TypeError, match="torch.bool"):
        pw.decompose(model, torch.zeros(1, 4, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="at least one example"):
        pw.decompose(model, torch.zeros(0, 4), 0)
    with pytest.raises(ValueError, match="no layer asked for"):
        pw.decompose(model, torch.zeros(1, 4), 0, [])
    with pytest.raises(TypeError, match="strings"):
        pw.decompose(model, torch.zeros(1, 4), 0, [0])


def test_targets_of_every_wrong_kind():
    model, x = _mlp(), torch.randn(2, 4, dtype=torch.float64)
    cases = {
        "top0": (ValueError, "top1"), "top": (ValueError, "top1"), "top9": (ValueError, "top3"),
        2.5: (TypeError, "integer class"), True: (TypeError, "booleans"), -1: (ValueError, r"\[0, 2\]"),
        3: (ValueError, r"\[0, 2\]"), (0, 1, 2): (ValueError, "one per example"),
        torch.zeros(2, 0, dtype=torch.long): (ValueError, "k >= 1"), torch.tensor([0.0, 1.0]): (TypeError, "integer"),
        object(): (TypeError, "give an int"), torch.zeros(3, 2, dtype=torch.long): (ValueError, "shape"),
    }
    for target, (error, message) in cases.items():
        with pytest.raises(error, match=message):
            pw.decompose(model, x, target)
    import numpy as np

    d = pw.decompose(model, x, np.array([1, 2]))
    assert d.target.tolist() == [1, 2]


def test_models_returning_tuples_dicts_or_vectors():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _mlp()

        def forward(self, x):
            return self.body(x), x

    class Named(Pair):
        def forward(self, x):
            return {"logits": self.body(x)}

    class Vector(Pair):
        def forward(self, x):
            return self.body(x)[:, 0]

    x = torch.randn(1, 4, dtype=torch.float64)
    for model, what in ((Pair(), "tuple of 2"), (Named(), "keys \\['logits'\\]"), (Vector(), "shape \\(1,\\)")):
        with pytest.raises(ValueError, match=what):
            pw.decompose(model.eval(), x, 0)


def test_inputs_the_model_cannot_take_say_so(vgg11):
    with pytest.raises(RuntimeError, match=r"(?s)could not run on inputs of shape \(1, 3, 8, 8\).*224 px"):
        pw.decompose(vgg11, torch.zeros(1, 3, 8, 8, dtype=torch.float64), 0, ["conv5"])
    with pytest.raises(RuntimeError, match="could not run on inputs of shape"):
        pw.decompose(vgg11, torch.zeros(1, 4, 64, 64, dtype=torch.float64), 0)


def test_inference_mode_and_inference_tensors():
    model = _mlp()
    with torch.inference_mode():
        x = torch.randn(1, 4, dtype=torch.float64)
        with pytest.raises(RuntimeError, match="outside torch.inference_mode"):
            pw.decompose(model, x, 0)
    d = pw.decompose(model, x, 0)  # a tensor made under inference mode still works outside it
    x = x.clone()  # a normal tensor for the oracle's autograd
    piece = frozen_piece(list(model), x)
    torch.testing.assert_close(d.bias["input"], piece(torch.zeros_like(x))[:, 0], rtol=1e-12, atol=1e-12)
    w = torch.func.jacrev(lambda v: piece(v)[0, 0])(x)
    torch.testing.assert_close(d.contribution_sum("input"), (w * x).sum(1), rtol=1e-12, atol=1e-12)


def test_model_that_normalises_its_input_in_place():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _mlp()

        def forward(self, x):
            x.sub_(0.5).div_(2.0)
            return self.body(x)

    x = torch.randn(2, 4, dtype=torch.float64)
    before = x.clone()
    d = pw.decompose(InPlace().eval(), x, 1, keep_gradients=True)
    plain = pw.decompose(_mlp(), (x - 0.5) / 2, 1, keep_gradients=True)
    torch.testing.assert_close(d.gradient("input"), plain.gradient("input") / 2, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(d.score, plain.score)
    for b in range(2):  # the bias is the frozen piece at x = 0, which the model normalises to -0.25
        piece = frozen_piece(list(_mlp()), (x[b:b + 1] - 0.5) / 2)
        torch.testing.assert_close(d.bias["input"][b], piece(torch.full((1, 4), -0.25, dtype=torch.float64))[0, 1],
                                   rtol=1e-12, atol=1e-12)
    assert torch.equal(x, before)  # the caller's tensor is left alone


def test_raw_reference_needs_a_normalisation_only_for_the_input(vgg11, images64):
    model = nn.Sequential(*list(vgg11.features), nn.Flatten(), nn.LazyLinear(3)).double().eval()
    model(images64[:1])
    d = pw.decompose(model, images64[:1], 0, ["3"], reference="raw")
    assert d.layers == ["3"]
    with pytest.raises(ValueError, match="needs the input normalisation"):
        pw.decompose(model, images64[:1], 0, ["input", "3"], reference="raw")
    with pytest.raises(ValueError, match="reference must be"):
        pw.decompose(model, images64[:1], 0, reference="pixels")


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4)
        self.fc1, self.relu, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, ids):
        return self.fc2(self.relu(self.fc1(self.embed(ids))).mean(1))


def test_integer_inputs_decompose_after_the_embedding():
    model = Tokens().double().eval()
    ids = torch.tensor([[1, 4, 7], [2, 2, 9]])
    d = pw.decompose(model, ids, 1, ["embed", "relu"], keep_gradients=True)
    # independent: the rest of the network as a function of the embedding output, differentiated by jacrev
    e = model.embed(ids).detach()
    for b in range(2):
        rest = lambda t, b=b: model.fc2(model.relu(model.fc1(t)).mean(1))[0, 1]  # noqa: E731
        w = torch.func.jacrev(rest)(e[b:b + 1])
        torch.testing.assert_close(d.contributions["embed"][b], (w * e[b:b + 1])[0], rtol=1e-12, atol=1e-12)
        # the bias: the rest of the network with the ReLU pattern of this example frozen, at an embedding of 0
        gain = (model.fc1(e[b:b + 1]) > 0).double()
        at_zero = model.fc2((gain * model.fc1(torch.zeros_like(e[b:b + 1]))).mean(1))[0, 1]
        torch.testing.assert_close(d.bias["embed"][b], at_zero.detach(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="integer inputs.*after the embedding"):
        pw.decompose(model, ids, 1, ["input", "embed"])


def test_raw_reference_checks_shape_and_normalisation():
    mlp = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with pytest.raises(ValueError, match=r"image batches \(B, C, H, W\)"):
        pw.decompose(mlp, torch.randn(2, 5), 0, reference="raw", normalization=([0.5] * 5, [0.2] * 5))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).eval()
    conv(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="C = 3 channels"):
        pw.decompose(conv, torch.randn(2, 1, 8, 8), 0, reference="raw", normalization=pw.IMAGENET_NORMALIZATION)
    for bad in (([0.5] * 3, [0.2, 0.0, 0.2]), ([0.5],), ([0.5, 0.5], [0.2] * 3)):
        with pytest.raises(ValueError, match="normalization must be"):
            pw.decompose(conv, torch.randn(2, 1, 8, 8), 0, reference="raw", normalization=bad)


def test_a_model_in_training_mode_is_left_as_found():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 4)
    rng = torch.get_rng_state()
    with pytest.warns(pw.ExactnessWarning, match="not piece-wise affine"):
        pw.decompose(model, x, 0, allow_non_affine=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched
    assert torch.equal(rng, torch.get_rng_state())  # dropout drew from a forked generator


def test_what_is_not_a_model_or_not_a_layer_list():
    with pytest.raises(TypeError, match="torch.nn.Module, got NoneType"):
        pw.decompose(None, torch.zeros(1, 4))
    with pytest.raises(TypeError, match=r"load it first: pwawidgets.load_model"):
        pw.audit("mini_vgg")
    with pytest.raises(TypeError, match="a name or a list of names"):
        pw.decompose(_mlp(), torch.zeros(1, 4, dtype=torch.float64), 0, layers=1)
    model = _mlp()
    model.block_layers = {"hidden": "7"}
    with pytest.raises(ValueError, match="block_layers name modules it does not have"):
        pw.decompose(model, torch.zeros(1, 4, dtype=torch.float64), 0, "blocks")
    empty = nn.Sequential(nn.Linear(4, 0)).eval()
    with pytest.raises(ValueError, match=r"shape \(1, 0\)"):
        pw.decompose(empty, torch.zeros(1, 4), 0)


def test_a_compiled_model_is_decomposed_through_its_original():
    model = _mlp()
    compiled = torch.compile(model)  # nothing compiles until it is called
    x = torch.randn(2, 4, dtype=torch.float64)
    d = pw.decompose(compiled, x, 1, ["input", "1"])
    torch.testing.assert_close(d.contributions["1"], pw.decompose(model, x, 1, ["1"]).contributions["1"])


def test_layer_biases_are_decomposes_biases_from_the_same_pass(small_cnn):
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    found = pw.layer_biases(small_cnn, x, "top2", ["input", "all"])
    assert isinstance(found, pw.LayerBiases)
    d = pw.decompose(small_cnn, x, "top2", ["input", "all"])
    assert found.layers == d.layers and found.bias.shape == (3, 2, len(found.layers))
    for i, name in enumerate(found.layers):
        torch.testing.assert_close(found.bias[:, :, i], d.bias[name], rtol=1e-12, atol=1e-12)
    assert torch.equal(found.score, d.score) and torch.equal(found.target, d.target)
    text = repr(found)
    assert text.startswith("LayerBiases of 3 example(s) x 2 class(es)") and "input" in text
    assert len(text.splitlines()) <= 16 and "tensor(" not in text
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(examples \[1\]\)"):
        pw.layer_biases(small_cnn, bad, None, ["input"])


@pytest.mark.parametrize("keep_gradients", [False, True])
@pytest.mark.parametrize("reference", ["normalized", "raw"])
def test_results_own_their_tensors(keep_gradients, reference):
    """In-place edits of the caller's inputs and targets after the call leave the result alone (the input layer's
    activation used to be a view of the caller's tensor: with keep_gradients, score = sum + bias broke)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 5)).double().eval()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([[1, 4], [0, 2], [3, 3]])
    norm = ((0.4, 0.5, 0.6), (0.2, 0.3, 0.25))
    d = pw.decompose(model, x, target, ["input", "1"], reference=reference, normalization=norm,
                     keep_gradients=keep_gradients)
    copy = {name: (d.contribution(name).clone(), d.activation(name).clone(), d.bias[name].clone())
            for name in d.layers}
    score, kept_target = d.score.clone(), d.target.clone()
    x.mul_(3)
    target.zero_()
    for name in d.layers:
        torch.testing.assert_close(d.contribution(name), copy[name][0], rtol=0, atol=0)
        torch.testing.assert_close(d.activation(name), copy[name][1], rtol=0, atol=0)
        torch.testing.assert_close(d.bias[name], copy[name][2], rtol=0, atol=0)
    assert torch.equal(d.score, score) and torch.equal(d.target, kept_target)
    found = pw.layer_biases(model, x, target, ["input"])
    target.fill_(2)
    assert (found.target == 0).all()


def test_a_non_affine_model_is_marked_not_exact():
    torch.manual_seed(0)
    smooth = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 3)).double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    with pytest.warns(pw.ExactnessWarning):
        d = pw.decompose(smooth, x, 0, allow_non_affine=True)
    assert d.exact is False
    assert any("not piece-wise affine" in note and "GELU" in note for note in d.notes)
    assert "NOT exact" in repr(d) and "note:" in repr(d)
    plain = pw.decompose(_mlp(), x, 0)
    assert plain.exact is True and plain.notes == []


def test_summary_repr_and_the_explicit_class_axis(small_cnn):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    d = pw.decompose(small_cnn, x, "top3", ["input", "all"], keep_gradients=True)
    text = repr(d)
    assert "tensor(" not in text and len(text.splitlines()) <= 20
    assert "k=3 classes per example on axis 1 (class_axis)" in text
    assert d.class_axis == 1 and d.classes == 3
    assert d.contribution("input").shape == (2, 3, 3, 16, 16)  # batch, class, channel, H, W
    one = pw.decompose(small_cnn, x, d.target[:, 1], ["input", "all"], keep_gradients=True)
    assert one.class_axis is None and one.classes == 1 and "one class per example" in repr(one)
    column = d.column(1)
    assert column.class_axis is None
    for name in d.layers:
        torch.testing.assert_close(column.contribution(name), one.contribution(name), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(column.bias[name], one.bias[name], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(column.pixel_map("input"), one.pixel_map("input"), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"j must be an int in \[0, 2\]"):
        d.column(3)
    with pytest.raises(ValueError, match="no class axis"):
        one.column(0)
    with pytest.raises(ValueError, match="class axis.*column"):  # a (B, k, H, W) map read as one map per image
        pw.metrics.keep_top(x, d.pixel_map("input"), 0.3)


def test_pixel_map_checks_size_and_mode_before_any_work(small_cnn):
    d = pw.decompose(small_cnn, torch.randn(1, 3, 16, 16, dtype=torch.float64), 0, ["input", "2", "11"])
    for size in (0, -3, (4,), (4, 0), 2.5, "big", True):
        with pytest.raises(ValueError, match="size must be a positive int"):
            d.pixel_map("input", size=size)
    with pytest.raises(ValueError, match="mode must be one of bilinear"):
        d.pixel_map("input", size=8, mode="linear")
    with pytest.raises(ValueError, match="mode must be one of"):  # checked even before the layer's shape
        d.pixel_map("11", mode="cubic")
    with pytest.raises(ValueError, match="no spatial map"):
        d.pixel_map("11")
    big = d.pixel_map("2", size=(32, 16), mode="nearest")
    assert big.shape == (1, 32, 16)
    torch.testing.assert_close(big[:, ::2], d.pixel_map("2"), rtol=0, atol=0)
