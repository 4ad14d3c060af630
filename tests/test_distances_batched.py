"""The batched torch entropic GW solver against POT's entropic_gromov_wasserstein2."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import ot
import pytest
import zarr
from conftest import blob_heatmaps, gw_matrix
from scipy.spatial.distance import cdist

from poisonscan.clustering import SpectralRelevanceAnalysis
from poisonscan.distances import (
    BatchedGWOptions,
    GWParams,
    _solvers,
    _store,
    batched_entropic_gw,
    compute_tile,
    heatmap_support,
    prepare_spaces,
    solve_pairs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def two_groups(n_clean: int, n_patch: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """One broad blob each; the last ``n_patch`` put 60 % of their mass on a corner patch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    corners = [(0, 0), (0, size - 3), (size - 3, 0), (size - 3, size - 3)]
    maps = []
    for k in range(n_clean + n_patch):
        cy, cx = rng.uniform(5, size - 5, 2)
        h = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(8, 14))
        h = h / h.sum() + 0.05 * rng.random((size, size)) / size**2
        h /= h.sum()
        if k >= n_clean:
            r, c = corners[k % 4]
            h *= 0.4
            h[r : r + 3, c : c + 3] += 0.6 / 9
        maps.append(h)
    return np.stack(maps)


def pack(clouds: list[tuple[np.ndarray, np.ndarray]], size: int | None = None):
    size = size or max(len(w) for _, w in clouds)
    x = np.zeros((len(clouds), size, 2))
    p = np.zeros((len(clouds), size))
    for k, (c, w) in enumerate(clouds):
        x[k, : len(w)], p[k, : len(w)] = c, w
    return x, p


def pot_entropic(c1, c2, metric: str, eps: float) -> float:
    (x1, p1), (x2, p2) = c1, c2
    return float(
        ot.gromov.entropic_gromov_wasserstein2(
            cdist(x1, x1, metric), cdist(x2, x2, metric), p1, p2, "square_loss",
            epsilon=eps, max_iter=1000, tol=1e-9,
        )
    )  # fmt: skip


F64 = {"dtype": "float64", "rtol": 0.0, "tol": 1e-9, "inner_tol": 1e-9}
F32 = {"dtype": "float32", "rtol": 1e-4, "inner_tol": 1e-6}


@pytest.mark.parametrize(
    ("metric", "pool", "mass", "eps", "opts", "bound"),
    [
        ("sqeuclidean", 2, None, 0.05, F64, 1e-5),  # low rank, shared full grid
        ("sqeuclidean", 1, 0.5, 0.01, F64, 1e-5),  # low rank, padded top-mass supports
        ("euclidean", 2, None, 0.05, F64, 1e-5),  # dense, one shared cost matrix
        ("euclidean", 1, 0.5, 0.02, F64, 1e-5),  # dense, padded per-pair costs
        ("sqeuclidean", 2, None, 0.01, F32, 1e-3),
        ("euclidean", 1, 0.5, 0.05, F32, 1e-3),
    ],
)
def test_batched_equals_pot_entropic(metric, pool, mass, eps, opts, bound) -> None:
    hm = np.concatenate([blob_heatmaps(5, seed=1), blob_heatmaps(3, seed=2, patch=0.4)])
    clouds = [heatmap_support(h, pool, mass) for h in hm]
    pairs = [(0, 1), (2, 5), (3, 6), (5, 7), (4, 0)]
    x1, p1 = pack([clouds[i] for i, _ in pairs])
    x2, p2 = pack([clouds[j] for _, j in pairs])
    ours, info = batched_entropic_gw(
        x1, p1, x2, p2, BatchedGWOptions(epsilon=eps, **opts), metric=metric, return_info=True
    )
    pot = np.array([pot_entropic(clouds[i], clouds[j], metric, eps) for i, j in pairs])
    assert info["converged"].all()
    assert np.max(np.abs(ours - pot) / pot) <= bound


