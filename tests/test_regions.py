"""Exact linear regions: checked against the network itself (float64), autograd, and known counts."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from pwawidgets import regions as R


@pytest.fixture(scope="module")
def toy() -> R.ToyNet:
    return R.train_toy("moons", (5, 5, 5), seed=0, steps=600)


@pytest.fixture(scope="module")
def big() -> tuple[nn.Sequential, R.Bounds]:
    return R.build_mlp((32, 32, 32, 32), n_out=3, seed=1), ((-3.0, 3.0), (-2.5, 3.5))


def torch_forward(model: nn.Module, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patterns (input of every ReLU > 0) and outputs, straight from the modules: independent of the library."""
    h = torch.as_tensor(pts, dtype=torch.float64)
    pats = []
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Sequential):
                continue
            if isinstance(mod, nn.ReLU):
                pats.append(h > 0)
            h = mod(h)
    return torch.cat(pats, 1).numpy(), h.numpy()


def grid(bounds: R.Bounds, n: int) -> np.ndarray:
    (x0, x1), (y0, y1) = bounds
    xs = x0 + (np.arange(n) + 0.37) / n * (x1 - x0)  # an offset keeps the grid off special lines like x = 0
    ys = y0 + (np.arange(n) + 0.61) / n * (y1 - y0)
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)


