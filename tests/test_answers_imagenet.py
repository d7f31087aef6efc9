"""pwawidgets.answers.imagenet: each expected value equals the published solution's (the notebook's <details> block)
on a small float64 network, so that the check cells of notebooks 04–07 compare with the right value."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

import pwawidgets as pw
from pwawidgets.answers import imagenet as answers

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def solution(notebook: str, ident: str) -> dict:
    """The names defined by the published solution of exercise ``ident`` (run with torch in scope)."""
    nb = nbformat.read(next(NOTEBOOKS.glob(f"{notebook}_*.ipynb")), as_version=4)
    (cell,) = [c for c in nb.cells if f"solution-{ident}" in c.get("metadata", {}).get("tags", [])]
    (code,) = FENCE.findall(cell.source)
    scope = {"torch": torch}
    exec(code, scope)  # noqa: S102 - the course's own solution
    return scope


def _net(outputs: int = 4, bn: bool = False) -> nn.Module:
    torch.manual_seed(7)
    norm = [nn.BatchNorm2d(5)] if bn else []
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3), *norm, nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, outputs))
    if bn:
        with torch.no_grad():
            net[3].running_mean.uniform_(-0.5, 0.5)
            net[3].running_var.uniform_(0.5, 2.0)
            net[3].weight.uniform_(0.5, 1.5)
            net[3].bias.uniform_(-0.5, 0.5)
    return net.double().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 9, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_gradcam_and_the_gap(images):
    dec = pw.decompose(_net(), images, torch.tensor([0, 2, 3]), ["1", "4"], keep_gradients=True)
    my_gradcam = solution("04", "gradcam")["my_gradcam"]
    my_gap = solution("04", "gradcam-gap")["my_gap"]
    for layer in ("1", "4"):
        torch.testing.assert_close(answers.gradcam(dec, layer), my_gradcam(dec, layer), rtol=0, atol=1e-12)
        torch.testing.assert_close(answers.gradcam_gap(dec, layer), my_gap(dec, layer), rtol=0, atol=1e-12)
    assert answers.gradcam_gap(dec, "1").abs().max() > 1e-3, "the gap is not zero at a layer followed by a conv"


def test_odds_factors_from_the_contrast_network(images):
    net, a, b = _net(), 1, 3
    x = images[:1]
    dec_cat = pw.decompose(net, x, torch.tensor([[a, b]]), ["1", "4"])
    contrast = copy.deepcopy(net)
    contrast[-1] = nn.Linear(20, 1).double()
    with torch.no_grad():
        contrast[-1].weight.copy_(net[-1].weight[a] - net[-1].weight[b])
        contrast[-1].bias.copy_(net[-1].bias[a] - net[-1].bias[b])
    dec_ab = pw.decompose(contrast, x, 0, ["1", "4"])
    my_odds_factors = solution("04", "log-odds")["my_odds_factors"]
    p = net(x).softmax(dim=1)[0].detach()
    for layer in ("1", "4"):
        factors, rest = my_odds_factors(dec_cat, layer)
        torch.testing.assert_close(answers.odds_factors(dec_ab, layer), factors, rtol=1e-10, atol=0)
        product = factors.log().sum() + torch.log(torch.tensor(rest, dtype=torch.float64))
        torch.testing.assert_close(answers.log_odds(p, a, b), product, rtol=0, atol=1e-10)


def test_keep_mask_topk_and_the_floor():
    my_keep_mask = solution("05", "keep-mask")["my_keep_mask"]
    tied = torch.randint(0, 3, (4, 6, 5), generator=torch.Generator().manual_seed(2)).double()
    for fraction in (0.01, 0.3, 0.5, 1.0):
        assert torch.equal(answers.keep_mask(tied, fraction), my_keep_mask(tied, fraction))
    my_topk = solution("05", "topk")["my_topk_intersection"]
    g = torch.Generator().manual_seed(3)
    full, masked = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    masked[:2] = full[:2]
    for k in (1, 3, 5):
        torch.testing.assert_close(answers.topk_intersection(full, masked, k), my_topk(full, masked, k), rtol=0,
                                   atol=1e-12)
    assert answers.topk_floor(classes=6, k=5) == solution("05", "floor")["my_floor"]
    assert answers.topk_floor(classes=4, k=2) == 0.0 and answers.topk_floor(classes=5, k=3) == pytest.approx(1 / 3)


def test_bn_part_and_the_fgsm_change(images):
    net, labels = _net(bn=True), torch.tensor([0, 1, 2])
    w = pw.decompose(net, images, labels, ["3"], keep_gradients=True).gradient("3")
    bn_part = solution("06", "bn-shift")["bn_part"]
    torch.testing.assert_close(answers.bn_part(net, images, labels, "1", "3"), bn_part(net[3], w).detach(),
                               rtol=1e-10, atol=1e-12)
    w_in = pw.decompose(net, images, labels, ["input"], keep_gradients=True).gradient("input")
    predicted_change = solution("06", "fgsm-inside")["predicted_change"]
    torch.testing.assert_close(answers.fgsm_change(net, images, labels, 1e-9), predicted_change(w_in, 1e-9),
                               rtol=1e-5, atol=1e-15)


def test_affine_error(images):
    net, labels = _net(), torch.tensor([0, 1, 2])
    d = torch.randn(images.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    report = pw.verify(net, images, labels, direction=d, steps=(0.5, 5.0))
    w = pw.decompose(net, images, labels, ["input"], keep_gradients=True).gradient("input")
    my_affine_error = solution("07", "affine-check")["my_affine_error"]
    for j, step in enumerate(report.steps):
        t = report.radius * step
        mine = answers.affine_error(net, images, labels, w, d, t)
        torch.testing.assert_close(mine, my_affine_error(net, images, labels, w, d, t), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(mine, report.rel_error[:, j], rtol=1e-6, atol=1e-9)
