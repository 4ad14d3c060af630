"""Tests for poisonscan.distances (tiny heatmaps; one shared 2-worker LocalCluster)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import zarr

from poisonscan.distances import (
    GWParams,
    _solvers,
    _store,
    compute_tile,
    euclidean_distances,
    gromov_wasserstein,
    gw_distance_matrix,
    heatmap_to_mm_space,
    read_distance_store,
    tile_plan,
    write_distance_store,
)
from poisonscan.distances._store import check_complete
from poisonscan.parallel import dask_client
from poisonscan.storage import StoreError

# Small and fast: 4x4 pooled grid, exact (deterministic) solver.
FAST = {"solver": "pot_exact", "pool": 2, "mass": 0.99, "metric": "euclidean", "epsilon": 0.0}


def make_heatmaps(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """Blob-like non-negative heatmaps normalised to sum 1, shape (n, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    maps = []
    for _ in range(n):
        cy, cx = rng.uniform(1, size - 1, 2)
        h = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(1, 4))
        h += 0.05 * rng.random((size, size))
        maps.append(h / h.sum())
    return np.stack(maps).astype(np.float32)


def write_heatmap_store(path: Path, heatmaps: np.ndarray) -> str:
    group = zarr.open_group(str(path), mode="w")
    n = heatmaps.shape[0]
    group.create_array("heatmaps", data=heatmaps, chunks=(4, *heatmaps.shape[1:]))
    group.create_array("index", data=np.arange(n, dtype=np.int64))
    group.create_array("label", data=np.zeros(n, dtype=np.int64))
    group.create_array("poison", data=np.zeros(n, dtype=bool))
    return str(path)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def capture_logger(name: str) -> tuple[logging.Logger, ListHandler]:
    log = logging.getLogger(name)
    log.setLevel(logging.INFO)
    handler = ListHandler()
    log.addHandler(handler)
    return log, handler


# --------------------------------------------------------------------------- Euclidean


def test_euclidean_matches_naive_loop() -> None:
    h = make_heatmaps(7)
    d = euclidean_distances(h)
    x = h.reshape(7, -1).astype(np.float64)
    naive = np.array([[np.sqrt(((a - b) ** 2).sum()) for b in x] for a in x])
    np.testing.assert_allclose(d, naive, rtol=1e-12, atol=1e-15)
    assert d.dtype == np.float64
    assert np.array_equal(d, d.T)
    assert np.all(np.diag(d) == 0)


# --------------------------------------------------------------------------- mm-spaces


def test_pooling_sums_mass() -> None:
    h = make_heatmaps(1, size=8)[0].astype(np.float64)
    h /= h.sum()
    space = heatmap_to_mm_space(h, pool=2)
    expected = h.reshape(4, 2, 4, 2).sum(axis=(1, 3)).ravel()
    np.testing.assert_allclose(space.weights, expected, rtol=1e-12)
    assert space.cost.shape == (16, 16)
    assert math.isclose(space.weights.sum(), 1.0)


def test_mass_support_is_minimal() -> None:
    rng = np.random.default_rng(3)
    h = rng.random((8, 8)) ** 3
    w = (h / h.sum()).ravel()
    space = heatmap_to_mm_space(h, mass=0.5)
    k = space.weights.size
    top = np.sort(w)[::-1]
    assert top[:k].sum() >= 0.5
    assert top[: k - 1].sum() < 0.5
    # The support is the k most relevant cells, kept in row-major order.
    cells = np.sort(np.argsort(-w, kind="stable")[:k])
    np.testing.assert_allclose(space.weights, w[cells] / w[cells].sum(), rtol=1e-12)
    # mass=1 keeps only the cells with positive mass.
    h2 = h.copy()
    h2[0, :3] = 0.0
    assert heatmap_to_mm_space(h2, mass=1.0).weights.size == 61


