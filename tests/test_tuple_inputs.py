"""decompose with several model inputs (a tuple) and additional_forward_args: the contributions of every input plus
the bias make the score, checked in float64 against the network with each example's ReLU pattern frozen."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pwawidgets as pw
from pwawidgets.audit import Call, audit
from pwawidgets.core import layer_biases


class ImageAndSide(nn.Module):
    """An image and a side vector: conv features of the image concatenated with the side vector, then an MLP;
    ``scale`` and ``offset`` (additional arguments) multiply and shift the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu0 = nn.ReLU()
        self.fc1 = nn.Linear(3 * 4 * 4 + 5, 8)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(8, 4)

    def features(self, image: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.relu0(self.conv(image)).flatten(1), side], dim=1)

    def forward(self, image: torch.Tensor, side: torch.Tensor, scale: float = 1.0,
                offset: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.fc2(self.relu1(self.fc1(self.features(image, side)))) * scale
        return logits if offset is None else logits + offset


def frozen(model: ImageAndSide, image: torch.Tensor, side: torch.Tensor, gates: tuple) -> torch.Tensor:
    """The network with the ReLU pattern ``gates`` held fixed: an affine function of ``(image, side)``."""
    hidden = torch.cat([(gates[0] * model.conv(image)).flatten(1), side], dim=1)
    return model.fc2(gates[1] * model.fc1(hidden))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = ImageAndSide().double().eval()
    image = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    side = torch.randn(3, 5, dtype=torch.float64)
    return model, image, side


def _gates(model: ImageAndSide, image: torch.Tensor, side: torch.Tensor) -> tuple:
    with torch.no_grad():
        g0 = (model.conv(image) > 0).double()
        g1 = (model.fc1(model.features(image, side)) > 0).double()
    return g0, g1


def test_contributions_per_input_and_bias_match_the_frozen_network(setup) -> None:
    model, image, side = setup
    target = [0, 3, 1]
    dec = pw.decompose(model, (image, side), target)
    c_image, c_side = dec.contributions["input"]
    assert c_image.shape == image.shape and c_side.shape == side.shape
    gates = _gates(model, image, side)
    rows = torch.arange(3)
    with torch.no_grad():
        at_zero = frozen(model, torch.zeros_like(image), torch.zeros_like(side), gates)[rows, target]
        image_only = frozen(model, image, torch.zeros_like(side), gates)[rows, target] - at_zero
        side_only = frozen(model, torch.zeros_like(image), side, gates)[rows, target] - at_zero
    torch.testing.assert_close(dec.bias["input"], at_zero, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_image.flatten(1).sum(1), image_only, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_side.sum(1), side_only, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dec.contribution_sum("input") + dec.bias["input"], model(image, side)[rows, target]
                               .detach(), rtol=1e-12, atol=1e-12)
    # per unit: the frozen network's slope along each side coordinate, by a finite difference (exact: it is affine)
    for k in range(5):
        step = torch.zeros_like(side)
        step[:, k] = 1.0
        with torch.no_grad():
            slope = (frozen(model, image, side + step, gates) - frozen(model, image, side, gates))[rows, target]
        torch.testing.assert_close(c_side[:, k], slope * side[:, k], rtol=1e-10, atol=1e-12)


def test_layer_contributions_do_not_change_with_tuple_inputs(setup) -> None:
    model, image, side = setup
    dec = pw.decompose(model, (image, side), 2, ["input", "relu1"], keep_gradients=True)
    gates = _gates(model, image, side)
    h = (gates[1] * model.fc1(model.features(image, side))).detach()
    torch.testing.assert_close(dec.contributions["relu1"], h * model.fc2.weight[2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dec.bias["relu1"], model.fc2.bias[2].detach().expand(3), rtol=1e-12, atol=1e-12)
    assert isinstance(dec.gradients["input"], tuple) and len(dec.gradients["input"]) == 2
    biases = layer_biases(model, (image, side), 2, ["input", "relu1"])
    torch.testing.assert_close(biases.bias[:, 0], torch.stack([dec.bias["input"], dec.bias["relu1"]], 1),
                               rtol=1e-12, atol=1e-12)


def test_several_classes_and_column(setup) -> None:
    model, image, side = setup
    dec = pw.decompose(model, (image, side), "top2")
    assert dec.contributions["input"][0].shape == (3, 2, 2, 4, 4)
    one = dec.column(1)
    direct = pw.decompose(model, (image, side), dec.target[:, 1])
    for a, b in zip(one.contributions["input"], direct.contributions["input"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="tuple of 2 tensors"):
        dec.pixel_map("input")


def test_additional_forward_args_are_constants(setup) -> None:
    model, image, side = setup
    plain = pw.decompose(model, (image, side), 1)
    scaled = pw.decompose(model, (image, side), 1, additional_forward_args=(2.5,))
    for a, b in zip(scaled.contributions["input"], plain.contributions["input"], strict=True):
        torch.testing.assert_close(a, 2.5 * b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(scaled.score, 2.5 * plain.score, rtol=1e-12, atol=1e-12)
    offset = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    shifted = pw.decompose(model, (image, side), 1, additional_forward_args=(1.0, offset))
    torch.testing.assert_close(shifted.bias["input"] - plain.bias["input"], offset[:, 1].detach(), rtol=1e-12,
                               atol=1e-12)  # a tensor among the arguments lands in the bias
    assert offset.grad is None


def test_one_tensor_in_a_tuple_gives_a_tuple_and_one_argument_needs_no_tuple() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    (alone,) = pw.decompose(model, (x,), 0).contributions["input"]
    torch.testing.assert_close(alone, pw.decompose(model, x, 0).contributions["input"], rtol=0, atol=0)

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
            return self.net(x) * scale

    a = pw.decompose(Scaled(), x, 0, additional_forward_args=3.0)
    b = pw.decompose(Scaled(), x, 0, additional_forward_args=(3.0,))
    torch.testing.assert_close(a.contributions["input"], b.contributions["input"], rtol=0, atol=0)


@pytest.mark.parametrize("inputs, error, words", [
    ((), ValueError, "empty tuple"),
    ((torch.zeros(2, 2, 4, 4), torch.zeros(3, 5)), ValueError, r"disagree on the batch size.*\[2, 3\]"),
    ((torch.zeros(2, 2, 4, 4), [0.0] * 5), TypeError, r"inputs\[1\] must be a tensor.*additional_forward_args"),
    ((torch.zeros(2, 2, 4, 4), torch.zeros(2, 5, dtype=torch.uint8)), TypeError, r"inputs\[1\] is a uint8"),
])
def test_bad_tuples_are_refused_before_any_work(setup, inputs, error, words: str) -> None:
    model = setup[0]
    with pytest.raises(error, match=words):
        pw.decompose(model, inputs, 0)


def test_nan_in_one_input_is_named(setup) -> None:
    model, image, side = setup
    bad = side.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"inputs\[1\] hold NaN.*\[1\]"):
        pw.decompose(model, (image, bad), 0)


def test_calls_that_take_one_tensor_say_so(setup) -> None:
    model, image, side = setup
    with pytest.raises(ValueError, match="reference='raw' takes one image batch"):
        pw.decompose(model, (image, side), 0, reference="raw", normalization=((0.0, 0.0), (1.0, 1.0)))
    with pytest.raises(ValueError, match="one input tensor"):
        pw.bias_sources(model, (image, side), 0)
    with pytest.raises(ValueError, match="verify takes one input tensor"):
        pw.verify(model, (image, side), 0)


class Gated(nn.Module):
    """``relu(fc(x)) * m``: piece-wise affine in ``x`` when ``m`` is a constant, not when it is an input too."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, m: torch.Tensor, flip: bool = False) -> torch.Tensor:
        out = torch.relu(self.fc(x)) * m
        if flip:
            out = -out
        return out


def test_the_audit_traces_several_inputs_and_constant_arguments() -> None:
    model = Gated()
    both_inputs = audit(model, call=Call(2, ()))
    assert both_inputs.traced and any("product" in f.why for f in both_inputs.offending)
    constant_m = audit(model, call=Call(1, (torch.ones(1, 2), True)))
    assert constant_m.traced and constant_m.verified  # the flag is traced with its value
    x, m = torch.randn(2, 3), torch.rand(2, 2)
    with pytest.raises(ValueError, match="(?s)not piece-wise affine.*product"):
        pw.decompose(model, (x, m), 0)
    for flip in (False, True):
        dec = pw.decompose(model.double(), x.double(), 0, additional_forward_args=(m.double(), flip))
        assert dec.exact
        torch.testing.assert_close(dec.contribution_sum("input") + dec.bias["input"],
                                   model(x.double(), m.double(), flip)[:, 0].detach(), rtol=1e-12, atol=1e-12)


def test_a_frozen_embedding_is_decomposed_at_its_output() -> None:
    """No parameter before the layer requires grad and the inputs are integers: the layer is still decomposed (it
    was refused before: 'the scores do not depend on the inputs through autograd')."""
    torch.manual_seed(5)
    embed = nn.Embedding(7, 4).double()
    model = nn.Sequential(embed, nn.ReLU(), nn.Flatten(), nn.Linear(8, 3).double())
    for p in model.parameters():
        p.requires_grad = False
    tokens = torch.tensor([[1, 6], [3, 3]])
    dec = pw.decompose(model, tokens, [2, 0], ["0"])
    e = embed(tokens)
    gate = (e > 0).double().flatten(1)
    w = model[3].weight[[2, 0]] * gate  # the slope of each score along the embedding output, pattern frozen
    torch.testing.assert_close(dec.contributions["0"].flatten(1), w * e.flatten(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dec.bias["0"], model[3].bias[[2, 0]], rtol=1e-12, atol=1e-12)
