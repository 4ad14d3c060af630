"""The reference study's GW k-means (``gw_kmeans``): k-means++ on the GW matrix,
GW barycentres as centres, a decision rule flags clusters."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import clustering
from poisonscan.clustering import decision as decision_rules
from poisonscan.detectors._base import Detection, DetectorInputs
from poisonscan.detectors.distance_clustering import CLUSTER_SCORE
from poisonscan.distances import GWParams
from poisonscan.parameters import field_names

__all__ = ["gw_kmeans"]

log = logging.getLogger(__name__)


def gw_kmeans(
    inputs: DetectorInputs,
    params: Mapping[str, Any],
    gw: Mapping[str, Any],
    decision: Mapping[str, Any],
) -> Detection:
    """GW k-means of the class's heatmaps.

    Parameters
    ----------
    params : mapping
        The ``clustering.gw_kmeans`` section.
    gw : mapping
        The ``distances.gw`` section: the metric measure spaces and the GW solver of
        the assignment are those of the GW matrix (``tile``, ``mode``, ``knn`` unused).
    decision : mapping
        The ``clustering.decision`` section.
    """
    d = inputs.distances
    solver = GWParams.from_config({k: v for k, v in gw.items() if k in field_names(GWParams)})
    spaces = clustering.spaces_from_heatmaps(inputs.heatmaps, solver)
    est = clustering.GromovWassersteinKMeans(gw=solver, **clustering.estimator_params(params))
    est.fit(spaces, distances=d)
    log.info("GW k-means: %d iterations, converged %s", est.n_iter_, est.converged_)
    labels = est.labels_
    sil = decision_rules.silhouette(labels, distances=d)
    flagged = decision_rules.flag_clusters(labels, decision, silhouette=sil)
    score = decision_rules.cluster_score(
        labels, est.center_distances_[:, int(decision_rules.largest_cluster(labels))]
    )
    # centres differ in size (a seed's own space, or support_size points): pad with NaN
    sizes = np.array([len(c) for c in est.barycenters_], dtype=np.int64)
    barycenters = np.full((len(sizes), sizes.max(), sizes.max()), np.nan)
    for j, c in enumerate(est.barycenters_):
        barycenters[j, : len(c), : len(c)] = c
    extras = {
        "silhouette": np.float64(sil),
        "center_distances": est.center_distances_,
        "barycenters": barycenters,
        "barycenter_sizes": sizes,
        "n_iter": np.int64(est.n_iter_),
        "converged": np.bool_(est.converged_),
        "init": np.asarray(est.init_indices_),
    }
    return Detection(labels, flagged, score, est.n_clusters, str(decision["rule"]),
                     CLUSTER_SCORE, extras)  # fmt: skip
