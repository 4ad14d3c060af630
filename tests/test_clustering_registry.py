"""Clusterers of a distance matrix by name (poisonscan.clustering.registry)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from poisonscan.clustering import CLUSTERERS, make_clusterer, smaller_cluster


def two_groups() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (40, 4)), rng.normal(12, 1, (10, 4))])
    return cdist(x, x), np.arange(50) >= 40


@pytest.mark.parametrize("name", sorted(CLUSTERERS))
def test_every_clusterer_separates_two_groups(name: str) -> None:
    d, truth = two_groups()
    params = {"n_neighbors": 8} if name == "spectral" else {}
    est = make_clusterer(name, params).fit(d)
    assert est.labels_.shape == (50,)
    assert np.array_equal(smaller_cluster(est.labels_), truth)


@pytest.mark.parametrize("name", sorted(CLUSTERERS))
def test_every_clusterer_accepts_unevaluated_pairs(name: str) -> None:
    d, truth = two_groups()
    d[0, 45] = d[45, 0] = d[3, 7] = d[7, 3] = np.inf
    params = {"n_neighbors": 8} if name == "spectral" else {}
    est = make_clusterer(name, params).fit(d)
    assert np.array_equal(smaller_cluster(est.labels_), truth)


def test_make_clusterer_rejects_unknown_names_and_params() -> None:
    with pytest.raises(ValueError, match="unknown clusterer 'dbscan'; allowed"):
        make_clusterer("dbscan")
    with pytest.raises(ValueError, match="agglomerative does not take \\['n_neighbors'\\]"):
        make_clusterer("agglomerative", {"n_neighbors": 3})
    with pytest.raises(ValueError, match="linkage must be one of"):
        make_clusterer("agglomerative", {"linkage": "ward"}).fit(two_groups()[0])
    assert make_clusterer("hdbscan", {"min_cluster_size": 4}).min_cluster_size == 4
