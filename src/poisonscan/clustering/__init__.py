"""Clustering of heatmap distances and the rules that decide which cluster is poison.

Modules, one concept each:

- :mod:`~poisonscan.clustering.spectral`   SpRAy: affinity, ``L_sym``, eigengap, spectral k-means
- :mod:`~poisonscan.clustering.gw_kmeans`  k-means with GW barycentres (reference study; POT
                                           loads when it runs)
- :mod:`~poisonscan.clustering.registry`   clusterers of a distance matrix by name
                                           (spectral, agglomerative, HDBSCAN)
- :mod:`~poisonscan.clustering.decision`   decision rules and continuous poison scores
- :mod:`~poisonscan.clustering.scan`       suspicion of every class, for the whole-dataset scan

Estimators follow scikit-learn's conventions: hyper-parameters in
``__init__``, learned state in trailing-underscore attributes set by ``fit``.
"""

from __future__ import annotations

from poisonscan.clustering.decision import (
    DECISION_RULES,
    centre_distance_score,
    cluster_score,
    decide,
    distance_to_cluster_score,
    flag_clusters,
    silhouette,
    size_score,
    smaller_cluster,
)
from poisonscan.clustering.gw_kmeans import GromovWassersteinKMeans, spaces_from_heatmaps
from poisonscan.clustering.registry import CLUSTERERS, estimator_params, make_clusterer
from poisonscan.clustering.scan import class_suspicion, rank_classes
from poisonscan.clustering.spectral import (
    SpectralRelevanceAnalysis,
    eigengap,
    finite_distances,
    gaussian_affinity,
    knn_affinity,
    normalized_laplacian,
    smallest_eigenpairs,
)

__all__ = [
    "CLUSTERERS",
    "DECISION_RULES",
    "GromovWassersteinKMeans",
    "SpectralRelevanceAnalysis",
    "centre_distance_score",
    "class_suspicion",
    "cluster_score",
    "decide",
    "distance_to_cluster_score",
    "eigengap",
    "estimator_params",
    "finite_distances",
    "flag_clusters",
    "gaussian_affinity",
    "knn_affinity",
    "make_clusterer",
    "normalized_laplacian",
    "rank_classes",
    "silhouette",
    "size_score",
    "smaller_cluster",
    "smallest_eigenpairs",
    "spaces_from_heatmaps",
]
