"""Detectors on the model's penultimate activations: Activation Clustering (``ac``,
ART's options) and Spectral Signatures (``ss``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import baselines, clustering
from poisonscan.detectors._base import Detection, DetectorInputs

__all__ = ["CENTRE_SCORE", "activation_clustering", "spectral_signatures"]

CENTRE_SCORE = "distance from the largest cluster's centre (reduced space)"


def activation_clustering(inputs: DetectorInputs, params: Mapping[str, Any]) -> Detection:
    """Activation Clustering (Chen et al. 2018) with ART's options
    (``activation_clustering`` section); the ``distance`` analysis reads the other classes."""
    est = baselines.ActivationClustering(**clustering.estimator_params(params))
    others = None
    if est.cluster_analysis == "distance":
        feats = inputs.other_classes_activations()
        if not feats:
            raise ValueError(f"the 'distance' analysis needs other classes than {inputs.group}")
        others = baselines.class_medians(feats, est.nb_dims, est.reduce, est.random_state)
    est.fit(inputs.activations, other_medians=others)
    extras = {"silhouette": np.float64(est.silhouette_), "embedding": est.reduced_}
    return Detection(est.labels_, est.flagged_, est.score_, est.nb_clusters, est.cluster_analysis,
                     CENTRE_SCORE, extras)  # fmt: skip


def spectral_signatures(inputs: DetectorInputs, params: Mapping[str, Any]) -> Detection:
    """Spectral Signatures (Tran et al. 2018; ``baselines.ss`` section): flags the top
    ``eps_multiplier * expected_poison_rate`` of the class by its outlier score."""
    est = baselines.SpectralSignatures(**dict(params)).fit(inputs.activations)
    q = 1.0 - est.eps_multiplier * est.expected_poison_rate
    return Detection(est.labels_, est.flagged_, est.score_, None, f"score > quantile {q:.3g}",
                     "squared projection on the top singular vector",
                     {"threshold": np.float64(est.threshold_)})  # fmt: skip
