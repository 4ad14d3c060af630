"""Clusterers of a precomputed distance matrix, selected by name.

Every entry of :data:`CLUSTERERS` is a scikit-learn style estimator whose
``fit`` takes an (n, n) distance matrix (``+inf`` = pair not evaluated) and sets
``labels_``. The GW k-means (:mod:`poisonscan.clustering.gw_kmeans`) needs the
heatmaps themselves and is not in this registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import HDBSCAN, AgglomerativeClustering

from poisonscan.clustering.spectral import (
    SpectralRelevanceAnalysis,
    check_distances,
    finite_distances,
)

__all__ = [
    "CLUSTERERS",
    "AgglomerativeDistances",
    "HDBSCANDistances",
    "estimator_params",
    "make_clusterer",
]


class AgglomerativeDistances(ClusterMixin, BaseEstimator):
    """Agglomerative clustering of a precomputed distance matrix (scikit-learn).

    Parameters
    ----------
    n_clusters : int, default 2
    linkage : {"average", "complete", "single"}, default "average"
        Ward needs Euclidean features and is not available on a distance matrix.

    Attributes
    ----------
    labels_ : ndarray of shape (n,)
    n_clusters_ : int
    """

    def __init__(self, n_clusters: int = 2, linkage: str = "average") -> None:
        self.n_clusters = n_clusters
        self.linkage = linkage

    def fit(self, X: np.ndarray, y: Any = None) -> AgglomerativeDistances:
        allowed = ("average", "complete", "single")
        if self.linkage not in allowed:
            raise ValueError(f"linkage must be one of {allowed}, got {self.linkage!r}")
        est = AgglomerativeClustering(
            n_clusters=self.n_clusters, metric="precomputed", linkage=self.linkage
        )
        self.labels_ = est.fit_predict(finite_distances(X))
        self.n_clusters_ = int(np.unique(self.labels_).size)
        return self


class HDBSCANDistances(ClusterMixin, BaseEstimator):
    """HDBSCAN of a precomputed distance matrix (scikit-learn).

    The number of clusters is found by HDBSCAN; noise gets the label -1 and is
    treated as one more group by the decision rules.

    Parameters
    ----------
    min_cluster_size : int, default 5
    min_samples : int or None, default None

    Attributes
    ----------
    labels_ : ndarray of shape (n,)
    n_clusters_ : int
        Distinct labels, noise included.
    """

    def __init__(self, min_cluster_size: int = 5, min_samples: int | None = None) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples

    def fit(self, X: np.ndarray, y: Any = None) -> HDBSCANDistances:
        est = HDBSCAN(
            min_cluster_size=self.min_cluster_size,
            min_samples=self.min_samples,
            metric="precomputed",
            copy=True,
        )
        self.labels_ = est.fit_predict(check_distances(X))
        self.n_clusters_ = int(np.unique(self.labels_).size)
        return self


CLUSTERERS: dict[str, type[BaseEstimator]] = {
    "spectral": SpectralRelevanceAnalysis,
    "agglomerative": AgglomerativeDistances,
    "hdbscan": HDBSCANDistances,
}


def estimator_params(section: Mapping[str, Any]) -> dict[str, Any]:
    """A config section as estimator keyword arguments: ``seed`` becomes ``random_state``."""
    p = dict(section)
    if "seed" in p:
        p["random_state"] = p.pop("seed")
    return p


def make_clusterer(name: str, params: Mapping[str, Any] | None = None) -> BaseEstimator:
    """Build the clusterer ``name`` with the hyper-parameters in ``params``.

    Raises
    ------
    ValueError
        If ``name`` is unknown or ``params`` has a key the clusterer does not take.
    """
    if name not in CLUSTERERS:
        raise ValueError(f"unknown clusterer {name!r}; allowed: {sorted(CLUSTERERS)}")
    cls = CLUSTERERS[name]
    params = dict(params or {})
    allowed = set(cls().get_params())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"{name} does not take {unknown}; allowed: {sorted(allowed)}")
    return cls(**params)
