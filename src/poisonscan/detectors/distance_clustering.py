"""Detectors that cluster a heatmap distance matrix: SpRAy (``hc_<d>``), agglomerative
(``agglo_<d>``) and HDBSCAN (``hdbscan_<d>``); a decision rule flags clusters."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import clustering
from poisonscan.clustering import decision as decision_rules
from poisonscan.detectors._base import Detection, DetectorInputs

__all__ = ["CLUSTER_SCORE", "agglomerative", "hdbscan", "spray"]

log = logging.getLogger(__name__)

CLUSTER_SCORE = "1 - cluster share, ties by distance from the largest cluster"


def _cluster(
    name: str, d: np.ndarray, params: Mapping[str, Any], decision: Mapping[str, Any]
) -> tuple[Any, np.ndarray, dict[str, Any]]:
    est = clustering.make_clusterer(name, clustering.estimator_params(params)).fit(d)
    sil = decision_rules.silhouette(est.labels_, distances=d)
    flagged = decision_rules.flag_clusters(est.labels_, decision, silhouette=sil)
    return est, flagged, {"silhouette": np.float64(sil)}


def _detection(
    est: Any, d: np.ndarray, flagged: np.ndarray, rule: str, extras: dict[str, Any]
) -> Detection:
    score = decision_rules.cluster_score(
        est.labels_, decision_rules.distance_to_cluster_score(d, est.labels_)
    )
    return Detection(est.labels_, flagged, score, est.n_clusters_, rule, CLUSTER_SCORE, extras)


def spray(
    inputs: DetectorInputs, params: Mapping[str, Any], decision: Mapping[str, Any]
) -> Detection:
    """SpRAy (Lapuschkin et al. 2019) on the distance matrix: kNN graph, ``L_sym``,
    eigengap, spectral k-means; ``params`` is the ``clustering.spray`` section."""
    d = inputs.distances
    p = dict(params)
    single_group_no_flag = bool(p.pop("single_group_no_flag"))
    est, flagged, extras = _cluster("spectral", d, p, decision)
    extras.update(
        eigenvalues=est.eigenvalues_,
        embedding=est.embedding_,
        gaps=est.gaps_,
        n_groups=np.int64(est.n_groups_),
        eigengap=np.float64(est.eigengap_),
    )
    log.info("smallest eigenvalues of L_sym: %s", np.round(est.eigenvalues_[:12], 4).tolist())
    log.info("eigengap: k=%d (largest gap in [1, k_max] after %d)", est.n_clusters_,
             est.n_groups_)  # fmt: skip
    rule = str(decision["rule"])
    if single_group_no_flag and est.n_groups_ == 1 and est.n_clusters is None:
        log.info("the spectrum shows one group: nothing is flagged")
        flagged = np.zeros_like(flagged)
        rule = f"{rule} (one group: none)"
    return _detection(est, d, flagged, rule, extras)


def _plain(
    name: str, inputs: DetectorInputs, params: Mapping[str, Any], decision: Mapping[str, Any]
) -> Detection:
    d = inputs.distances
    est, flagged, extras = _cluster(name, d, params, decision)
    return _detection(est, d, flagged, str(decision["rule"]), extras)


def agglomerative(
    inputs: DetectorInputs, params: Mapping[str, Any], decision: Mapping[str, Any]
) -> Detection:
    """Agglomerative clustering of the distance matrix (``clustering.agglomerative``)."""
    return _plain("agglomerative", inputs, params, decision)


def hdbscan(
    inputs: DetectorInputs, params: Mapping[str, Any], decision: Mapping[str, Any]
) -> Detection:
    """HDBSCAN of the distance matrix (``clustering.hdbscan``); noise is one more group."""
    return _plain("hdbscan", inputs, params, decision)
