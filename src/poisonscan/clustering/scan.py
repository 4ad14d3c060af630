"""Whole-dataset scan: how suspicious each class's explanations look, and a ranking.

The reference study assumed the attacked class was known. The scan runs SpRAy
on every class and ranks the classes by the **cluster separation**
(:func:`cluster_separation`): the largest separation of one SpRAy cluster
holding less than half of the class from the rest of the class, where a group
of m of the class's n heatmaps is separated by

    separation^2 = (||mean(group) - mean(rest)||^2 - S^2 n / (m (n - m))) / scale^2

A backdoor makes the poisoned images of a class share one explanation (the
trigger) that the clean images lack, so their cluster's mean heatmap sits far
from the rest's. ``S^2 n / (m (n - m))`` (``S^2``: the heatmaps' total
variance) is what a *random* subset of m heatmaps would score in expectation;
subtracting it (clipped at 0) removes the bias that lets a handful of stray
images look separated. ``scale`` is the median nonzero pairwise heatmap
distance, so that classes with different heatmap spread compare. A class with
no minority cluster scores 0 and ranks last.

Also reported: the separation of what the decision rule flags
(:func:`flagged_separation`), which ranked the classes first. Where the eigengap
chooses many clusters every rule can pick clean clusters beside the poison: on
the GW kNN graphs of one GTSRB run the rules ranked the attacked class 22nd to
43rd, the cluster separation 1st (RESULTS.md, GW on every class). The criteria
tried before (eigengap, smallest cluster share, silhouette; still reported)
depend on the class size, and GTSRB's 30-frame tracks form small tight clusters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from poisonscan.clustering.decision import cluster_shares, flag_clusters, silhouette
from poisonscan.clustering.registry import estimator_params
from poisonscan.clustering.spectral import SpectralRelevanceAnalysis

__all__ = ["class_suspicion", "cluster_separation", "flagged_separation", "rank_classes"]


def flagged_separation(heatmaps: np.ndarray, distances: np.ndarray, flagged: np.ndarray) -> float:
    """Bias-corrected distance between the mean heatmaps of the flagged and the other samples.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, ...)
    distances : ndarray of shape (n, n)
        Pairwise Euclidean heatmap distances; the median of the nonzero ones is the
        scale (nonzero, so that duplicated heatmaps cannot make it 0).
    flagged : ndarray of shape (n,), bool

    Returns
    -------
    float
        See the module docstring; 0 when nothing or everything is flagged, or when
        all heatmaps coincide.
    """
    flagged = np.asarray(flagged, dtype=bool)
    n = flagged.size
    flat = np.asarray(heatmaps, dtype=np.float64).reshape(len(heatmaps), -1)
    if len(flat) != n or np.shape(distances) != (n, n):
        raise ValueError(
            f"{n} flags need {n} heatmaps and an ({n}, {n}) distance matrix, got "
            f"{len(flat)} heatmaps and {np.shape(distances)}"
        )
    m = int(flagged.sum())
    if m == 0 or m == n:
        return 0.0
    pairs = np.asarray(distances)[np.triu_indices(n, 1)]
    pairs = pairs[pairs > 0]
    if pairs.size == 0:
        return 0.0
    gap2 = float(np.sum((flat[flagged].mean(axis=0) - flat[~flagged].mean(axis=0)) ** 2))
    total_variance = float(np.sum((flat - flat.mean(axis=0)) ** 2)) / (n - 1)
    # expected gap^2 of a random m-subset (sampling without replacement)
    chance2 = total_variance * n / (m * (n - m))
    return float(np.sqrt(max(gap2 - chance2, 0.0)) / np.median(pairs))


def cluster_separation(heatmaps: np.ndarray, distances: np.ndarray, labels: np.ndarray) -> float:
    """The largest :func:`flagged_separation` of one cluster holding less than half the samples.

    Less than half: the poison of a class is a minority of it (the assumption every
    decision rule makes, :func:`~poisonscan.clustering.largest_cluster` being the clean
    bulk), so a majority cluster is never a candidate.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, ...)
    distances : ndarray of shape (n, n)
        Pairwise Euclidean heatmap distances (the scale, as in :func:`flagged_separation`).
    labels : ndarray of shape (n,)
        Cluster labels.

    Returns
    -------
    float
        0 when no cluster is a minority (one cluster, or two of equal size).
    """
    labels = np.asarray(labels)
    values, shares = cluster_shares(labels)
    return max(
        (flagged_separation(heatmaps, distances, labels == v) for v in values[shares < 0.5]),
        default=0.0,
    )


def class_suspicion(
    heatmaps: np.ndarray,
    distances: np.ndarray,
    params: Mapping[str, Any],
    decision: Mapping[str, Any],
    euclidean: np.ndarray | None = None,
) -> dict[str, Any]:
    """SpRAy of one class, the decision rule's flags and their separation.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, H, W)
    distances : ndarray of shape (n, n)
        The distances SpRAy clusters: Euclidean, or GW (``+inf`` for pairs not solved).
    params : mapping
        The ``clustering.spray`` section: hyper-parameters of
        :class:`SpectralRelevanceAnalysis` (``seed`` is its random state) and
        ``single_group_no_flag`` (flag nothing when the spectrum shows one group);
        ``n_clusters`` is ignored: the eigengap chooses k.
    decision : mapping
        The ``clustering.decision`` section (:func:`~poisonscan.clustering.flag_clusters`).
    euclidean : ndarray of shape (n, n), optional
        Euclidean distances of ``heatmaps``, whose median scales the separation (default:
        ``distances``, which must then be Euclidean), so that the separation of the flags
        of any distance is measured in the same unit.

    Returns
    -------
    dict with n, k, n_groups, eigengap, min_share, silhouette, flagged_share,
    separation and cluster_separation (:func:`cluster_separation`, 0 where
    ``single_group_no_flag`` flags nothing); NaN (k = -1) when the class is too small
    for SpRAy (fewer than ``max(n_neighbors, k_max) + 2`` samples).
    """
    p = estimator_params(params)
    single_group_no_flag = bool(p.pop("single_group_no_flag", False))
    p["n_clusters"] = None
    est = SpectralRelevanceAnalysis(**p)
    n = int(np.shape(distances)[0])
    if n < max(est.n_neighbors, est.k_max) + 2:
        nan = math.nan
        return {"n": n, "k": -1, "n_groups": -1, "eigengap": nan, "min_share": nan,
                "silhouette": nan, "flagged_share": nan, "separation": nan,
                "cluster_separation": nan}  # fmt: skip
    est.fit(distances)
    _, shares = cluster_shares(est.labels_)
    sil = silhouette(est.labels_, distances=distances)
    flagged = flag_clusters(est.labels_, decision, silhouette=sil)
    one_group = single_group_no_flag and est.n_groups_ == 1
    if one_group:
        flagged[:] = False
    scale = distances if euclidean is None else euclidean
    by_cluster = 0.0 if one_group else cluster_separation(heatmaps, scale, est.labels_)
    return {
        "n": n,
        "k": est.n_clusters_,
        "n_groups": est.n_groups_,
        "eigengap": est.eigengap_,
        "min_share": float(shares.min()),
        "silhouette": sil,
        "flagged_share": float(flagged.mean()),
        "separation": flagged_separation(heatmaps, scale, flagged),
        "cluster_separation": by_cluster,
    }


def rank_classes(
    rows: Sequence[Mapping[str, Any]], by: str = "cluster_separation"
) -> list[dict[str, Any]]:
    """Add ``rank``: 1 = largest value of the column ``by`` = most suspicious.

    Ties share the lowest rank. Classes that score 0 (no minority cluster, or nothing
    flagged for ``by="separation"``) or are too small to analyse (NaN) all share the
    last rank, ``len(rows)``, so that a class is never "first" without a candidate group.

    Parameters
    ----------
    rows : sequence of mappings, one per class, each with the column ``by``
    by : str
        The column that ranks: ``cluster_separation`` (the scan's ranking) or
        ``separation`` (the decision rule's flags, reported beside it).

    Returns
    -------
    list of dict
        The rows (copied) with ``rank``.
    """
    out = [dict(r) for r in rows]
    v = np.array([r[by] for r in out], dtype=np.float64)
    scored = v > 0  # False for 0 and NaN
    ranks = np.full(len(out), len(out), dtype=int)
    if scored.any():
        ranks[scored] = rankdata(-v[scored], method="min").astype(int)
    for r, rank in zip(out, ranks, strict=True):
        r["rank"] = int(rank)
    return out
