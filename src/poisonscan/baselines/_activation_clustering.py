"""Activation Clustering (Chen et al. 2018) with ART's options, and raw-pixel clustering.

* :class:`ActivationClustering` with the options of ART's
  ``ActivationDefence``: reduce the activations of one class with PCA or
  FastICA to ``nb_dims`` dimensions, k-means with ``nb_clusters`` clusters,
  then one of ART's four cluster analyses (``smaller``, ``relative-size``,
  ``distance``, ``silhouette-scores``). Given the same activations and the
  same k-means partition it flags the same samples as ART (tested against
  ART). Differences: k-means uses ``n_init`` restarts (ART: scikit-learn's
  default, one k-means++ run) and a fixed seed; ``relative-size`` and
  ``silhouette-scores`` accept more than 2 clusters.
* :class:`RawPixelClustering`: the reference study's control, Activation
  Clustering on grayscale pixels instead of activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA

from poisonscan.clustering.decision import (
    DECISION_RULES,
    centre_distance_score,
    decide,
    silhouette,
)

__all__ = [
    "CLUSTER_ANALYSES",
    "REDUCERS",
    "ActivationClustering",
    "RawPixelClustering",
    "class_medians",
    "distance_analysis",
    "reduce_dimensionality",
    "to_grayscale",
]

REDUCERS = ("PCA", "FastICA")
CLUSTER_ANALYSES = ("smaller", "relative-size", "distance", "silhouette-scores")
"""ART's cluster analyses; :class:`ActivationClustering` also takes every decision rule."""


def reduce_dimensionality(
    x: np.ndarray, nb_dims: int = 10, reduce: str = "PCA", random_state: int | None = 0
) -> np.ndarray:
    """Reduce features to ``nb_dims`` dimensions as ART's ``reduce_dimensionality`` does.

    PCA, or FastICA with ART's ``max_iter=1000, tol=0.005``. Like ART, features
    with at most ``nb_dims`` dimensions are returned unchanged; unlike ART,
    fewer samples than ``nb_dims`` reduce to that many dimensions instead of
    failing.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    nb_dims : int, default 10
    reduce : {"PCA", "FastICA"}, default "PCA"
    random_state : int or None, default 0

    Returns
    -------
    ndarray of shape (n, min(nb_dims, d, n))
    """
    if reduce not in REDUCERS:
        raise ValueError(f"reduce must be one of {REDUCERS}, got {reduce!r}")
    if nb_dims < 1:
        raise ValueError(f"nb_dims must be >= 1, got {nb_dims}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected features of shape (n, d), got shape {x.shape}")
    if x.shape[1] <= nb_dims:
        return x
    dims = min(nb_dims, x.shape[0])
    if reduce == "PCA":
        projector: PCA | FastICA = PCA(n_components=dims, random_state=random_state)
    else:
        projector = FastICA(n_components=dims, max_iter=1000, tol=0.005, random_state=random_state)
    return projector.fit_transform(x)


def class_medians(
    features_by_class: Sequence[np.ndarray],
    nb_dims: int = 10,
    reduce: str = "PCA",
    random_state: int | None = 0,
) -> list[np.ndarray]:
    """Median of every class's reduced features (each class reduced on its own, as in ART)."""
    return [
        np.median(reduce_dimensionality(f, nb_dims, reduce, random_state), axis=0)
        for f in features_by_class
    ]


def distance_analysis(
    labels: np.ndarray, reduced: np.ndarray, other_medians: Sequence[np.ndarray]
) -> np.ndarray:
    """ART's ``analyze_by_distance`` for one class with 2 clusters.

    A cluster is poison if, for some other class, its median is closer to that
    class's median than to its own class's median while the other cluster's
    median is not. As in ART, every class is reduced in its own projection.

    Parameters
    ----------
    labels : ndarray of shape (n,), values in {0, 1}
    reduced : ndarray of shape (n, d)
        This class's reduced features.
    other_medians : sequence of ndarray of shape (d,)
        Medians of the other classes' reduced features (:func:`class_medians`).

    Returns
    -------
    ndarray of shape (n,), bool
    """
    labels = np.asarray(labels)
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError("the 'distance' analysis needs exactly 2 clusters labelled 0 and 1")
    own = np.median(reduced, axis=0)
    centres = [np.median(reduced[labels == c], axis=0) for c in (0, 1)]
    to_own = [np.linalg.norm(c - own) for c in centres]
    poison = [False, False]
    for median in other_medians:
        to_other = [np.linalg.norm(c - median) for c in centres]
        if to_other[0] < to_own[0] and to_other[1] > to_own[1]:
            poison[0] = True
        if to_other[1] < to_own[1] and to_other[0] > to_own[0]:
            poison[1] = True
    return np.isin(labels, [c for c in (0, 1) if poison[c]])