def test_cost_scale_and_metrics() -> None:
    h = make_heatmaps(1, size=8)[0]
    eu = heatmap_to_mm_space(h, pool=2, metric="euclidean").cost
    sq = heatmap_to_mm_space(h, pool=2, metric="sqeuclidean").cost
    for c in (eu, sq):
        assert c.min() >= 0 and c.max() <= 1 + 1e-12
        assert np.array_equal(c, c.T) and np.all(np.diag(c) == 0)
    # Full support contains opposite corners: the maximum is exactly the grid diagonal.
    assert math.isclose(eu.max(), 1.0)
    np.testing.assert_allclose(sq, eu**2, rtol=1e-12, atol=1e-15)
    # Neighbouring cells of the 4x4 pooled grid are one third of a side apart.
    assert math.isclose(eu[0, 1], 1 / (3 * math.sqrt(2)))
    # The scale does not depend on the support: two corner cells are still 1 apart.
    corners = np.zeros((8, 8))
    corners[0, 0] = corners[7, 7] = 1.0
    two = heatmap_to_mm_space(corners, mass=1.0).cost
    assert two.shape == (2, 2) and math.isclose(two[0, 1], 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pool": 3}, "does not divide"),
        ({"pool": 0}, "pool must be a positive integer"),
        ({"mass": 0.0}, "mass must be"),
        ({"mass": 1.5}, "mass must be"),
        ({"metric": "cityblock"}, "metric must be one of"),
    ],
)
def test_mm_space_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        heatmap_to_mm_space(np.ones((8, 8)), **kwargs)


def test_all_zero_and_negative_heatmaps(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="poisonscan.distances"):
        space = heatmap_to_mm_space(np.zeros((4, 4)))
    assert "uniform measure" in caplog.text
    np.testing.assert_allclose(space.weights, np.full(16, 1 / 16))
    # No cell is more relevant than another: a mass share keeps the whole grid.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="poisonscan.distances"):
        space = heatmap_to_mm_space(-np.ones((4, 4)), mass=0.5)
    assert "uniform measure" in caplog.text
    np.testing.assert_allclose(space.weights, np.full(16, 1 / 16))
    h = np.zeros((4, 4))
    h[0, 0], h[1, 1], h[2, 2] = 3.0, -5.0, 1.0
    np.testing.assert_allclose(heatmap_to_mm_space(h, mass=1.0).weights, [0.75, 0.25])
    with pytest.raises(ValueError, match="NaN"):
        heatmap_to_mm_space(np.full((4, 4), np.nan))


# --------------------------------------------------------------------------- GW


def test_exact_gw_is_invariant_to_isometries() -> None:
    rng = np.random.default_rng(1)
    h = rng.random((8, 8)) ** 4
    other = rng.random((8, 8)) ** 4
    exact = {"pool": 1, "epsilon": 0.0}
    assert gromov_wasserstein(h, h, **exact) < 1e-12
    assert gromov_wasserstein(h, np.fliplr(h), **exact) < 1e-12
    assert gromov_wasserstein(h, np.rot90(h), **exact) < 1e-12
    shifted = np.zeros((8, 8))
    shifted[1:4, 1:3] = rng.random((3, 2))
    moved = np.roll(shifted, (3, 4), axis=(0, 1))
    assert gromov_wasserstein(shifted, moved, **exact) < 1e-12
    assert gromov_wasserstein(h, other, **exact) > 1e-4


def test_entropic_gw_self_small_and_symmetric() -> None:
    h1, h2 = make_heatmaps(2, size=8, seed=5)
    kw = {"solver": "pot_entropic", "pool": 2, "mass": None, "epsilon": 0.02}
    d12 = gromov_wasserstein(h1, h2, **kw)
    d21 = gromov_wasserstein(h2, h1, **kw)
    assert math.isclose(d12, d21, rel_tol=1e-4)
    # Entropic blur keeps the self-loss above 0, but well below a different pair.
    assert 0.0 <= gromov_wasserstein(h1, h1, **kw) < 0.5 * d12


def test_gw_nan_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_solvers.ot.gromov, "entropic_gromov_wasserstein2", lambda *a, **k: np.nan)
    h = np.ones((4, 4))
    with pytest.raises(FloatingPointError, match="pair"):
        gromov_wasserstein(h, h, solver="pot_entropic", pool=1, epsilon=0.1)
    params = GWParams(solver="pot_entropic", pool=1, epsilon=0.1)
    space = heatmap_to_mm_space(h)
    with pytest.raises(FloatingPointError, match=r"pair \(3, 7\)"):
        _solvers.pot_pair(space, space, params, pair=(3, 7))


