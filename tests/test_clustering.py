"""SpRAy (poisonscan.clustering.spectral): affinity, L_sym, eigensolvers, eigengap."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from scipy.spatial.distance import cdist

from poisonscan.clustering import (
    SpectralRelevanceAnalysis,
    decide,
    eigengap,
    finite_distances,
    gaussian_affinity,
    knn_affinity,
    normalized_laplacian,
    smaller_cluster,
    smallest_eigenpairs,
)


def blobs(sizes: list[int], dim: int = 5, gap: float = 10.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(i * gap, 1.0, size=(n, dim)) for i, n in enumerate(sizes)])


def dist(x: np.ndarray) -> np.ndarray:
    return cdist(x, x)


def test_knn_affinity_is_binary_symmetric_without_self_loops() -> None:
    x = blobs([20, 20])
    a = knn_affinity(dist(x), 4)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert np.array_equal(a, a.T) and np.all(np.diag(a) == 0)
    assert np.all(a.sum(1) >= 4)
    sparse = knn_affinity(dist(x), 4, sparse=True)
    assert scipy.sparse.issparse(sparse) and np.array_equal(sparse.toarray(), a)
    with pytest.raises(ValueError, match="n_neighbors must lie in \\[1, 39\\].*got 40"):
        knn_affinity(dist(x), 40)
    with pytest.raises(ValueError, match="square"):
        knn_affinity(np.zeros((3, 4)), 1)
    bad = dist(x)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn_affinity(bad, 3)
    bad[0, 1] = -np.inf
    with pytest.raises(ValueError, match="negative"):
        knn_affinity(bad, 3)


def test_knn_affinity_treats_inf_as_not_a_neighbour() -> None:
    x = blobs([12])
    d = dist(x)
    near = int(np.argsort(d[0])[1])  # 0's nearest neighbour
    d[0, near] = d[near, 0] = np.inf  # pair never evaluated
    a = knn_affinity(d, 3)
    assert a[0, near] == 0 and a[near, 0] == 0
    assert a[0].sum() >= 3  # 0 still gets 3 evaluated neighbours
    # a sample with only inf partners is isolated, not linked to "far" samples
    d[5, :] = d[:, 5] = np.inf
    d[5, 5] = 0.0
    a = knn_affinity(d, 3)
    assert a[5].sum() == 0 and a[:, 5].sum() == 0
    assert np.all(np.isfinite(finite_distances(d))) and finite_distances(d)[5, 0] > d[1, 0]


def test_gaussian_affinity_bandwidth_rules() -> None:
    x = blobs([15])
    d = dist(x)
    off = ~np.eye(15, dtype=bool)
    sigma = np.median(d[off])
    np.testing.assert_allclose(
        gaussian_affinity(d, "median")[off], np.exp(-(d**2) / (2 * sigma**2))[off]
    )
    np.testing.assert_allclose(gaussian_affinity(d, 2.0)[off], np.exp(-(d**2) / (2 * 2.0**2))[off])
    local = gaussian_affinity(d, "local", n_neighbors=3)
    kth = np.sort(np.where(off, d, np.inf), axis=1)[:, 2]
    np.testing.assert_allclose(local[off], np.exp(-(d**2) / np.outer(kth, kth))[off])
    for a in (local, gaussian_affinity(d)):
        assert np.all(np.diag(a) == 0) and np.allclose(a, a.T)
    d[0, 1] = d[1, 0] = np.inf
    assert gaussian_affinity(d)[0, 1] == 0.0
    with pytest.raises(ValueError, match="bandwidth must be one of"):
        gaussian_affinity(d, "silverman")


def test_normalized_laplacian_matches_definition() -> None:
    a = np.array([[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=float)
    deg = a.sum(1)
    inv = np.diag([1 / np.sqrt(v) if v else 0.0 for v in deg])
    expected = np.eye(4) - inv @ a @ inv
    np.testing.assert_allclose(normalized_laplacian(a), expected)
    np.testing.assert_allclose(normalized_laplacian(scipy.sparse.csr_array(a)).toarray(), expected)
    values = np.linalg.eigvalsh(normalized_laplacian(a))
    assert values.min() == pytest.approx(0.0, abs=1e-12) and values.max() <= 2 + 1e-12


def test_sparse_solver_matches_dense() -> None:
    x = blobs([80, 50, 30], dim=3, gap=4.0)
    a = knn_affinity(dist(x), 8)
    dense_vals, dense_vecs = smallest_eigenpairs(a, 12, solver="dense")
    sparse_vals, sparse_vecs = smallest_eigenpairs(scipy.sparse.csr_array(a), 12, solver="sparse")
    np.testing.assert_allclose(sparse_vals, dense_vals, atol=1e-8)
    # same invariant subspace for the non-degenerate eigenvalues (3..12)
    for i in range(3, 12):
        assert abs(abs(dense_vecs[:, i] @ sparse_vecs[:, i]) - 1) < 1e-5
    np.testing.assert_allclose(np.diff(dense_vals) >= -1e-12, True)
    with pytest.raises(ValueError, match="solver must be one of"):
        smallest_eigenpairs(a, 3, solver="lobpcg")


def test_eigengap_picks_the_largest_jump() -> None:
    k, n_groups, gaps = eigengap(np.array([0, 0, 0, 0.5, 0.55, 0.6]), k_max=5)
    assert (k, n_groups) == (3, 3) and gaps.shape == (5,)
    k, n_groups, _ = eigengap(np.array([0, 0.6, 0.7, 0.75, 0.8]), k_max=4)
    assert n_groups == 1 and k == 2
    k, n_groups, gaps = eigengap(np.array([0, 0, 0.1]), k_max=10)  # k_max clipped
    assert (k, n_groups, gaps.size) == (2, 2, 2)
    with pytest.raises(ValueError, match="k_max must be >= 2"):
        eigengap(np.zeros(5), 1)


@pytest.mark.parametrize("solver", ["dense", "sparse"])
def test_spray_two_groups_picks_two_and_flags_the_smaller(solver: str) -> None:
    x = blobs([60, 12])
    est = SpectralRelevanceAnalysis(n_neighbors=5, solver=solver).fit(dist(x))
    truth = np.r_[np.zeros(60, bool), np.ones(12, bool)]
    assert est.n_clusters_ == 2 and est.n_groups_ == 2
    assert np.array_equal(smaller_cluster(est.labels_), truth)
    assert est.eigenvalues_[:2] == pytest.approx([0, 0], abs=1e-9)
    assert est.eigengap_ == pytest.approx(est.eigenvalues_[2]) and est.eigengap_ > 0.05
    assert est.embedding_.shape == (72, 2) and len(est.eigenvalues_) == 32


def test_spray_one_group_reports_one_group() -> None:
    x = blobs([70])
    est = SpectralRelevanceAnalysis(n_neighbors=8).fit(dist(x))
    assert est.n_groups_ == 1  # the step flags nothing then
    assert est.n_clusters_ >= 2 and est.labels_.shape == (70,)


def test_spray_three_groups_picks_three() -> None:
    x = blobs([40, 30, 15])
    est = SpectralRelevanceAnalysis(n_neighbors=6).fit(dist(x))
    assert est.n_clusters_ == 3 and est.n_groups_ == 3
    truth = np.repeat([0, 1, 2], [40, 30, 15])
    # labels agree with the groups up to renaming
    assert len(set(zip(est.labels_, truth, strict=True))) == 3
    assert np.array_equal(decide(est.labels_, "smaller"), truth == 2)


def test_spray_gaussian_affinity_and_fixed_k() -> None:
    x = blobs([50, 10])
    for bandwidth in ("median", "local"):
        est = SpectralRelevanceAnalysis(affinity="gaussian", bandwidth=bandwidth).fit(dist(x))
        assert est.n_clusters_ == 2
        assert np.array_equal(smaller_cluster(est.labels_), np.arange(60) >= 50)
    fixed = SpectralRelevanceAnalysis(n_neighbors=5, n_clusters=4).fit(dist(x))
    assert fixed.n_clusters_ == 4 and fixed.embedding_.shape == (60, 4)
    with pytest.raises(ValueError, match="affinity must be one of"):
        SpectralRelevanceAnalysis(affinity="cosine").fit(dist(x))
    with pytest.raises(ValueError, match="n_clusters must be None or lie in"):
        SpectralRelevanceAnalysis(n_clusters=1).fit(dist(x))


def test_spray_accepts_unevaluated_pairs() -> None:
    x = blobs([40, 15])
    d = dist(x)
    rng = np.random.default_rng(1)
    i, j = np.triu_indices(55, 1)
    drop = rng.random(i.size) < 0.2  # 20 % of the pairs not evaluated
    d[i[drop], j[drop]] = d[j[drop], i[drop]] = np.inf
    est = SpectralRelevanceAnalysis(n_neighbors=4).fit(d)
    assert est.n_clusters_ == 2
    assert np.array_equal(smaller_cluster(est.labels_), np.arange(55) >= 40)