def test_padding_and_batch_company_do_not_change_values() -> None:
    hm = blob_heatmaps(4, seed=3)
    clouds = [heatmap_support(h, 1, 0.5) for h in hm]
    opts = BatchedGWOptions(epsilon=0.02, **F64)
    x1, p1 = pack([clouds[0]])
    x2, p2 = pack([clouds[1]])
    alone = batched_entropic_gw(x1, p1, x2, p2, opts)[0]
    # the same pair padded by 40 zero-mass points at arbitrary places
    rng = np.random.default_rng(0)
    xp1, pp1 = pack([clouds[0]], size=len(clouds[0][1]) + 40)
    xp2, pp2 = pack([clouds[1]], size=len(clouds[1][1]) + 40)
    xp1[0, len(clouds[0][1]) :] = rng.random((40, 2))
    xp2[0, len(clouds[1][1]) :] = rng.random((40, 2))
    padded = batched_entropic_gw(xp1, pp1, xp2, pp2, opts)[0]
    # and in a batch with pairs of other sizes
    xb1, pb1 = pack([clouds[2], clouds[0], clouds[3]])
    xb2, pb2 = pack([clouds[3], clouds[1], clouds[2]])
    batch = batched_entropic_gw(xb1, pb1, xb2, pb2, opts)
    assert padded == pytest.approx(alone, rel=1e-9)
    assert batch[1] == pytest.approx(alone, rel=1e-9)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_full_grid_support_drops_zero_cells_without_changing_the_value(metric: str) -> None:
    hm = blob_heatmaps(2, seed=5)
    hm[:, :3, :] = 0.0  # real LRP heatmaps have cells without relevance
    params = GWParams(solver="batched", pool=2, mass=None, metric=metric, epsilon=0.02,
                      dtype="float64", rtol=1e-9, inner_tol=1e-10)  # fmt: skip
    clouds = prepare_spaces(hm, params)
    grid = [heatmap_support(h, 2, None) for h in hm]
    assert all((c.weights > 0).all() for c in clouds)
    assert clouds[0].weights.size < grid[0][1].size == 64
    kept = solve_pairs(clouds, clouds, [(0, 1)], params)[0]
    opts = BatchedGWOptions(epsilon=0.02, dtype="float64", rtol=1e-9, inner_tol=1e-10)
    with_zeros = batched_entropic_gw(*pack([grid[0]]), *pack([grid[1]]), opts, metric=metric)[0]
    assert kept == pytest.approx(with_zeros, rel=1e-7)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_batched_is_symmetric(metric: str) -> None:
    clouds = [heatmap_support(h, 2, None) for h in blob_heatmaps(6, seed=4)]
    a, b = [clouds[i] for i in (0, 2, 4)], [clouds[i] for i in (1, 3, 5)]
    opts = BatchedGWOptions(epsilon=0.02, dtype="float64", rtol=1e-9, inner_tol=1e-10)
    ab = batched_entropic_gw(*pack(a), *pack(b), opts, metric=metric)
    ba = batched_entropic_gw(*pack(b), *pack(a), opts, metric=metric)
    np.testing.assert_allclose(ab, ba, rtol=1e-7)


def test_spectral_labels_equal_from_pot_and_batched_matrices() -> None:
    hm = two_groups(9, 5)
    mats = {
        solver: gw_matrix(hm, GWParams(solver=solver, pool=2, mass=0.7, epsilon=0.05))
        for solver in ("pot_entropic", "batched")
    }
    off = ~np.eye(len(hm), dtype=bool)
    rel = np.abs(mats["batched"] - mats["pot_entropic"])[off] / mats["pot_entropic"][off]
    assert rel.max() <= 1e-3
    labels = {
        k: SpectralRelevanceAnalysis(n_neighbors=4, n_clusters=2).fit(d).labels_
        for k, d in mats.items()
    }
    np.testing.assert_array_equal(labels["batched"], labels["pot_entropic"])
    # the constructed groups are found (up to the label names)
    truth = np.r_[np.zeros(9), np.ones(5)]
    agree = np.mean(labels["batched"] == truth)
    assert max(agree, 1 - agree) == 1.0


