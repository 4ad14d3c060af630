"""Decision rules (which clusters hold the poison) and continuous per-sample poison scores.

Rules, by name (the names are ART's ``cluster_analysis`` values):

* ``"smaller"``: the smallest cluster is poison (the reference study's rule
  and ART's default). Ties go to the lowest label.
* ``"size-gap"``: sort the clusters by size and cut at the largest ratio
  between consecutive sizes; every cluster below the cut is poison. With
  2 clusters this is ``"smaller"``; with the eigengap's k > 2 it flags all the
  small clusters a split-up poison forms (several sticker positions give
  several small, pure clusters: measured on GTSRB, 3x3 sticker, p = 15 %,
  SpRAy k = 10: TPR 0.985 / TNR 1.0, where ``"smaller"`` gets TPR 0.12).
* ``"relative-size"``: every cluster holding less than ``size_threshold``
  (0.35) of the samples is poison; shares are rounded to 2 decimals before
  the comparison, as in ART. ART allows only 2 clusters; here any number.
* ``"silhouette-scores"``: the ``"relative-size"`` clusters, but only if the
  mean silhouette of the clustering exceeds ``silhouette_threshold`` (0.1,
  rounded to 4 decimals as in ART); otherwise nothing is flagged.

A rule flags whole clusters, so it cannot rank samples. Every method also
gives a continuous score (higher = more suspicious) from which AUROC is
computed. For the clusterings it is :func:`cluster_score`: 1 - the share of
the sample's cluster (:func:`size_score`), ties inside a cluster broken by the
distance from the largest, presumably clean, cluster
(:func:`centre_distance_score` in the clustered space, or
:func:`distance_to_cluster_score` for a precomputed distance matrix).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from sklearn.metrics import silhouette_score

from poisonscan.clustering.spectral import finite_distances

__all__ = [
    "DECISION_RULES",
    "centre_distance_score",
    "cluster_score",
    "cluster_shares",
    "decide",
    "distance_to_cluster_score",
    "flag_clusters",
    "largest_cluster",
    "relative_size",
    "silhouette",
    "silhouette_scores",
    "size_gap",
    "size_score",
    "smaller_cluster",
]


def cluster_shares(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels (sorted) and the share of the samples in each."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return values, counts / counts.sum()


def largest_cluster(labels: np.ndarray) -> Any:
    """Label of the largest cluster (ties: the lowest label)."""
    values, shares = cluster_shares(labels)
    return values[np.argmax(shares)]


def smaller_cluster(labels: np.ndarray, **_: Any) -> np.ndarray:
    """Flag the members of the smallest cluster (ties: the lowest label) as poison."""
    values, shares = cluster_shares(labels)
    return np.asarray(labels) == values[np.argmin(shares)]


def size_gap(labels: np.ndarray, **_: Any) -> np.ndarray:
    """Flag the clusters below the largest ratio between consecutive cluster sizes.

    Sizes are sorted ascending (ties: the lower label first); with one cluster
    nothing is flagged, with two the smaller one.
    """
    labels = np.asarray(labels)
    values, shares = cluster_shares(labels)
    if values.size < 2:
        return np.zeros(labels.shape, dtype=bool)
    order = np.argsort(shares, kind="stable")
    sorted_shares = shares[order]
    cut = int(np.argmax(np.round(sorted_shares[1:] / sorted_shares[:-1], 12)))
    return np.isin(labels, values[order[: cut + 1]])


def relative_size(labels: np.ndarray, size_threshold: float = 0.35, **_: Any) -> np.ndarray:
    """Flag every cluster whose share, rounded to 2 decimals, is below ``size_threshold``."""
    values, shares = cluster_shares(labels)
    small = values[np.round(shares, 2) < round(size_threshold, 2)]
    return np.isin(np.asarray(labels), small)


def silhouette_scores(
    labels: np.ndarray,
    silhouette: float | None = None,
    size_threshold: float = 0.35,
    silhouette_threshold: float = 0.1,
    **_: Any,
) -> np.ndarray:
    """``relative_size`` flags if the clustering's silhouette exceeds the threshold, else none."""
    if silhouette is None:
        raise ValueError("the 'silhouette-scores' rule needs the clustering's silhouette value")
    labels = np.asarray(labels)
    if math.isnan(silhouette) or round(silhouette, 4) <= round(silhouette_threshold, 4):
        return np.zeros(labels.shape, dtype=bool)
    return relative_size(labels, size_threshold)


DECISION_RULES: dict[str, Callable[..., np.ndarray]] = {
    "smaller": smaller_cluster,
    "size-gap": size_gap,
    "relative-size": relative_size,
    "silhouette-scores": silhouette_scores,
}