def test_params_from_config() -> None:
    assert GWParams.from_config({}) == GWParams()
    p = GWParams.from_config({"solver": "batched", "pool": 2, "mass": 0.99, "epsilon": "0.05"})
    assert (p.solver, p.pool, p.mass, p.epsilon) == ("batched", 2, 0.99, 0.05)
    assert GWParams.from_config(p.to_dict()) == p
    with pytest.raises(ValueError, match=r"\['eps', 'poool'\]"):
        GWParams.from_config({"poool": 2, "eps": 0.1})


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"epsilon": -1}, "epsilon must be >= 0"),
        ({"metric": "manhattan"}, "metric must be one of"),
        (
            {"solver": "sinkhorn"},
            r"solver must be one of \('pot_exact', 'pot_entropic', 'batched', 'batched_cg'\)",
        ),
        ({"epsilon": 0.1}, "not used by solver 'pot_exact'"),
        ({"solver": "batched"}, "needs epsilon > 0"),
        ({"solver": "pot_entropic", "epsilon": 0.0}, "needs epsilon > 0"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"device": "tpu"}, "device must be"),
        ({"batch_mb": 0}, "batch_mb must be > 0"),
        ({"rtol": -1e-3}, "rtol must be >= 0"),
    ],
)
def test_params_reject_bad_values(config: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GWParams.from_config(config)


# --------------------------------------------------------------------------- tiling


@pytest.mark.parametrize(("n", "tile"), [(1, 4), (7, 3), (8, 4), (10, 32), (13, 5)])
def test_tile_plan_covers_upper_triangle_once(n: int, tile: int) -> None:
    plan = tile_plan(n, tile)
    n_t = -(-n // tile)
    assert sorted(plan) == [(i, j) for i in range(n_t) for j in range(i, n_t)]
    # A tile plus the mirror of an off-diagonal tile covers every entry exactly once.
    count = np.zeros((n, n), dtype=int)
    for bi, bj in plan:
        count[bi * tile : (bi + 1) * tile, bj * tile : (bj + 1) * tile] += 1
        if bi != bj:
            count[bj * tile : (bj + 1) * tile, bi * tile : (bi + 1) * tile] += 1
    assert np.all(count == 1)
    assert tile_plan(0, 4) == []


@pytest.fixture(scope="module")
def client():
    with dask_client({"cluster": "local"}, n_workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def heatmaps() -> np.ndarray:
    h = make_heatmaps(10, size=8, seed=7)
    h[3] = 0.0  # an all-zero heatmap must not break the tiles
    return h


@pytest.fixture(scope="module")
def reference(heatmaps: np.ndarray) -> np.ndarray:
    n = len(heatmaps)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = gromov_wasserstein(heatmaps[i], heatmaps[j], **FAST)
    return d


def test_gw_matrix_matches_loop_and_resumes(
    client, heatmaps: np.ndarray, reference: np.ndarray, tmp_path: Path
) -> None:
    src = write_heatmap_store(tmp_path / "heatmaps.zarr", heatmaps)
    out = str(tmp_path / "gw.zarr")
    params = GWParams.from_config(FAST)
    log, handler = capture_logger("test_gw_matrix")

    d = gw_distance_matrix(src, out, params, client, tile=4, log=log)
    np.testing.assert_allclose(d, reference, rtol=0, atol=1e-10)
    assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0)
    assert any("6 tiles, 0 already done (new store), 6 to compute" in m for m in handler.messages)
    assert any(m.startswith("tiles 6/6, pairs/s") for m in handler.messages)
    group = zarr.open_group(out, mode="r")
    assert group.attrs["params"] == params.to_dict()
    assert (group.attrs["n"], group.attrs["tile"]) == (10, 4)
    assert group["distances"].chunks == (4, 4) and group["done"].chunks == (1, 1)
    np.testing.assert_array_equal(read_distance_store(out), d)

    # Simulate an interrupted run: two tiles lost (one off-diagonal, the small corner one),
    # and the store not yet sealed (its chunk checksums are recorded once it is complete).
    group = zarr.open_group(out, mode="r+")
    for name in ("done", "distances"):
        del group[name].attrs["chunk_crc32c"]
    group["done"][0, 1] = False
    group["done"][2, 2] = False
    group["distances"][0:4, 4:8] = np.nan
    group["distances"][4:8, 0:4] = np.nan
    group["distances"][8:10, 8:10] = np.nan
    with pytest.raises(StoreError, match="no recorded chunk checksums"):
        read_distance_store(out)
    with pytest.raises(RuntimeError, match="2 tile"):
        check_complete(group, out, 4, 10, sealed=False)
    handler.messages.clear()
    d2 = gw_distance_matrix(src, out, params, client, tile=4, log=log)
    assert any(
        "6 tiles, 4 already done (reopened store), 2 to compute (17 pairs)" in m
        for m in handler.messages
    )
    np.testing.assert_array_equal(d2, d)

    # A complete store submits nothing.
    handler.messages.clear()
    np.testing.assert_array_equal(gw_distance_matrix(src, out, params, client, tile=4, log=log), d)
    assert any("0 to compute" in m for m in handler.messages)
    assert not any(m.startswith("tiles ") for m in handler.messages)

    # Other parameters or tile size: refuse to mix results.
    with pytest.raises(ValueError, match=r"different \['params'\].*delete it"):
        gw_distance_matrix(src, out, GWParams.from_config({**FAST, "pool": 4}), client, tile=4)
    with pytest.raises(ValueError, match="tile"):
        gw_distance_matrix(src, out, params, client, tile=5)


def test_gw_matrix_worker_error_propagates(client, tmp_path: Path) -> None:
    h = make_heatmaps(6, size=8, seed=2)
    h[4, 0, 0] = np.nan
    src = write_heatmap_store(tmp_path / "bad.zarr", h)
    out = str(tmp_path / "gw.zarr")
    with pytest.raises(ValueError, match="NaN"):
        gw_distance_matrix(src, out, GWParams.from_config(FAST), client, tile=4)
    # The tiles touching the bad heatmap are not marked done.
    done = zarr.open_group(out, mode="r")["done"][...]
    assert not done[0, 1] and not done[1, 1]


def test_compute_tile_in_process(
    heatmaps: np.ndarray, reference: np.ndarray, tmp_path: Path
) -> None:
    src = write_heatmap_store(tmp_path / "heatmaps.zarr", heatmaps)
    out = str(tmp_path / "gw.zarr")
    params = GWParams.from_config(FAST)
    _store.open_or_create(out, 10, 4, {"method": "gromov_wasserstein", "params": params.to_dict()})
    bi, bj, n_pairs, seconds = compute_tile(src, out, 1, 2, 4, params)
    assert (bi, bj, n_pairs) == (1, 2, 8) and seconds >= 0
    assert compute_tile(src, out, 2, 2, 4, params)[2] == 1
    group = zarr.open_group(out, mode="r")
    d = group["distances"][...]
    np.testing.assert_allclose(d[4:8, 8:10], reference[4:8, 8:10], atol=1e-10)
    np.testing.assert_array_equal(d[8:10, 4:8], d[4:8, 8:10].T)
    assert group["done"][1, 2] and group["done"][2, 2] and not group["done"][0, 0]
    assert np.isnan(d[0:4, 0:4]).all()


def test_write_and_read_distance_store(tmp_path: Path) -> None:
    d = euclidean_distances(make_heatmaps(9))
    path = str(tmp_path / "euclid.zarr")
    write_distance_store(path, d, {"method": "euclidean"}, tile=4)
    np.testing.assert_array_equal(read_distance_store(path), d)
    group = zarr.open_group(path, mode="r")
    assert group.attrs["method"] == "euclidean" and group.attrs["n"] == 9
    with pytest.raises(ValueError, match="square"):
        write_distance_store(path, np.zeros((2, 3)))
    with pytest.raises(FileNotFoundError):
        read_distance_store(str(tmp_path / "missing.zarr"))


def test_non_finite_heatmaps_are_refused_by_both_distances() -> None:
    hm = np.random.default_rng(0).random((4, 8, 8))
    hm[2, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 heatmap\(s\) contain NaN .* rows \[2\]"):
        euclidean_distances(hm)
    with pytest.raises(ValueError, match="NaN or infinite"):
        heatmap_to_mm_space(hm[2])


def test_auto_device_takes_a_gpu_only_where_the_process_sees_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert GWParams().device == "auto" and GWParams().torch_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert GWParams(solver="batched_cg", epsilon=0.003).torch_device() == "cuda"
    assert GWParams(device="cpu").torch_device() == "cpu"
    assert GWParams(device="cuda:1").torch_device() == "cuda:1"
    for bad in ("auto:1", "gpu", "cuda1"):
        with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda"):
            GWParams(device=bad)
