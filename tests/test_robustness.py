"""Perturbation responses (noise, FGSM, PGD) and the statistics used to set them against the bias ratio."""

from __future__ import annotations

import pytest
import scipy.stats
import torch

import pwawidgets as pw
from pwawidgets import robustness as R


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return pw.zoo.load("mini_vgg_bn").double()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return pw.data.shapes(6, seed=21).images.double()


def test_fgsm_inside_the_region_moves_the_score_by_eps_times_the_l1_norm_of_w(net, images):
    eps = 1e-9  # far inside the linear region
    dec = pw.decompose(net, images, None, ["input"], keep_gradients=True)
    response = R.fgsm(net, images, None, eps)
    assert torch.equal(response.target, dec.target)
    torch.testing.assert_close(response.clean, dec.score)
    radius = R.radius_along(net, images, response.delta)
    assert (radius > 1).all()
    expected = -eps * dec.gradient("input").abs().flatten(1).sum(1)
    torch.testing.assert_close(response.perturbed[:, 0] - response.clean, expected, rtol=1e-5, atol=0)
    assert not response.flipped.any()


def test_fgsm_at_a_layer_uses_the_layer_rms_and_its_gradient(net, images):
    eps = 1e-9
    layer = "features.1"  # a BatchNorm output: no zero units tied in a max-pool window (a ReLU output has them)
    dec = pw.decompose(net, images, 2, [layer], keep_gradients=True)
    response = R.fgsm(net, images, 2, eps, layer=layer)
    assert (R.radius_along(net, images, response.delta, layer) > 1).all()
    h = dec.activation(layer)
    rms = h.flatten(1).pow(2).mean(1).sqrt()
    assert response.delta.shape == h.shape
    torch.testing.assert_close(response.delta.abs().flatten(1).amax(1), eps * rms)
    expected = -eps * rms * dec.gradient(layer).abs().flatten(1).sum(1)
    torch.testing.assert_close(response.perturbed[:, 0] - response.clean, expected, rtol=1e-5, atol=0)


def test_input_sizes_are_raw_pixels_divided_by_the_normalisation_std():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2)).double()
    model.preprocessing = pw.Preprocessing(4, 4, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    delta = R.fgsm(model, x, 0, 0.1).delta
    torch.testing.assert_close(delta.abs().amax((0, 2, 3)), torch.tensor([0.4, 0.2, 0.1], dtype=torch.float64))


def test_pgd_one_full_step_is_fgsm_and_stays_in_the_ball(net, images):
    one = R.pgd(net, images, None, 2 / 255, steps=1, step_size=2 / 255)
    torch.testing.assert_close(one.delta, R.fgsm(net, images, None, 2 / 255).delta)
    five = R.pgd(net, images, None, 2 / 255, steps=5)
    bound = 2 / 255 / torch.tensor(net.preprocessing.std, dtype=torch.float64).view(1, -1, 1, 1)
    assert (five.delta.abs() <= bound + 1e-15).all()
    assert (five.drop >= one.drop - 1e-9).float().mean() >= 0.5  # more steps lower the score at least as much


def test_gaussian_is_seeded_and_zero_noise_changes_nothing(net, images):
    a = R.gaussian(net, images, None, 8 / 255, draws=3, seed=4)
    b = R.gaussian(net, images, None, 8 / 255, draws=3, seed=4)
    assert torch.equal(a.perturbed, b.perturbed) and a.perturbed.shape == (6, 3)
    assert a.relative_change.shape == (6,) and a.flip_rate.shape == (6,)
    zero = R.gaussian(net, images, None, 0.0, draws=2)
    assert torch.equal(zero.perturbed[:, 0], zero.clean) and not zero.flipped.any()
    layer = R.gaussian(net, images, None, 0.05, layer="conv2", draws=2)
    assert layer.layer == "conv2" and (layer.relative_change > 0).all()


def test_spearman_matches_scipy_with_ties_and_nans():
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (40,), generator=gen).double()
    b = a + torch.randn(40, generator=gen, dtype=torch.float64)
    assert R.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    a[3] = float("nan")
    keep = ~a.isnan()
    assert R.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a[keep], b[keep]).statistic, abs=1e-12)
    assert torch.isnan(torch.tensor(R.spearman(torch.ones(5), torch.arange(5.0))))


def test_bootstrap_intervals():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, generator=gen, dtype=torch.float64)
    perfect = R.correlation(x, 2 * x + 1, n=200)
    assert (perfect.value, perfect.low, perfect.high) == (pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0))
    noisy = R.correlation(x, x + 2 * torch.randn(200, generator=gen, dtype=torch.float64), n=300, seed=2)
    assert noisy.low < noisy.value < noisy.high and noisy.excludes_zero and noisy.n == 200
    assert R.correlation(x, x.flip(0), n=300, seed=2) == R.correlation(x, x.flip(0), n=300, seed=2)
    diff = R.paired_difference(x + 0.5, x, n=100)
    assert diff.value == pytest.approx(0.5) and diff.low == pytest.approx(0.5)
    wide = R.paired_difference(x, torch.zeros(200, dtype=torch.float64), n=500)
    assert wide.low < 0 < wide.high or wide.excludes_zero  # an interval around the sample mean
    assert str(noisy).count("[") == 1


