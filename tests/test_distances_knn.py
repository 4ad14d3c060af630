"""Sparse kNN mode: the second lower bound, candidate rounds, +inf for unsolved pairs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import ot
import pytest
import zarr
from conftest import blob_heatmaps, gw_matrix

from poisonscan.distances import (
    GWParams,
    KNNParams,
    distance_quantiles,
    gw_knn_matrices,
    gw_knn_matrix,
    heatmap_to_mm_space,
    knn_recall,
    knn_row_recall,
    prepare_spaces,
    read_distance_store,
    second_lower_bound,
)
from poisonscan.steps.distances import distances_gw, distances_gw_classes
from poisonscan.storage import create_array, seal_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def heatmaps(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.random((n, size, size)) ** 4
    h[: n // 3, -3:, -3:] += 0.3  # a corner patch on a third of them
    return (h / h.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


def exact_quantiles(space, levels: np.ndarray) -> np.ndarray:
    """Quantiles of the law of C(x, x') for x, x' ~ p independently, by brute force."""
    values = space.cost.ravel()
    weights = np.outer(space.weights, space.weights).ravel()
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order])
    idx = np.minimum(np.searchsorted(cdf, levels * cdf[-1], side="left"), len(values) - 1)
    return values[order][idx]


@pytest.mark.parametrize(
    ("pool", "mass", "metric"),
    [(1, None, "euclidean"), (2, 0.8, "sqeuclidean"), (1, 0.5, "euclidean")],
)
def test_distance_quantiles_match_brute_force(pool: int, mass, metric: str) -> None:
    hm = heatmaps(4)
    params = GWParams(pool=pool, mass=mass, metric=metric)
    q = distance_quantiles(hm, params, n_quantiles=50)
    levels = (np.arange(50) + 0.5) / 50
    for k, h in enumerate(hm):
        space = heatmap_to_mm_space(h, pool=pool, mass=mass, metric=metric)
        np.testing.assert_allclose(q[k], exact_quantiles(space, levels), atol=1e-9)


def test_second_lower_bound_is_below_gw() -> None:
    hm = heatmaps(8, seed=1)
    params = GWParams(pool=1, mass=None)
    slb = second_lower_bound(distance_quantiles(hm, params, 512))
    assert np.allclose(slb, slb.T) and np.all(np.diag(slb) == 0)
    spaces = prepare_spaces(hm, params)
    for i, j in [(0, 1), (2, 5), (3, 7), (4, 6)]:
        s1, s2 = spaces[i], spaces[j]
        exact = ot.gromov.gromov_wasserstein2(s1.cost, s2.cost, s1.weights, s2.weights)
        # a lower bound of every plan's energy (midpoint rule: 1 % slack)
        assert 0 < slb[i, j] <= 1.01 * exact


def test_knn_recall_counts_shared_neighbours() -> None:
    exact = np.array([[0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6], [3, 5, 6, 0]], float)
    assert knn_recall(exact, exact, 2) == 1.0
    sparse = exact.copy()
    sparse[0, 1] = sparse[1, 0] = math.inf  # 0 and 1 lose each other
    assert knn_recall(exact, sparse, 1) == pytest.approx(0.5)


def test_knn_row_recall_scores_sampled_rows_of_the_exact_matrix() -> None:
    exact = np.array([[0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6], [3, 5, 6, 0]], float)
    sparse = exact.copy()
    sparse[0, 1] = sparse[1, 0] = math.inf
    rows = np.array([3, 0])
    # row 3 keeps its nearest neighbour (0); row 0 loses 1 and finds 2
    np.testing.assert_allclose(knn_row_recall(exact[rows], sparse, 1, rows), [1.0, 0.0])
    every = knn_row_recall(exact, sparse, 1, np.arange(4))
    assert every.mean() == pytest.approx(knn_recall(exact, sparse, 1))


def write_group(path: Path, hm: np.ndarray) -> str:
    root = zarr.open_group(str(path), mode="w")
    create_array(root, "heatmaps", data=hm)
    seal_store(root)  # a finished explanation store: the GW step checks every chunk
    return str(path)


def test_gw_knn_matrix_recovers_the_exact_graph(tmp_path: Path) -> None:
    hm = np.concatenate([blob_heatmaps(28, seed=1), blob_heatmaps(12, seed=2, patch=0.4)])
    n = len(hm)
    src = write_group(tmp_path / "group.zarr", hm.astype(np.float32))
    params = GWParams(solver="batched", pool=2, mass=None, epsilon=0.02)
    full = gw_matrix(hm.astype(np.float32), params)

    knn = KNNParams(n_neighbors=3, candidates=5, refine=2, max_rounds=3, pairs_per_task=64)
    d, info = gw_knn_matrix(src, params, knn)
    assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0)
    solved = np.isfinite(d) & ~np.eye(n, dtype=bool)
    assert info["pairs"] == solved.sum() // 2 and info["fraction"] < 0.6
    # float32 values depend on the batch company within the solver's tolerance (rtol 1e-4)
    np.testing.assert_allclose(d[solved], full[solved], rtol=1e-3)
    assert knn_recall(full, d, 3) >= 0.95

    # round 0 only: the Euclidean ranking alone finds fewer of the neighbours
    d0, info0 = gw_knn_matrix(src, params, KNNParams(n_neighbors=3, candidates=5,
                                                     bound="euclidean", max_rounds=0))  # fmt: skip
    assert info0["rounds"] == 0 and info0["pairs"] < info["pairs"]
    assert knn_recall(full, d0, 3) < knn_recall(full, d, 3)


def test_knn_params_validation() -> None:
    assert KNNParams.from_config({}) == KNNParams()
    with pytest.raises(ValueError, match=r"unknown distances.gw.knn parameter\(s\) \['k'\]"):
        KNNParams.from_config({"k": 3})
    with pytest.raises(ValueError, match="knn.bound must be one of"):
        KNNParams(bound="tlb")
    with pytest.raises(ValueError, match="knn.candidates"):
        KNNParams(candidates=0)


def test_step_knn_mode_writes_a_store_with_inf(tmp_path: Path) -> None:
    hm = heatmaps(12, seed=3)
    src = write_group(tmp_path / "group.zarr", hm)
    out = tmp_path / "gw.zarr"
    knn = {"n_neighbors": 2, "candidates": 3, "refine": 1, "max_rounds": 1}
    params = {"solver": "batched", "pool": 2, "mass": None, "epsilon": 0.05, "tile": 8,
              "mode": "knn", "knn": knn}  # fmt: skip
    distances_gw(src, out, params, {"cluster": "local"}, threads=1)
    d = read_distance_store(str(out))
    assert d.shape == (12, 12) and np.isinf(d).any()
    attrs = zarr.open_group(str(out), mode="r").attrs
    assert attrs["method"] == "gromov_wasserstein_knn" and attrs["knn"]["n_neighbors"] == 2
    with pytest.raises(ValueError, match=r"distances.gw.mode must be one of \('full', 'knn'\)"):
        distances_gw(src, out, {**params, "mode": "dense"}, {"cluster": "local"})


def test_gw_knn_matrices_equal_each_group_alone_and_resume_from_finished_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import poisonscan.distances._knn as knn_module

    groups = {c: write_group(tmp_path / f"{c}.zarr", heatmaps(n, seed=c))
              for c, n in ((3, 14), (8, 9))}  # fmt: skip
    params = GWParams(solver="batched_cg", pool=2, mass=None, epsilon=0.003)
    knn = KNNParams(n_neighbors=2, candidates=3, refine=2, max_rounds=2, pairs_per_task=7)
    alone = {c: gw_knn_matrix(g, params, knn) for c, g in groups.items()}
    resume = tmp_path / "partial"
    together = gw_knn_matrices(groups, params, knn, resume=resume)
    for c in groups:
        np.testing.assert_array_equal(together[c][0], alone[c][0])
        assert together[c][1]["pairs"] == alone[c][1]["pairs"]
        assert together[c][1]["rounds"] == alone[c][1]["rounds"] == 2
    files = sorted(resume.glob("*.npy"))
    assert {f.name.split("-")[0] for f in files} == {"3", "8"}
    # a rerun after a kill: the lost tasks only are solved again, with the same result
    lost = files[::3]
    for f in lost[1:]:
        f.unlink()
    lost[0].write_bytes(b"damaged")  # unreadable: solved again too
    solved = []
    compute = knn_module.compute_pairs

    def counting(group: str, pairs: np.ndarray, p: GWParams) -> tuple[np.ndarray, np.ndarray]:
        solved.append(len(pairs))
        return compute(group, pairs, p)

    monkeypatch.setattr(knn_module, "compute_pairs", counting)
    again = gw_knn_matrices(groups, params, knn, resume=resume)
    assert len(solved) == len(lost)
    for c in groups:
        np.testing.assert_array_equal(again[c][0], together[c][0])


def test_step_gw_classes_writes_one_store_per_class_and_drops_stale_work(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "explain.zarr"), mode="w")
    sizes = ((0, 10), (4, 12), (9, 2))  # class 9: fewer heatmaps than k + 1, all its pairs
    for c, n in sizes:
        create_array(root.create_group(str(c)), "heatmaps", data=heatmaps(n, seed=c))
    root.attrs.update({"classes": [0, 4, 9], "target_class": 4})
    seal_store(root)
    out = tmp_path / "gw_classes.zarr"
    knn = {"n_neighbors": 2, "candidates": 3, "refine": 1, "max_rounds": 1}
    params = {"solver": "batched_cg", "pool": 2, "mass": None, "epsilon": 0.003, "tile": 8,
              "mode": "full", "knn": knn}  # fmt: skip
    stale = Path(f"{out}.partial")
    stale.mkdir()
    (stale / "meta.json").write_text("{}")  # work of other parameters: discarded
    (stale / "0-r0-0.npy").write_bytes(b"not a result")
    distances_gw_classes(str(tmp_path / "explain.zarr"), out, params, {"cluster": "local"})
    assert not stale.exists()
    for c, n in sizes:
        d = read_distance_store(str(out / str(c)))
        assert d.shape == (n, n) and np.isfinite(d).sum() > n
        assert np.isinf(d).any() == (c != 9)
        attrs = zarr.open_group(str(out / str(c)), mode="r").attrs
        assert (
            attrs["method"] == "gromov_wasserstein_knn"
            and attrs["params"]["solver"] == "batched_cg"
        )
