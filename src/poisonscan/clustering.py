"""Clustering of heatmap distances (SpRAy) and of activations (Activation Clustering).

Both estimators follow scikit-learn's conventions: hyper-parameters in
``__init__``, learned state in trailing-underscore attributes set by ``fit``.
The cluster that holds the poison is chosen by a decision rule from
:data:`DECISION_RULES`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import kneighbors_graph

__all__ = [
    "DECISION_RULES",
    "ActivationClustering",
    "SpectralRelevanceAnalysis",
    "knn_affinity",
    "normalized_laplacian",
    "smaller_cluster",
]


def knn_affinity(distances: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Binary symmetric kNN affinity from a precomputed distance matrix.

    ``A[i, j] = 1`` if j is among the ``n_neighbors`` nearest neighbours of i
    or i among those of j (self excluded).

    Parameters
    ----------
    distances : ndarray of shape (n, n)
    n_neighbors : int

    Returns
    -------
    ndarray of shape (n, n), float64
    """
    n = distances.shape[0]
    if distances.shape != (n, n):
        raise ValueError(f"distance matrix must be square, got shape {distances.shape}")
    if not 1 <= n_neighbors < n:
        raise ValueError(f"n_neighbors must lie in [1, {n - 1}] for {n} samples, got {n_neighbors}")
    if not np.all(np.isfinite(distances)):
        raise ValueError("distance matrix contains NaN or infinite values")
    knn = kneighbors_graph(
        distances, n_neighbors, mode="connectivity", metric="precomputed", include_self=False
    ).toarray()
    return np.maximum(knn, knn.T)


def normalized_laplacian(affinity: np.ndarray) -> np.ndarray:
    """``L_sym = I - D^-1/2 A D^-1/2`` for a symmetric affinity ``A`` (isolated nodes keep 1)."""
    degree = affinity.sum(axis=1)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    return np.eye(len(affinity)) - inv_sqrt[:, None] * affinity * inv_sqrt[None, :]


class SpectralRelevanceAnalysis(ClusterMixin, BaseEstimator):
    """SpRAy: spectral clustering of a precomputed distance matrix.

    kNN affinity -> normalised Laplacian ``L_sym`` -> its smallest eigenpairs ->
    spectral embedding (the first ``n_clusters`` eigenvectors, rows scaled to
    unit length) -> k-means.

    Attributes
    ----------
    affinity_ : ndarray of shape (n, n)
    eigenvalues_ : ndarray of shape (n_eigenvalues,)
        Smallest eigenvalues of ``L_sym``, ascending.
    embedding_ : ndarray of shape (n, n_clusters)
    labels_ : ndarray of shape (n,)
    """

    def __init__(
        self,
        n_neighbors: int = 10,
        n_clusters: int = 2,
        n_eigenvalues: int = 32,
        n_init: int = 10,
        random_state: int | None = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.n_clusters = n_clusters
        self.n_eigenvalues = n_eigenvalues
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> SpectralRelevanceAnalysis:
        distances = np.asarray(X, dtype=np.float64)
        n = distances.shape[0]
        if not 2 <= self.n_clusters <= n:
            raise ValueError(f"n_clusters must lie in [2, {n}], got {self.n_clusters}")
        self.affinity_ = knn_affinity(distances, self.n_neighbors)
        laplacian = normalized_laplacian(self.affinity_)
        n_eig = min(max(self.n_eigenvalues, self.n_clusters), n)
        values, vectors = scipy.linalg.eigh(laplacian, subset_by_index=(0, n_eig - 1))
        self.eigenvalues_ = values
        emb = vectors[:, : self.n_clusters]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.embedding_ = emb / np.where(norms > 0, norms, 1.0)
        km = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.random_state)
        self.labels_ = km.fit_predict(self.embedding_)
        return self


class ActivationClustering(ClusterMixin, BaseEstimator):
    """Activation Clustering (Chen et al. 2018): PCA of activations, then k-means.

    Attributes
    ----------
    embedding_ : ndarray of shape (n, n_components)
    labels_ : ndarray of shape (n,)
    """

    def __init__(self, n_components: int = 10, n_clusters: int = 2, random_state: int | None = 0):
        self.n_components = n_components
        self.n_clusters = n_clusters
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> ActivationClustering:
        features = np.asarray(X, dtype=np.float64)
        n_comp = min(self.n_components, *features.shape)
        self.embedding_ = PCA(n_comp, random_state=self.random_state).fit_transform(features)
        km = KMeans(self.n_clusters, n_init=10, random_state=self.random_state)
        self.labels_ = km.fit_predict(self.embedding_)
        return self


def smaller_cluster(labels: np.ndarray) -> np.ndarray:
    """Flag the members of the smallest cluster (ties: the lowest label) as poison."""
    values, counts = np.unique(labels, return_counts=True)
    return labels == values[np.argmin(counts)]


DECISION_RULES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"smaller": smaller_cluster}