def test_vectorised_intervals_equal_the_generic_bootstrap():
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(0, 4, (60,), generator=gen).double()  # ties
    b = (torch.rand(60, generator=gen) < 0.3).double() + 0.1 * a  # a binary-ish outcome, ties too
    fast, slow = R.correlation(a, b, n=200, seed=5), R.bootstrap(R.spearman, a, b, n=200, seed=5)
    assert (fast.value, fast.low, fast.high) == pytest.approx((slow.value, slow.low, slow.high), abs=1e-12)
    fast = R.paired_difference(a, b, n=200, seed=5)
    slow = R.bootstrap(lambda u, v: float((u - v).mean()), a, b, n=200, seed=5)
    assert (fast.value, fast.low, fast.high) == pytest.approx((slow.value, slow.low, slow.high), abs=1e-12)
    rows = torch.stack([a, b, a.flip(0)])
    assert torch.equal(R._ranks(rows), torch.stack([R._ranks(r) for r in rows]))
    torch.testing.assert_close(R._ranks(a), torch.tensor(scipy.stats.rankdata(a) - 1, dtype=torch.float64))


def test_batches_give_the_same_responses(net, images):
    for fn, kwargs in ((R.gaussian, {"draws": 2, "seed": 3}), (R.fgsm, {}), (R.pgd, {"steps": 2})):
        whole = fn(net, images, None, 4 / 255, **kwargs)
        parts = fn(net, images, None, 4 / 255, batch_size=4, **kwargs)
        for name in ("target", "clean", "perturbed", "flipped", "delta"):
            a, b = getattr(whole, name), getattr(parts, name)
            assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-12, atol=1e-12), (fn.__name__, name)
    direction = R.fgsm(net, images, None, 1e-3).delta
    torch.testing.assert_close(R.radius_along(net, images, direction, batch_size=4),
                               R.radius_along(net, images, direction))


def test_matched_pair_is_the_paired_difference_of_each_measure():
    plain, with_bn = pw.load_model("mini_vgg"), pw.load_model("mini_vgg_bn")
    shapes = pw.data.shapes(12, seed=99)
    x, y = shapes.images, shapes.labels
    found = R.matched_pair(with_bn, plain, x, y, eps=2 / 255, sigma=8 / 255, n=200, seed=3)
    assert list(found) == ["bias / score at the input", "score change, noise σ=0.0314",
                           "score drop, FGSM ε=0.00784", "prediction changed, FGSM ε=0.00784"]
    decs = [pw.decompose(m, x, y, ["input"]) for m in (with_bn, plain)]
    ratio = [torch.where(d.score > 0, d.bias_ratio("input"), torch.nan) for d in decs]  # positive scores only
    expected = R.paired_difference(ratio[0], ratio[1], n=200, seed=3)
    assert found["bias / score at the input"].value == pytest.approx(expected.value, rel=1e-6)
    drops = [R.fgsm(m, x, y, 2 / 255).drop for m in (with_bn, plain)]
    assert found["score drop, FGSM ε=0.00784"].value == pytest.approx(float((drops[0] - drops[1]).mean()), rel=1e-6)
    assert all(e.low <= e.value <= e.high for e in found.values())


def test_targets_go_through_the_one_parser_and_layer_none_is_the_input(net, images):
    x = images[:2]
    predicted = net(x).argmax(1)
    for target in (None, "top1", predicted, predicted[:, None], predicted.tolist()):
        response = R.fgsm(net, x, target, 1 / 255)
        assert torch.equal(response.target, predicted)
    at_default, at_input = R.fgsm(net, x, 3, 1 / 255, None), R.fgsm(net, x, 3, 1 / 255, "input")
    torch.testing.assert_close(at_default.perturbed, at_input.perturbed)
    with pytest.raises(ValueError, match="one class per example"):
        R.gaussian(net, x, "top2")
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        R.fgsm(net, x, 6)
    with pytest.raises(ValueError, match="one per example"):
        R.fgsm(net, x, [1, 2, 3])


# ------------------------------------------------------------- random_sign: FGSM's step with random signs


def test_same_size_as_fgsm_in_every_norm_and_the_scores_are_the_network_s(net, images):
    eps = 2 / 255
    noise = R.random_sign(net, images, None, eps, draws=3, seed=7)
    step = R.fgsm(net, images, None, eps).delta
    assert noise.kind == "random_sign" and noise.perturbed.shape == (len(images), 3)
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