def test_compute_tile_with_batched_solver_and_empty_heatmap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hm = blob_heatmaps(7, seed=8).astype(np.float32)
    hm[5] = 0.0  # no relevance: the uniform measure, with a warning
    src = str(tmp_path / "group.zarr")
    zarr.open_group(src, mode="w").create_array("heatmaps", data=hm, chunks=(2, 16, 16))
    out = str(tmp_path / "gw.zarr")
    params = GWParams(solver="batched", pool=2, mass=0.9, epsilon=0.02, batch_mb=0.05)
    _store.open_or_create(out, 7, 4, {"method": "gromov_wasserstein", "params": params.to_dict()})
    with caplog.at_level(logging.WARNING, logger="poisonscan.distances"):
        assert compute_tile(src, out, 0, 1, 4, params)[2] == 12
    assert "uniform measure" in caplog.text
    block = zarr.open_group(out, mode="r")["distances"][0:4, 4:7]
    ref = GWParams(solver="pot_entropic", pool=2, mass=0.9, epsilon=0.02)
    spaces = prepare_spaces(hm, ref)
    expected = np.array([[_solvers.pot_pair(spaces[i], spaces[j], ref) for j in range(4, 7)]
                         for i in range(4)])  # fmt: skip
    assert np.isfinite(block).all() and (block > 0).all()
    # Pairs with the uniform measure (column 1) sit on a saddle of the GW energy (the grid's
    # symmetries): both solvers stop there or leave it by round-off, so only the others agree.
    np.testing.assert_allclose(block[:, [0, 2]], expected[:, [0, 2]], rtol=1e-3)


def test_batches_by_size_cover_every_pair_once_within_budget() -> None:
    rng = np.random.default_rng(0)
    sizes = [tuple(int(v) for v in rng.integers(5, 300, 2)) for _ in range(200)]
    budget = 300 * 300 * 3
    batches = _solvers.batches_by_size(sizes, budget)
    assert sorted(k for b in batches for k in b) == list(range(200))
    for b in batches:
        n = max(sizes[k][0] for k in b)
        m = max(sizes[k][1] for k in b)
        assert len(b) == 1 or len(b) * n * m <= budget


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon must be > 0"),
        ({"epsilon": 0.1, "dtype": "half"}, "dtype"),
        ({"epsilon": 0.1, "max_iter": 0}, "max_iter"),
        ({"epsilon": 0.1, "rtol": -1.0}, "rtol"),
    ],
)
def test_batched_options_reject_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BatchedGWOptions(**kwargs)


def test_batched_rejects_bad_shapes_and_metric() -> None:
    x, p = np.zeros((2, 5, 2)), np.full((2, 5), 0.2)
    opts = BatchedGWOptions(epsilon=0.1)
    with pytest.raises(ValueError, match="metric must be one of"):
        batched_entropic_gw(x, p, x, p, opts, metric="cityblock")
    with pytest.raises(ValueError, match=r"expected x1 \(B, N, d\)"):
        batched_entropic_gw(x, p[:, :4], x, p, opts)
    with pytest.raises(ValueError, match="batch or dimension mismatch"):
        batched_entropic_gw(x, p, x[:1], p[:1], opts)


# --- batched_cg: conditional gradient for exact GW with entropic linear steps -------------

CG_SUPPORT = {"pool": 2, "mass": 0.99, "metric": "euclidean"}  # 8x8 grid, 99 % of the mass


def pipeline_like(n_clean: int = 6, n_patch: int = 4) -> np.ndarray:
    """16x16 blob heatmaps; the last ``n_patch`` put 40 % of their mass on a corner patch."""
    return np.concatenate([blob_heatmaps(n_clean, seed=1), blob_heatmaps(n_patch, seed=2,
                                                                        patch=0.4)])  # fmt: skip


