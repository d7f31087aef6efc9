"""The checks every decomposition-like call shares: inputs, normalisation, logits, targets, layer tensors."""

import pytest
import torch
from torch import nn

from pwawidgets.calls import (
    check_raw_input,
    input_normalization,
    layer_passes,
    logits_of,
    parse_targets,
    prepare_inputs,
    select_scores,
)
from pwawidgets.layers import LayerSpec


@pytest.fixture
def model():
    return nn.Sequential(nn.Linear(3, 4)).double()


def test_prepare_inputs_casts_to_the_model_dtype_as_a_fresh_leaf(model):
    x = torch.rand(2, 3)
    (prepared,) = prepare_inputs(model, x, wants_input=True)
    assert prepared.dtype == torch.float64 and prepared.requires_grad and prepared.is_leaf
    assert not x.requires_grad  # the caller's tensor is untouched
    torch.testing.assert_close(prepared.detach(), x.double(), rtol=0, atol=0)


@pytest.mark.parametrize("bad, error, words", [
    ([[1.0, 2.0, 3.0]], TypeError, "must be a tensor"),
    (torch.zeros(0, 3), ValueError, "at least one example"),
    (torch.zeros(2, 3, dtype=torch.uint8), TypeError, "x.float() / 255"),
    (torch.zeros(2, 3, dtype=torch.bool), TypeError, "real floats"),
])
def test_prepare_inputs_refuses_what_it_cannot_use(model, bad, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        prepare_inputs(model, bad, wants_input=True)


def test_integer_inputs_pass_unless_the_input_layer_is_asked(model):
    tokens = torch.tensor([[1, 2]])
    assert prepare_inputs(model, tokens, wants_input=False)[0].dtype == torch.int64
    with pytest.raises(ValueError, match="after the embedding"):
        prepare_inputs(model, tokens, wants_input=True)


def test_input_normalization_only_when_raw_input_is_asked(model):
    assert input_normalization(model, None, "normalized", True) is None
    assert input_normalization(model, None, "raw", False) is None  # "input" not among the layers
    with pytest.raises(ValueError, match="needs the input normalisation"):
        input_normalization(model, None, "raw", True)
    with pytest.raises(ValueError, match="every std > 0"):
        input_normalization(model, ((0.5,), (0.0,)), "raw", True)
    with pytest.raises(ValueError, match="'normalized' or 'raw'"):
        input_normalization(model, None, "pixels", True)
    norm = ((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    assert input_normalization(model, norm, "raw", True) == norm
    with pytest.raises(ValueError, match="C = 3 channels"):
        check_raw_input(torch.zeros(1, 1, 4, 4), norm)


def test_logits_of_names_what_the_model_returned():
    logits = torch.zeros(2, 5)
    assert logits_of(logits) is logits
    for output, words in [((logits, logits), "tuple of 2"), ({"logits": logits}, "keys"),
                          (torch.zeros(2, 3, 4), "shape \\(2, 3, 4\\)")]:
        with pytest.raises(ValueError, match=words):
            logits_of(output)


def test_select_scores_reads_every_target_form():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 5.0]], requires_grad=True)
    predicted, _ = select_scores(None, logits)
    assert predicted.targets.flatten().tolist() == [1, 2] and not predicted.per_class
    assert predicted.scores.flatten().tolist() == [3.0, 5.0]
    top2, _ = select_scores("top2", logits)
    assert top2.targets.tolist() == [[1, 2], [2, 0]] and top2.per_class
    each, _ = select_scores([0, 1], logits)
    assert each.scores.flatten().tolist() == [0.0, 0.0]
    assert select_scores(2, logits)[0].targets.flatten().tolist() == [2, 2]
    for bad, error in [("top4", ValueError), (True, TypeError), (1.5, TypeError), ([0], ValueError), (3, ValueError),
                       (-1, ValueError), ("best", ValueError)]:
        with pytest.raises(error):
            select_scores(bad, logits)


def test_parsed_targets_are_the_parsers_own_tensors():
    """A long target tensor used to come back as itself (or a view of it): an in-place edit of the caller's
    tensor after the call changed the result's targets."""
    logits = torch.zeros(2, 4)
    for given in (torch.tensor([1, 3]), torch.tensor([[1, 2], [3, 0]]), torch.tensor(2)):
        parsed, _ = parse_targets(given, logits)
        expected = parsed.clone()
        given.fill_(0) if given.dim() else given.zero_()
        assert torch.equal(parsed, expected)


def test_one_class_per_example_is_checked_from_the_target_form():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 5.0]])
    assert parse_targets("top1", logits, one_per_example=True)[0].tolist() == [[1], [2]]
    assert parse_targets(torch.tensor([[2], [0]]), logits, one_per_example=True)[0].tolist() == [[2], [0]]
    for several in ("top2", torch.zeros(2, 2, dtype=torch.long), [[0, 1], [1, 2]]):
        with pytest.raises(ValueError, match="one class per example.*from_decomposition"):
            parse_targets(several, logits, one_per_example=True)
        parse_targets(several, logits)  # fine without the restriction


def test_layer_pass_at_the_input_in_raw_pixels():
    normalised = torch.tensor([[[[1.0]], [[-1.0]]]])
    norm = ((0.5, 0.25), (0.2, 0.5))
    (at_input,) = layer_passes(LayerSpec("input", None), normalised, norm)
    torch.testing.assert_close(at_input.value, torch.tensor([[[[0.7]], [[-0.25]]]]))
    torch.testing.assert_close(at_input.scale.flatten(), torch.tensor([0.2, 0.5]))
    (hidden,) = layer_passes(LayerSpec("fc", "fc"), normalised, norm)
    assert hidden.scale is None and torch.equal(hidden.value, normalised)