def in_convex(poly: np.ndarray, pts: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    e = np.roll(poly, -1, axis=0) - poly  # (k, 2)
    d = pts[:, None, :] - poly[None]  # (n, k, 2)
    cross = e[None, :, 0] * d[..., 1] - e[None, :, 1] * d[..., 0]
    return np.all(cross >= -tol, axis=1)


def check_consistency(model: nn.Module, rs: R.RegionSet, n: int) -> None:
    pts = grid(rs.bounds, n)
    pats, out = torch_forward(model, pts)
    by_pattern = {r.pattern.tobytes(): r for r in rs}
    assert len(by_pattern) == len(rs), "two regions share an activation pattern"
    keys = [p.tobytes() for p in pats]
    for key in set(keys):
        idx = np.flatnonzero([k == key for k in keys])
        r = by_pattern.get(key)
        assert r is not None, f"grid point {pts[idx[0]]} has a pattern no region has"
        assert in_convex(r.polygon, pts[idx]).all(), f"grid points outside region {r.index}"
        np.testing.assert_allclose(pts[idx] @ r.W.T + r.b, out[idx], rtol=0, atol=1e-9)


def test_grid_points_lie_in_the_region_of_their_pattern_3x5(toy: R.ToyNet) -> None:
    rs = R.enumerate_regions(toy.model, toy.bounds)
    assert 10 < len(rs) < R.region_upper_bound((5, 5, 5))
    check_consistency(toy.model, rs, 150)


def test_grid_consistency_on_a_4x32_net_with_three_outputs(big) -> None:
    model, bounds = big
    rs = R.enumerate_regions(model, bounds)
    assert len(rs) > 1000
    check_consistency(model, rs, 120)


def test_polygons_are_convex_ccw_and_tile_the_box(toy: R.ToyNet, big) -> None:
    for model, bounds in [(toy.model, toy.bounds), big]:
        rs = R.enumerate_regions(model, bounds)
        (x0, x1), (y0, y1) = bounds
        box_area = (x1 - x0) * (y1 - y0)
        total = 0.0
        for r in rs:
            P = r.polygon
            e = np.roll(P, -1, axis=0) - P
            turn = e[:, 0] * np.roll(e[:, 1], -1) - e[:, 1] * np.roll(e[:, 0], -1)
            assert np.all(turn >= -1e-12 * box_area), f"region {r.index} is not convex and counter-clockwise"
            total += 0.5 * np.sum(P[:, 0] * np.roll(P[:, 1], -1) - P[:, 1] * np.roll(P[:, 0], -1))
            assert P[:, 0].min() >= x0 - 1e-12 and P[:, 0].max() <= x1 + 1e-12
            assert P[:, 1].min() >= y0 - 1e-12 and P[:, 1].max() <= y1 + 1e-12
        assert total == pytest.approx(box_area, rel=1e-9)


def test_W_b_equal_the_jacobian_at_interior_points(toy: R.ToyNet, big) -> None:
    rng = np.random.default_rng(0)
    for model, bounds in [(toy.model, toy.bounds), big]:
        rs = R.enumerate_regions(model, bounds)
        (x0, x1), (y0, y1) = bounds
        big_enough = [r for r in rs if r.area > 1e-6 * (x1 - x0) * (y1 - y0)]
        for r in rng.permutation(big_enough)[:60]:
            x = torch.as_tensor(r.centroid)
            J = torch.func.jacrev(lambda t, m=model: m(t[None])[0])(x).detach().numpy()
            with torch.no_grad():
                f = model(x[None])[0].numpy()
            np.testing.assert_allclose(r.W, J, rtol=0, atol=1e-10)
            np.testing.assert_allclose(r.b, f - J @ r.centroid, rtol=0, atol=1e-9)
            pat, _ = torch_forward(model, r.centroid[None])
            assert np.array_equal(pat[0], r.pattern)


def test_partial_partitions_refine_and_map_onto_hidden_layers(toy: R.ToyNet) -> None:
    sets = R.enumerate_layers(toy.model, toy.bounds)
    assert [s.layer for s in sets] == [1, 2, 3]
    counts = [len(s) for s in sets]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert [len(R.enumerate_regions(toy.model, toy.bounds, k)) for k in (1, 2, 3)] == counts
    for k, rs in enumerate(sets, start=1):
        # Linear, ReLU pairs: the activations after hidden layer k (the outputs after the last one)
        trunk = toy.model if k == len(sets) else toy.model[: 2 * k]
        for r in rs:
            x = torch.as_tensor(r.centroid)
            J = torch.func.jacrev(lambda t, m=trunk: m(t[None])[0])(x).detach().numpy()
            np.testing.assert_allclose(r.W, J, rtol=0, atol=1e-10)
        # each final region sits inside the layer-k cell whose pattern is its prefix
        prefixes = {r.pattern.tobytes(): r for r in rs}
        n = rs[0].pattern.size
        for f in sets[-1]:
            cell = prefixes[f.pattern[:n].tobytes()]
            assert in_convex(cell.polygon, f.polygon, tol=1e-9).all()


def test_locate_and_evaluate_match_the_network(big) -> None:
    model, bounds = big
    rs = R.enumerate_regions(model, bounds)
    pts = np.random.default_rng(3).uniform([bounds[0][0], bounds[1][0]], [bounds[0][1], bounds[1][1]], (300, 2))
    _, out = torch_forward(model, pts)
    np.testing.assert_allclose(rs.evaluate(pts), out, rtol=0, atol=1e-9)
    r = rs.locate(pts[0])
    assert r.contains(pts[0])
    with pytest.raises(ValueError, match="outside"):
        rs.locate((100.0, 0.0))


def test_locate_on_a_boundary_vertex(toy: R.ToyNet) -> None:
    rs = R.enumerate_regions(toy.model, toy.bounds)
    v = rs[5].polygon[0]
    r = rs.locate(v)
    assert r.contains(v)


def test_single_layer_reaches_the_line_arrangement_count() -> None:
    """n lines in general position cut the plane into 1 + n + C(n, 2) regions: all seen in a box holding every
    crossing."""
    n = 7
    model = nn.Sequential(nn.Linear(2, n), nn.ReLU(), nn.Linear(n, 1)).double()
    torch.manual_seed(4)
    with torch.no_grad():
        model[0].weight.normal_()
        model[0].bias.normal_()
    A, c = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    crossings = np.array([np.linalg.solve(A[[i, j]], -c[[i, j]]) for i, j in itertools.combinations(range(n), 2)])
    lo, hi = crossings.min(0) - 1, crossings.max(0) + 1
    rs = R.enumerate_regions(model, ((lo[0], hi[0]), (lo[1], hi[1])))
    assert len(rs) == 1 + n + math.comb(n, 2) == R.region_upper_bound((n,))


def test_bounds_formulas() -> None:
    assert R.region_upper_bound((5, 5, 5), kind="product") == 16**3
    assert R.region_upper_bound((5, 5, 5), kind="serra") == 16**3  # widths >= n0 + 2: no reduction
    # widths (2, 2): j1 in {0, 1, 2} leaves d = 2, 1, 0 for layer 2: 1*4 + 2*3 + 1*1 = 11
    assert R.region_upper_bound((2, 2), kind="serra") == 11
    assert R.region_upper_bound((2, 2), kind="product") == 16
    assert R.region_upper_bound((1, 5), kind="product") == 2 * 6
    assert R.region_upper_bound((3, 3), kind="trivial") == 64
    assert R.montufar_lower_bound((4, 4)) == 2**2 * (1 + 4 + 6)
    assert R.montufar_lower_bound((6,)) == 1 + 6 + 15
    for widths in [(3,), (4, 4), (2, 3, 2), (8, 8, 8)]:
        s, p, t = (R.region_upper_bound(widths, kind=k) for k in ("serra", "product", "trivial"))
        assert s <= p <= t
        assert R.montufar_lower_bound(widths) <= s or min(widths) < 2


def test_grid_undercounts(big) -> None:
    model, bounds = big
    exact = len(R.enumerate_regions(model, bounds))
    seen = R.count_regions_on_grid(model, bounds, 100)
    pats, _ = torch_forward(model, np.stack(np.meshgrid(np.linspace(*bounds[0], 100), np.linspace(*bounds[1], 100)),
                                            -1).reshape(-1, 2))
    assert seen == len({p.tobytes() for p in pats})
    assert seen < exact


def test_decision_boundary_separates_every_class_change(toy: R.ToyNet) -> None:
    blobs = R.train_toy("blobs", (6, 6), seed=1, steps=400)
    for net in (toy, blobs):
        rs = R.enumerate_regions(net.model, net.bounds)
        lines = rs.decision_boundary()
        segs = np.concatenate([np.stack([p[:-1], p[1:]], 1) for p in lines])  # (S, 2, 2)
        # on the boundary the two top logits tie
        mids = segs.mean(1)
        _, out = torch_forward(net.model, mids)
        top2 = np.sort(out, axis=1)[:, -2:]
        assert np.abs(top2[:, 1] - top2[:, 0]).max() < 1e-9
        # every pair of neighbouring grid points with different predicted classes is separated by a segment
        pts = grid(net.bounds, 80)
        _, out = torch_forward(net.model, pts)
        cls = out.argmax(1).reshape(80, 80)
        ii, jj = np.nonzero(cls[:, 1:] != cls[:, :-1])
        P = pts.reshape(80, 80, 2)
        assert len(ii) > 0
        for i, j in zip(ii, jj, strict=True):
            assert _crosses_any(P[i, j], P[i, j + 1], segs), f"no boundary between {P[i, j]} and {P[i, j + 1]}"


def _crosses_any(p: np.ndarray, q: np.ndarray, segs: np.ndarray) -> bool:
    a, b = segs[:, 0], segs[:, 1]

    def orient(u, v, w):
        return (v[..., 0] - u[..., 0]) * (w[..., 1] - u[..., 1]) - (v[..., 1] - u[..., 1]) * (w[..., 0] - u[..., 0])

    d1, d2 = orient(a, b, p), orient(a, b, q)
    d3, d4 = orient(p, q, a), orient(p, q, b)
    return bool(np.any((d1 * d2 <= 0) & (d3 * d4 <= 0)))


def test_unjoined_boundary_pieces_lie_in_their_regions(toy: R.ToyNet) -> None:
    rs = R.enumerate_regions(toy.model, toy.bounds)
    for idx, (i, j), seg in rs.boundary_segments():
        assert in_convex(rs[idx].polygon, seg, tol=1e-9).all()
        assert (i, j) == (0, 1)
        f = seg @ rs[idx].W.T + rs[idx].b
        np.testing.assert_allclose(f[:, 0], f[:, 1], atol=1e-9)


def test_other_layer_layouts() -> None:
    torch.manual_seed(0)
    nested = nn.Sequential(
        nn.Sequential(nn.Linear(2, 6), nn.ReLU()),
        nn.Linear(6, 4), nn.Linear(4, 5), nn.ReLU(), nn.Dropout(0.5),
        nn.Sequential(nn.Linear(5, 4), nn.ReLU()),
    ).double().eval()  # two Linears in a row and a final ReLU
    bounds = ((-2.0, 2.0), (-2.0, 2.0))
    rs = R.enumerate_regions(nested, bounds)
    assert rs.widths == (6, 5, 4) and rs.n_outputs == 4
    check_consistency(nested, rs, 80)
    with pytest.raises(ValueError, match="Tanh"):
        R.enumerate_regions(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)), bounds)
    with pytest.raises(ValueError, match="2"):
        R.enumerate_regions(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), bounds)
    with pytest.raises(ValueError, match="upto_layer"):
        R.enumerate_regions(nested, bounds, upto_layer=5)