def test_comonotone_coupling_is_pots_first_exact_step() -> None:
    import torch

    from poisonscan.distances._batched_cg import comonotone_coupling

    spaces = prepare_spaces(pipeline_like(), GWParams(**CG_SUPPORT))
    for s1, s2 in [(spaces[0], spaces[1]), (spaces[2], spaces[8]), (spaces[9], spaces[3])]:
        p, q = s1.weights, s2.weights
        grad = s1.cost @ np.outer(p, q) @ s2.cost  # C1 p q^T C2, up to separable terms
        plan = comonotone_coupling(
            torch.tensor(s1.cost @ p)[None], torch.tensor(p)[None],
            torch.tensor(s2.cost @ q)[None], torch.tensor(q)[None],
        )[0].numpy()  # fmt: skip
        np.testing.assert_allclose(plan.sum(1), p, atol=1e-12)
        np.testing.assert_allclose(plan.sum(0), q, atol=1e-12)
        assert (plan >= 0).all() and np.count_nonzero(plan) <= p.size + q.size - 1
        # POT's first LMO: the optimal linear OT plan of the gradient
        best = ot.emd(p, q, -grad)
        assert (grad * plan).sum() == pytest.approx((grad * best).sum(), rel=1e-12)


def test_batched_cg_ranks_pairs_like_pot_exact() -> None:
    from scipy.stats import spearmanr

    hm = pipeline_like()
    pairs = [(i, j) for i in range(len(hm)) for j in range(i + 1, len(hm))]
    exact_p = GWParams(solver="pot_exact", **CG_SUPPORT)
    exact_s = prepare_spaces(hm, exact_p)
    exact = solve_pairs(exact_s, exact_s, pairs, exact_p)
    cg_p = GWParams(solver="batched_cg", epsilon=0.005, **CG_SUPPORT)
    cg_s = prepare_spaces(hm, cg_p)
    ours = solve_pairs(cg_s, cg_s, pairs, cg_p)
    assert spearmanr(ours, exact)[0] >= 0.98
    # the GW loss of a feasible plan near POT's local minimum (blurred by epsilon): close to
    # POT's loss, rarely below it
    ratio = ours / exact
    assert 1.0 <= np.median(ratio) <= 1.3 and ratio.min() >= 0.9
    # float64 gives the same values
    ours64 = solve_pairs(cg_s, cg_s, pairs, GWParams(solver="batched_cg", epsilon=0.005,
                                                     dtype="float64", **CG_SUPPORT))  # fmt: skip
    np.testing.assert_allclose(ours, ours64, rtol=1e-4)


def test_batched_cg_with_small_epsilon_and_converged_steps_ends_near_pots_minima() -> None:
    from poisonscan.distances._batched_cg import BatchedCGOptions, batched_cg_gw

    spaces = prepare_spaces(pipeline_like(), GWParams(**CG_SUPPORT))
    pairs = [(0, 1), (2, 5), (3, 6), (1, 7), (4, 9), (8, 9)]
    c1, p1, s1 = _solvers._pack_costs([_cost_cloud(spaces[i]) for i, _ in pairs], 64)
    c2, p2, s2 = _solvers._pack_costs([_cost_cloud(spaces[j]) for _, j in pairs], 64)
    opts = BatchedCGOptions(epsilon=0.001, max_iter=20, tol=1e-9, inner_iter=500,
                            first_iter=500, dtype="float64")  # fmt: skip
    ours, info = batched_cg_gw(c1, p1, c2, p2, opts, c1p=s1, c2q=s2, return_info=True)
    exact = np.array([
        ot.gromov.gromov_wasserstein2(spaces[i].cost, spaces[j].cost, spaces[i].weights,
                                      spaces[j].weights, "square_loss")
        for i, j in pairs
    ])  # fmt: skip
    assert (info["n_iter"] >= 2).all() and (info["n_inner"] > 0).all()
    # Both are local minima: most pairs end on POT's (up to the blur of epsilon), the others
    # on a lower one (measured 0.93 and 0.94 of POT's loss), none above
    ratio = ours / exact
    assert (ratio <= 1.01).all() and (ratio >= 0.9).all()
    assert (np.abs(ratio - 1) <= 0.01).sum() >= 4


