"""robustness.random_sign: FGSM's step with random signs, checked against the network and FGSM itself."""

from __future__ import annotations

import pytest
import torch

import pwawidgets as pw
from pwawidgets import robustness as R


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return pw.zoo.load("mini_vgg_bn").double()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return pw.data.shapes(5, seed=21).images.double()


def test_same_size_as_fgsm_in_every_norm_and_the_scores_are_the_network_s(net, images):
    eps = 2 / 255
    noise = R.random_sign(net, images, None, eps, draws=3, seed=7)
    step = R.fgsm(net, images, None, eps).delta
    assert noise.kind == "random_sign" and noise.perturbed.shape == (5, 3)
    assert torch.equal(noise.delta.abs(), step.abs())  # every entry is +-eps, as FGSM's
    assert 0.4 < float((noise.delta > 0).double().mean()) < 0.6  # random signs, not FGSM's
    with torch.no_grad():
        logits = net(images + noise.delta)
    assert torch.allclose(noise.perturbed[:, -1], logits.gather(1, noise.target[:, None])[:, 0], rtol=0, atol=1e-12)
    assert torch.equal(noise.flipped[:, -1], logits.argmax(1) != net(images).argmax(1))


def test_inside_the_region_the_change_is_w_dot_delta(net, images):
    noise = R.random_sign(net, images, None, 1e-9, draws=1, seed=3)
    w = pw.decompose(net, images, noise.target, ["input"], keep_gradients=True).gradient("input")
    predicted = (w * noise.delta).flatten(1).sum(1)
    assert torch.allclose(noise.perturbed[:, 0] - noise.clean, predicted, rtol=1e-5, atol=1e-14)


def test_seeded_and_independent_of_batching(net, images):
    a = R.random_sign(net, images, None, 4 / 255, draws=2, seed=5)
    b = R.random_sign(net, images, None, 4 / 255, draws=2, seed=5, batch_size=2)
    c = R.random_sign(net, images, None, 4 / 255, draws=2, seed=6)
    assert torch.allclose(a.perturbed, b.perturbed, rtol=0, atol=1e-12) and torch.equal(a.delta, b.delta)
    assert not torch.equal(a.delta, c.delta)


def test_bad_size_is_named(net, images):
    with pytest.raises(ValueError, match="eps"):
        R.random_sign(net, images, None, -1.0)
