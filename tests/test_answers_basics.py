"""pwawidgets.answers.basics: each expected value equals the published solution's, on a small input.

The solution is the code of the notebook's ``<details>`` block (as tests/test_exercises.py reads it), run on small
objects built here; the answers function computes the same value by its own route.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pwawidgets as pw
from pwawidgets.answers import basics
from pwawidgets.regions import enumerate_regions, train_toy

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def solution(notebook: str, ident: str, **names) -> dict:
    """Run the published solution of exercise ``ident`` in a namespace holding ``names``; return the namespace."""
    nb = nbformat.read(NOTEBOOKS / notebook, as_version=4)
    (cell,) = [c for c in nb.cells if f"solution-{ident}" in c.get("metadata", {}).get("tags", [])]
    (code,) = FENCE.findall(cell.source)
    namespace = {"np": np, "torch": torch, "F": F, "pw": pw, **names}
    exec(code, namespace)  # noqa: S102 - the course's own published solution
    return namespace


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_split_by_hand():
    contrib = torch.randn(1, 3, 6, 6, generator=_gen(0), dtype=torch.float64)
    masks = torch.rand(2, 6, 6, generator=_gen(1)) > 0.6
    dec = SimpleNamespace(contribution=lambda layer: contrib)
    ns = solution("00_start_here.ipynb", "split-by-hand", d=dec, masks=masks)
    star, background = basics.split_by_hand(contrib, masks[:1, None].double())
    torch.testing.assert_close(star, ns["my_object"], rtol=0, atol=1e-12)
    torch.testing.assert_close(background, ns["my_background"], rtol=0, atol=1e-12)
    assert not torch.allclose(star, background)


@pytest.fixture(scope="module")
def toy():
    return train_toy("moons", hidden=(5, 5, 5), seed=0, steps=60)


def test_contributions(toy):
    ns = solution("01_toy_regions.ipynb", "contributions", regions=enumerate_regions(toy.model, toy.bounds))
    contrib, bias = basics.contributions(toy.model, ns["x1"])
    np.testing.assert_allclose(contrib, ns["contrib_x1"], rtol=0, atol=1e-10)
    assert abs(bias - ns["bias_x1"]) < 1e-10


@pytest.mark.parametrize("point", [(-1.0, 1.0), (0.5, -0.8), (1.2, 0.3), (-0.3, -0.9)])
def test_pattern_and_affine_map(toy, point):
    x = np.array(point)
    ns = solution("01_toy_regions.ipynb", "pattern")
    ns.update(solution("01_toy_regions.ipynb", "affine-map"))
    masks = ns["my_pattern"](toy.model, x)
    mine = basics.pattern(toy.model, x)
    np.testing.assert_array_equal(mine, np.concatenate(masks))
    W, b = ns["my_affine_map"](toy.model, mine.reshape(3, 5))
    W_ref, b_ref = basics.affine_map(toy.model, x)
    np.testing.assert_allclose(W_ref, W, rtol=0, atol=1e-10)
    np.testing.assert_allclose(b_ref, b, rtol=0, atol=1e-10)


def test_grad_x_input():
    ns = solution("02_affine_decomposition.ipynb", "grad-x-input")
    grad, gxi, bias, value = basics.grad_x_input(ns["x12"])
    torch.testing.assert_close(grad, ns["grad_mine"], rtol=0, atol=1e-12)
    torch.testing.assert_close(gxi, ns["gxi_mine"], rtol=0, atol=1e-12)
    assert abs(bias - ns["b_mine"]) < 1e-12 and abs(value - ns["f"].item()) < 1e-12


@pytest.fixture(scope="module")
def net64():
    return pw.load_model("mini_vgg_bn").double()


def test_split_with_a_hook_and_raw_bias(net64):
    images, labels, _ = pw.data.shapes(3, seed=11)
    x = images.double()
    plain = pw.load_model("mini_vgg").double()
    ns = solution("02_affine_decomposition.ipynb", "split-with-a-hook")
    _, _, b = ns["my_split"](plain, x, labels, "features.9")
    torch.testing.assert_close(basics.split_with_a_hook(plain, x, labels, "conv3"), b, rtol=1e-9, atol=1e-9)
    dec = pw.decompose(net64, x, labels, ["input", "normalize"], keep_gradients=True)
    ns = solution("02_affine_decomposition.ipynb", "raw-bias")
    raw, shift = basics.raw_bias(dec)
    m, s = net64.normalize.mean, net64.normalize.std
    torch.testing.assert_close(raw, ns["my_raw_bias"](dec, m, s), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(raw + shift, dec.bias["normalize"], rtol=0, atol=0)


def test_radius_by_hand():
    small = train_toy("moons", hidden=(8,), seed=0, steps=60)
    x, d = torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    ns = solution("02_affine_decomposition.ipynb", "radius-by-hand", toy=small, x_toy=x, d_toy=d)
    torch.testing.assert_close(basics.radius_by_hand(small.model, x, d).double(), ns["my_radius"].double(),
                               rtol=1e-9, atol=1e-12)


def test_pointing_game():
    maps = torch.randn(6, 8, 8, generator=_gen(2))
    masks = torch.rand(6, 32, 32, generator=_gen(3)) > 0.5
    ns = solution("03_small_cnn.ipynb", "pointing-game")
    got = basics.pointing_game(maps, masks)
    assert torch.equal(got.bool(), ns["my_pointing_game"](maps, masks).bool())


def test_ratio_mean():
    dec = SimpleNamespace(score=torch.tensor([2.0, -1.0, 0.5, 4.0, -3.0], dtype=torch.float64),
                          bias={"conv1": torch.tensor([1.0, 0.7, 0.4, -2.0, 5.0], dtype=torch.float64)})
    ns = solution("03_small_cnn.ipynb", "ratio-mean", dec_low=dec)
    mean, skipped = basics.ratio_mean(dec, "conv1")
    assert abs(mean - float(ns["my_mean_ratio"])) < 1e-12 and skipped == ns["my_skipped"] == 2


def test_gradcam_by_hand():
    w = torch.randn(2, 4, 5, 5, generator=_gen(4), dtype=torch.float64)
    h = torch.rand(2, 4, 5, 5, generator=_gen(5), dtype=torch.float64)
    ns = solution("03_small_cnn.ipynb", "gradcam-by-hand")
    got = basics.gradcam_by_hand(w, h)
    torch.testing.assert_close(got, ns["my_gradcam"](w, h), rtol=0, atol=1e-12)
    assert (got == 0).any() and (got > 0).any(), "the input exercises both sides of the ReLU"
