from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from poisonscan.clustering import (
    ActivationClustering,
    SpectralRelevanceAnalysis,
    knn_affinity,
    normalized_laplacian,
    smaller_cluster,
)


def blobs(sizes: list[int], dim: int = 5, gap: float = 10.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(i * gap, 1.0, size=(n, dim)) for i, n in enumerate(sizes)])


def test_knn_affinity_is_binary_symmetric_without_self_loops() -> None:
    x = blobs([20, 20])
    a = knn_affinity(cdist(x, x), 4)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert np.array_equal(a, a.T) and np.all(np.diag(a) == 0)
    assert np.all(a.sum(1) >= 4)
    with pytest.raises(ValueError, match="n_neighbors must lie in \\[1, 39\\].*got 40"):
        knn_affinity(cdist(x, x), 40)
    with pytest.raises(ValueError, match="square"):
        knn_affinity(np.zeros((3, 4)), 1)
    bad = cdist(x, x)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn_affinity(bad, 3)


def test_normalized_laplacian_matches_definition() -> None:
    a = np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=float)
    d = np.diag(1 / np.sqrt(a.sum(1)))
    np.testing.assert_allclose(normalized_laplacian(a), np.eye(3) - d @ a @ d)
    values = np.linalg.eigvalsh(normalized_laplacian(a))
    assert values.min() == pytest.approx(0.0, abs=1e-12) and values.max() <= 2 + 1e-12


def test_spray_separates_two_groups_and_flags_the_smaller() -> None:
    x = blobs([60, 12])
    est = SpectralRelevanceAnalysis(n_neighbors=5, n_clusters=2).fit(cdist(x, x))
    truth = np.r_[np.zeros(60, bool), np.ones(12, bool)]
    assert np.array_equal(smaller_cluster(est.labels_), truth)
    # two connected components: two zero eigenvalues, then a gap
    assert est.eigenvalues_[:2] == pytest.approx([0, 0], abs=1e-9)
    assert est.eigenvalues_[2] > 0.05
    assert est.embedding_.shape == (72, 2) and len(est.eigenvalues_) == 32


def test_activation_clustering_flags_small_group() -> None:
    x = blobs([50, 9], dim=20)
    est = ActivationClustering(n_components=10).fit(x)
    assert est.embedding_.shape == (59, 10)
    assert smaller_cluster(est.labels_).sum() == 9
    assert np.all(smaller_cluster(est.labels_)[50:])


def test_smaller_cluster_ties_pick_lowest_label() -> None:
    assert np.array_equal(smaller_cluster(np.array([1, 0, 1, 0])), [False, True, False, True])
    assert np.array_equal(smaller_cluster(np.array([2, 2, 1])), [False, False, True])