def decide(
    labels: np.ndarray,
    rule: str,
    *,
    silhouette: float | None = None,
    size_threshold: float = 0.35,
    silhouette_threshold: float = 0.1,
) -> np.ndarray:
    """Apply the decision rule ``rule`` to cluster ``labels``.

    Parameters
    ----------
    labels : ndarray of shape (n,)
    rule : str
        A key of :data:`DECISION_RULES`.
    silhouette : float, optional
        Mean silhouette of the clustering (``"silhouette-scores"`` only).
    size_threshold, silhouette_threshold : float

    Returns
    -------
    ndarray of shape (n,), bool
        True = flagged as poison.
    """
    if rule not in DECISION_RULES:
        raise ValueError(f"unknown decision rule {rule!r}; allowed: {sorted(DECISION_RULES)}")
    return DECISION_RULES[rule](
        labels,
        silhouette=silhouette,
        size_threshold=size_threshold,
        silhouette_threshold=silhouette_threshold,
    )


def flag_clusters(
    labels: np.ndarray, decision: Mapping[str, Any], silhouette: float | None = None
) -> np.ndarray:
    """:func:`decide` with the ``clustering.decision`` config section.

    Parameters
    ----------
    labels : ndarray of shape (n,)
    decision : mapping
        ``rule``, ``size_threshold``, ``silhouette_threshold``.
    silhouette : float, optional
        Mean silhouette of the clustering (``"silhouette-scores"`` only).
    """
    return decide(
        labels,
        str(decision["rule"]),
        silhouette=silhouette,
        size_threshold=float(decision["size_threshold"]),
        silhouette_threshold=float(decision["silhouette_threshold"]),
    )


def silhouette(
    labels: np.ndarray,
    *,
    features: np.ndarray | None = None,
    distances: np.ndarray | None = None,
) -> float:
    """Mean silhouette of ``labels`` on ``features`` or a precomputed distance matrix.

    ``+inf`` distances are replaced by :func:`finite_distances`. NaN when
    there are fewer than 2 or more than ``n - 1`` clusters.
    """
    labels = np.asarray(labels)
    n_labels = np.unique(labels).size
    if not 2 <= n_labels <= labels.size - 1:
        return math.nan
    if (features is None) == (distances is None):
        raise ValueError("give exactly one of features and distances")
    if distances is not None:
        return float(silhouette_score(finite_distances(distances), labels, metric="precomputed"))
    return float(silhouette_score(np.asarray(features, dtype=np.float64), labels))


def size_score(labels: np.ndarray) -> np.ndarray:
    """``1 - share`` of the sample's cluster: members of small clusters score high."""
    labels = np.asarray(labels)
    values, shares = cluster_shares(labels)
    return 1.0 - shares[np.searchsorted(values, labels)]


def cluster_score(labels: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """:func:`size_score`, ties inside a cluster broken by ``distance``.

    ``size_score + distance / max(distance) * 0.5 / n``: clusters keep their
    order by size (their scores differ by at least ``1 / n``), and inside a
    cluster the samples farther from the clean cluster rank higher.

    Parameters
    ----------
    labels : ndarray of shape (n,)
    distance : ndarray of shape (n,)
        Distance from the largest cluster, e.g. :func:`centre_distance_score`.
    """
    labels = np.asarray(labels)
    dist = np.asarray(distance, dtype=np.float64)
    top = float(np.max(dist)) if dist.size else 0.0
    tie = dist / top if top > 0 else np.zeros_like(dist)
    return size_score(labels) + tie * 0.5 / max(labels.size, 1)


def centre_distance_score(embedding: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Euclidean distance of each sample from the mean of the largest cluster.

    Parameters
    ----------
    embedding : ndarray of shape (n, d)
        The space the clustering was done in.
    labels : ndarray of shape (n,)

    Returns
    -------
    ndarray of shape (n,)
    """
    x = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels)
    centre = x[labels == largest_cluster(labels)].mean(axis=0)
    return np.linalg.norm(x - centre, axis=1)


def distance_to_cluster_score(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean precomputed distance of each sample to the members of the largest cluster.

    The sample itself is left out of its own mean; ``+inf`` (pairs not
    evaluated) is replaced by :func:`finite_distances`.
    """
    d = finite_distances(distances)
    labels = np.asarray(labels)
    member = labels == largest_cluster(labels)
    total = d[:, member].sum(axis=1)
    count = np.full(labels.size, float(member.sum()))
    count[member] -= 1.0
    return total / np.maximum(count, 1.0)
