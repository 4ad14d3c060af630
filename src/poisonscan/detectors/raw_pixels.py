"""The reference study's control (``raw``): Activation Clustering on grayscale pixels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import baselines, clustering
from poisonscan.detectors._base import Detection, DetectorInputs
from poisonscan.detectors.activations import CENTRE_SCORE

__all__ = ["raw_pixels"]


def raw_pixels(
    inputs: DetectorInputs, params: Mapping[str, Any], decision: Mapping[str, Any]
) -> Detection:
    """Grayscale images of the class -> PCA/FastICA -> k-means -> the decision rule
    (``baselines.raw`` and ``clustering.decision`` sections)."""
    rule = str(decision["rule"])
    est = baselines.RawPixelClustering(
        cluster_analysis=rule,
        size_threshold=decision["size_threshold"],
        silhouette_threshold=decision["silhouette_threshold"],
        **clustering.estimator_params(params),
    ).fit(inputs.images)
    return Detection(est.labels_, est.flagged_, est.score_, est.nb_clusters, rule, CENTRE_SCORE,
                     {"silhouette": np.float64(est.silhouette_)})  # fmt: skip
