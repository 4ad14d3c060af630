"""Whole-dataset scan: how suspicious each class's explanations look, and a ranking.

The reference study assumed the attacked class was known. The scan runs SpRAy
on every class and measures three signs of a planted sub-population:

* ``eigengap``: ``lambda_{k+1} - lambda_k`` at the eigengap's k in ``[2, k_max]``
  (a well-separated group opens a large gap); higher = more suspicious;
* ``min_share``: share of the smallest SpRAy cluster; lower = more suspicious;
* ``silhouette``: mean silhouette of the SpRAy clusters on the distances;
  higher = more suspicious.

:func:`rank_classes` ranks the classes by each criterion (1 = most
suspicious) and overall by the mean of the three ranks (ties: eigengap rank).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from poisonscan.clustering.decision import cluster_shares, silhouette
from poisonscan.clustering.spectral import SpectralRelevanceAnalysis

__all__ = ["CRITERIA", "class_suspicion", "rank_classes"]

# criterion -> True if larger values are more suspicious
CRITERIA: dict[str, bool] = {"eigengap": True, "min_share": False, "silhouette": True}


def class_suspicion(
    distances: np.ndarray, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """SpRAy of one class's distance matrix and its suspicion criteria.

    Parameters
    ----------
    distances : ndarray of shape (n, n)
    params : mapping, optional
        Hyper-parameters of :class:`SpectralRelevanceAnalysis` (``n_clusters``
        is forced to None: the eigengap chooses k).

    Returns
    -------
    dict with n, k, n_groups, eigengap, min_share, silhouette; the criteria
    are NaN when the class is too small for SpRAy (fewer than
    ``max(n_neighbors, k_max) + 2`` samples).
    """
    p = dict(params or {})
    p["n_clusters"] = None
    est = SpectralRelevanceAnalysis(**p)
    n = int(np.shape(distances)[0])
    if n < max(est.n_neighbors, est.k_max) + 2:
        nan = math.nan
        return {"n": n, "k": -1, "n_groups": -1, "eigengap": nan, "min_share": nan,
                "silhouette": nan}  # fmt: skip
    est.fit(distances)
    _, shares = cluster_shares(est.labels_)
    return {
        "n": n,
        "k": est.n_clusters_,
        "n_groups": est.n_groups_,
        "eigengap": est.eigengap_,
        "min_share": float(shares.min()),
        "silhouette": silhouette(est.labels_, distances=distances),
    }


def _rank(values: np.ndarray, larger_first: bool) -> np.ndarray:
    """1 = most suspicious; NaN ranks last; ties share the lowest rank."""
    v = np.asarray(values, dtype=np.float64)
    key = np.where(np.isnan(v), np.inf, -v if larger_first else v)
    return rankdata(key, method="min").astype(int)


def rank_classes(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Add per-criterion ranks, their mean (``suspicion``) and the overall ``rank``.

    Parameters
    ----------
    rows : sequence of mappings
        One per class, each with the keys of :data:`CRITERIA`.

    Returns
    -------
    list of dict
        The rows (copied) with ``rank_<criterion>``, ``suspicion`` (mean rank,
        lower = more suspicious) and ``rank`` (1 = most suspicious class).
    """
    out = [dict(r) for r in rows]
    if not out:
        return out
    ranks = {}
    for name, larger_first in CRITERIA.items():
        ranks[name] = _rank(np.array([r[name] for r in out], dtype=np.float64), larger_first)
    mean = np.mean(np.stack(list(ranks.values())), axis=0)
    order = np.lexsort((ranks["eigengap"], mean))
    overall = np.empty(len(out), dtype=int)
    overall[order] = np.arange(1, len(out) + 1)
    for i, r in enumerate(out):
        for name in CRITERIA:
            r[f"rank_{name}"] = int(ranks[name][i])
        r["suspicion"] = float(mean[i])
        r["rank"] = int(overall[i])
    return out
