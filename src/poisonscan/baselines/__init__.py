"""Baseline poison detectors, as scikit-learn style estimators.

Per class (``fit`` takes the features of one class):

* :class:`ActivationClustering` (Chen et al. 2018) with ART's options, and
  :class:`RawPixelClustering`, the reference study's control on grayscale pixels.
* :class:`SpectralSignatures` (Tran, Li, Madry 2018).

Whole dataset (``fit`` takes the features of every class with their labels):

* :class:`SCAn` (Tang et al. 2021): a likelihood-ratio test per class calibrated
  over the classes (robust z, flagged above e^2), then the suspicious subgroup of
  each flagged class. Needs no target class; a small trusted clean set is optional.
* :class:`SPECTRE` (Hayase et al. 2021): robust covariance, whitening and the
  QUantum Entropy score in one class. It is *told the answer*: the target class
  and an upper bound ``eps`` on its poison count are required parameters.

Modules (private; the names below are the public API): ``_activation_clustering``
AC, raw pixels and ART's helpers; ``_spectral_signatures``; ``_scan_tang`` SCAn
(named so that it is not taken for our whole-dataset scan, ``clustering.scan``);
``_spectre``; ``_features`` the checked input of the whole-dataset baselines.
SCAn and SPECTRE load on first use, so the code hash of a detector that uses only
AC, Spectral Signatures or raw pixels does not change when they do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from poisonscan.baselines._activation_clustering import (
    CLUSTER_ANALYSES,
    REDUCERS,
    ActivationClustering,
    RawPixelClustering,
    class_medians,
    distance_analysis,
    reduce_dimensionality,
    to_grayscale,
)
from poisonscan.baselines._spectral_signatures import SpectralSignatures

if TYPE_CHECKING:
    from poisonscan.baselines._scan_tang import SCAn
    from poisonscan.baselines._spectre import SPECTRE, que_scores

__all__ = [
    "CLUSTER_ANALYSES",
    "REDUCERS",
    "SPECTRE",
    "ActivationClustering",
    "RawPixelClustering",
    "SCAn",
    "SpectralSignatures",
    "class_medians",
    "distance_analysis",
    "que_scores",
    "reduce_dimensionality",
    "to_grayscale",
]

_LAZY = {"SCAn": "_scan_tang", "SPECTRE": "_spectre", "que_scores": "_spectre"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