def _cost_cloud(space):
    return _solvers.CostCloud(space.cost, space.weights, (space.cost**2) @ space.weights)


def test_batched_cg_is_symmetric_and_padding_and_batch_company_do_not_matter() -> None:
    hm = pipeline_like()
    params = GWParams(solver="batched_cg", epsilon=0.005, **CG_SUPPORT)
    spaces = prepare_spaces(hm, params)
    assert all((s.weights > 0).all() for s in spaces)  # zero-mass cells dropped
    pairs = [(0, 9), (3, 4), (7, 2), (5, 5)]
    ab = solve_pairs(spaces, spaces, pairs, params)
    ba = solve_pairs(spaces, spaces, [(j, i) for i, j in pairs], params)
    np.testing.assert_array_equal(ab, ba)
    assert ab[3] <= 1e-6  # a space against itself
    # the same pair alone (no padding) and in another batch
    alone = solve_pairs(spaces, spaces, [(3, 4)], params)[0]
    other = solve_pairs(spaces, spaces, [(1, 8), (3, 4), (6, 9)], params)[1]
    assert alone == pytest.approx(ab[1], rel=1e-5)
    assert other == pytest.approx(ab[1], rel=1e-5)


def test_spectral_labels_equal_from_pot_exact_and_batched_cg_matrices() -> None:
    hm = two_groups(9, 5)
    mats = {
        solver: gw_matrix(hm, GWParams(solver=solver, epsilon=eps, **CG_SUPPORT))
        for solver, eps in (("pot_exact", 0.0), ("batched_cg", 0.005))
    }
    labels = {
        k: SpectralRelevanceAnalysis(n_neighbors=4, n_clusters=2).fit(d).labels_
        for k, d in mats.items()
    }
    np.testing.assert_array_equal(labels["batched_cg"], labels["pot_exact"])
    truth = np.r_[np.zeros(9), np.ones(5)]
    agree = np.mean(labels["batched_cg"] == truth)
    assert max(agree, 1 - agree) == 1.0


def test_gromov_wasserstein_with_batched_cg_and_its_parameters() -> None:
    from poisonscan.distances import gromov_wasserstein

    hm = blob_heatmaps(2, seed=1)
    value = gromov_wasserstein(hm[0], hm[1], solver="batched_cg", epsilon=0.005, **CG_SUPPORT)
    exact = gromov_wasserstein(hm[0], hm[1], **CG_SUPPORT)
    assert value == pytest.approx(exact, rel=0.3)
    with pytest.raises(ValueError, match="needs epsilon > 0"):
        GWParams(solver="batched_cg")
    assert "batched_cg" in _solvers.GW_SOLVERS


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon must be > 0"),
        ({"omega": 2.0}, "omega"),
        ({"first_iter": 0}, "first_iter"),
        ({"tol": 0.0}, "tol"),
        ({"dtype": "half"}, "dtype"),
    ],
)
def test_batched_cg_options_reject_bad_values(kwargs: dict, match: str) -> None:
    from poisonscan.distances._batched_cg import BatchedCGOptions

    with pytest.raises(ValueError, match=match):
        BatchedCGOptions(**kwargs)


def test_batched_cg_rejects_bad_shapes_and_handles_no_pairs() -> None:
    from poisonscan.distances._batched_cg import BatchedCGOptions, batched_cg_gw

    c, p = np.zeros((2, 5, 5)), np.full((2, 5), 0.2)
    with pytest.raises(ValueError, match=r"expected c1 \(B, N, N\)"):
        batched_cg_gw(c, p[:, :4], c, p, BatchedCGOptions())
    with pytest.raises(ValueError, match=r"expected c1 \(B, N, N\)"):
        batched_cg_gw(c, p, c[:1], p[:1], BatchedCGOptions())
    values, info = batched_cg_gw(c[:0], p[:0], c[:0], p[:0], BatchedCGOptions(),
                                 return_info=True)  # fmt: skip
    assert values.shape == (0,) and info["converged"].shape == (0,)