def test_float32_model_is_read_in_float64() -> None:
    model = R.build_mlp((4, 4), seed=2, dtype=torch.float32)
    rs = R.enumerate_regions(model, ((-2, 2), (-2, 2)))
    model64 = copy.deepcopy(model).double()  # the float32 weights, exactly, in float64
    check_consistency(model64, rs, 60)


def test_train_toy_is_seeded_and_learns() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = R.train_toy("xor", (8, 8), seed=3, steps=300)
    assert torch.equal(torch.rand(3), expected), "training must leave the global RNG alone"
    b = R.train_toy("xor", (8, 8), seed=3, steps=300)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert a.accuracy > 0.85
    calls = []
    R.train_toy("circles", (4,), seed=0, steps=100, progress=lambda s, t: calls.append((s, t)))
    assert calls[-1] == (100, 100)
    with pytest.raises(ValueError, match="unknown data set"):
        R.make_toy_data("spirals")


def test_pattern_to_affine_map_and_checkers(toy: R.ToyNet, capsys) -> None:
    rs = R.enumerate_regions(toy.model, toy.bounds)
    r = max(rs, key=lambda r: r.area)
    W, b = R.affine_map_from_pattern(toy.model, r.layer_patterns)
    np.testing.assert_allclose(W, r.W, atol=1e-12)
    np.testing.assert_allclose(b, r.b, atol=1e-12)
    x = r.centroid
    assert R.check_affine_map(W, b, toy.model, x) is True
    assert R.check_affine_map(W + 1e-3, b, toy.model, x) is False
    assert R.check_affine_map(None, b, toy.model, x) is None
    assert R.check_pattern(r.layer_patterns, toy.model, x) is True
    flipped = r.pattern.copy()
    flipped[0] = ~flipped[0]
    assert R.check_pattern(flipped, toy.model, x) is False
    assert R.check_contributions(W[1] * x, b[1], toy.model, x, 1) is True
    assert R.check_contributions(W[1], b[1], toy.model, x, 1) is False
    out = capsys.readouterr().out
    assert "not done yet" in out and "PASS" in out and "FAIL" in out


def test_region_growth_rows() -> None:
    rows = R.region_growth([(4,), (4, 4)], train=False, resolution=60, progress=False)
    assert [r["depth"] for r in rows] == [1, 2]
    for r in rows:
        assert r["grid"] <= r["exact"] <= r["serra"] <= r["product"]