class ActivationClustering(ClusterMixin, BaseEstimator):
    """Activation Clustering with ART's options, for the samples of one class.

    Parameters
    ----------
    nb_dims : int, default 10
    reduce : {"PCA", "FastICA"}, default "PCA"
    nb_clusters : int, default 2
    cluster_analysis : str, default "smaller"
        ART's ``"smaller"``, ``"relative-size"``, ``"distance"``,
        ``"silhouette-scores"``, or ``"size-gap"`` (see
        :mod:`poisonscan.clustering.decision`).
    size_threshold : float, default 0.35
    silhouette_threshold : float, default 0.1
    n_init : int, default 10
        k-means restarts (k-means++ seeding).
    random_state : int or None, default 0

    Attributes
    ----------
    reduced_ : ndarray of shape (n, nb_dims)
    labels_ : ndarray of shape (n,)
    silhouette_ : float
        Mean silhouette of the clusters on ``reduced_``.
    flagged_ : ndarray of shape (n,), bool
    score_ : ndarray of shape (n,)
        Distance from the centre of the largest cluster in ``reduced_``.
    """

    def __init__(
        self,
        nb_dims: int = 10,
        reduce: str = "PCA",
        nb_clusters: int = 2,
        cluster_analysis: str = "smaller",
        size_threshold: float = 0.35,
        silhouette_threshold: float = 0.1,
        n_init: int = 10,
        random_state: int | None = 0,
    ) -> None:
        self.nb_dims = nb_dims
        self.reduce = reduce
        self.nb_clusters = nb_clusters
        self.cluster_analysis = cluster_analysis
        self.size_threshold = size_threshold
        self.silhouette_threshold = silhouette_threshold
        self.n_init = n_init
        self.random_state = random_state

    def _check(self) -> None:
        allowed = sorted(set(CLUSTER_ANALYSES) | set(DECISION_RULES))
        if self.cluster_analysis not in allowed:
            raise ValueError(
                f"cluster_analysis must be one of {allowed}, got {self.cluster_analysis!r}"
            )
        if self.nb_clusters < 2:
            raise ValueError(f"nb_clusters must be >= 2, got {self.nb_clusters}")
        if self.cluster_analysis == "distance" and self.nb_clusters != 2:
            raise ValueError("the 'distance' analysis needs nb_clusters = 2")

    def fit(
        self,
        X: np.ndarray,
        y: Any = None,
        *,
        other_medians: Sequence[np.ndarray] | None = None,
    ) -> ActivationClustering:
        """Cluster the features ``X`` of shape (n, d) of one class.

        Parameters
        ----------
        other_medians : sequence of ndarray, optional
            Medians of the other classes' reduced features; required by the
            ``"distance"`` analysis (see :func:`class_medians`).
        """
        self._check()
        self.reduced_ = reduce_dimensionality(X, self.nb_dims, self.reduce, self.random_state)
        km = KMeans(self.nb_clusters, n_init=self.n_init, random_state=self.random_state)
        self.labels_ = km.fit_predict(self.reduced_)
        self.silhouette_ = silhouette(self.labels_, features=self.reduced_)
        if self.cluster_analysis == "distance":
            if other_medians is None:
                raise ValueError("the 'distance' analysis needs other_medians (other classes)")
            self.flagged_ = distance_analysis(self.labels_, self.reduced_, other_medians)
        else:
            self.flagged_ = decide(
                self.labels_,
                self.cluster_analysis,
                silhouette=self.silhouette_,
                size_threshold=self.size_threshold,
                silhouette_threshold=self.silhouette_threshold,
            )
        self.score_ = centre_distance_score(self.reduced_, self.labels_)
        return self


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """Grayscale pixels in [0, 1], flattened: ITU-R 601-2 luma (as PIL's "L" mode).

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3), uint8 or float in [0, 255]

    Returns
    -------
    ndarray of shape (n, H * W), float64
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected images of shape (n, H, W, 3), got shape {x.shape}")
    gray = x @ np.array([0.299, 0.587, 0.114]) / 255.0
    return gray.reshape(len(gray), -1)


class RawPixelClustering(ActivationClustering):
    """The reference study's control: Activation Clustering on grayscale pixels.

    Same parameters and attributes as :class:`ActivationClustering`; ``fit``
    takes images of shape (n, H, W, 3).
    """

    def fit(
        self,
        X: np.ndarray,
        y: Any = None,
        *,
        other_medians: Sequence[np.ndarray] | None = None,
    ) -> RawPixelClustering:
        super().fit(to_grayscale(X), other_medians=other_medians)
        return self