def test_batched_cg_value_is_its_best_plan_so_more_steps_never_raise_it() -> None:
    """Unit steps from LMO to LMO can cycle (on the bench's synthetic heatmaps the last
    plan's loss went up and down by 3x): the value is the best feasible plan visited."""
    from poisonscan.bench.gw import synthetic_heatmaps
    from poisonscan.distances._batched_cg import BatchedCGOptions, batched_cg_gw

    hm, _ = synthetic_heatmaps(16, seed=3)
    spaces = prepare_spaces(hm, GWParams(pool=4, mass=0.99, metric="euclidean"))
    pairs = [(i, j) for i in range(len(hm)) for j in range(i + 1, len(hm))]
    c1, p1, s1 = _solvers._pack_costs([_cost_cloud(spaces[i]) for i, _ in pairs], 64)
    c2, p2, s2 = _solvers._pack_costs([_cost_cloud(spaces[j]) for _, j in pairs], 64)
    values = np.array([
        batched_cg_gw(c1, p1, c2, p2, BatchedCGOptions(max_iter=steps, tol=1e-12),
                      c1p=s1, c2q=s2)
        for steps in range(1, 9)
    ])  # fmt: skip
    change = np.diff(values, axis=0) / values[:-1]
    assert (change <= 1e-6).all()  # never up
    assert (change < -1e-3).sum(1).min() >= 1  # each further step still improves some pair


def test_max_along_is_amax_and_never_its_input() -> None:
    import torch

    from poisonscan.distances._batched_cg import _max_along

    x = torch.randn(3, 9, 7)
    for size in range(1, 10):
        for dim in (1, 2):
            part = x.narrow(dim, 0, min(size, x.shape[dim]))
            out = _max_along(part, dim)
            assert torch.equal(out, part.amax(dim, keepdim=True))
            assert out.data_ptr() != part.data_ptr() or out.shape != part.shape


def test_rounded_plans_are_feasible() -> None:
    import torch

    from poisonscan.distances._batched_cg import _rounded

    rng = np.random.default_rng(0)
    # a plan far off its marginals, rows and columns too heavy and too light
    plan = (
        rng.random((5, 6, 7)) ** 4 * rng.uniform(0.1, 3, (5, 6, 1)) * rng.uniform(0.1, 3, (5, 1, 7))
    )
    p, q = rng.random((5, 6)), rng.random((5, 7))
    p[:, -1] = q[:, -2:] = 0.0  # padding points
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    plan = _rounded(torch.tensor(plan), torch.tensor(p), torch.tensor(q)).numpy()
    assert (plan >= 0).all()
    np.testing.assert_allclose(plan.sum(2), p, atol=1e-12)
    np.testing.assert_allclose(plan.sum(1), q, atol=1e-12)


def test_batched_cg_values_do_not_depend_on_the_other_pairs_of_a_call() -> None:
    """Each pair's padded shape follows from its own supports: solved among all pairs,
    in another order or alone, it takes the same path (float32)."""
    hm = np.concatenate([blob_heatmaps(30, seed=11), blob_heatmaps(10, seed=12, patch=0.4)])
    params = GWParams(solver="batched_cg", epsilon=0.003, pool=4, mass=0.9)
    spaces = prepare_spaces(hm.astype(np.float32), params)
    assert len({s.weights.size for s in spaces}) > 4  # supports of many sizes
    rng = np.random.default_rng(0)
    pairs = [(i, j) for i in range(len(hm)) for j in range(i + 1, len(hm))]
    pairs = [pairs[k] for k in rng.choice(len(pairs), 300, replace=False)]
    together = solve_pairs(spaces, spaces, pairs, params)
    order = rng.permutation(len(pairs))
    shuffled = np.empty(len(pairs))
    shuffled[order] = solve_pairs(spaces, spaces, [pairs[k] for k in order], params)
    alone = np.array([solve_pairs(spaces, spaces, [p], params)[0] for p in pairs[:60]])
    np.testing.assert_allclose(shuffled, together, rtol=1e-5)
    np.testing.assert_allclose(alone, together[:60], rtol=1e-5)
