"""metrics.tie_counts against hand cases and a brute-force count over random maps with many ties."""

from __future__ import annotations

import pytest
import torch

from pwawidgets import metrics


def test_hand_cases():
    flat = torch.zeros(2, 5, 7)  # keep round(0.3 * 35) = round(10.5) = 10 cells, all of them by the tie rule
    found = metrics.tie_counts(flat, 0.3)
    assert found["zeros"].tolist() == [35, 35] and found["tied"].tolist() == [35, 35]
    assert found["by_tie_rule"].tolist() == [10, 10]
    one = torch.tensor([[[3.0, 2.0], [2.0, 1.0]]])  # keep 2: the 3, then one of the two 2s
    assert {k: v.tolist() for k, v in metrics.tie_counts(one, 0.5).items()} == {
        "zeros": [0], "tied": [2], "by_tie_rule": [1]}
    # the tie lies wholly inside the kept cells: nothing is left to the rule
    inside = torch.tensor([[[2.0, 2.0], [1.0, 0.0]]])
    assert {k: v.tolist() for k, v in metrics.tie_counts(inside, 0.5).items()} == {
        "zeros": [1], "tied": [2], "by_tie_rule": [0]}
    distinct = torch.arange(12.0).view(1, 3, 4)
    assert [int(v) for v in metrics.tie_counts(distinct, 0.3).values()] == [1, 0, 0]


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_brute_force_on_random_maps(fraction):
    maps = torch.randint(-2, 3, (6, 4, 5), generator=torch.Generator().manual_seed(3)).double()
    found = metrics.tie_counts(maps, fraction)
    kept = metrics.top_fraction_mask(maps, fraction)
    for b in range(len(maps)):
        values, keep = maps[b].flatten().tolist(), kept[b].flatten().tolist()
        assert int(found["zeros"][b]) == sum(v == 0 for v in values)
        assert int(found["tied"][b]) == sum(values.count(v) > 1 for v in values)
        left_out = {v for v, k in zip(values, keep, strict=True) if not k}
        assert int(found["by_tie_rule"][b]) == sum(k and v in left_out for v, k in zip(values, keep, strict=True))


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        metrics.tie_counts(torch.tensor([[[0.0, float("nan")]]]), 0.5)
    with pytest.raises(ValueError, match="fraction"):
        metrics.tie_counts(torch.zeros(1, 2, 2), 0.0)
