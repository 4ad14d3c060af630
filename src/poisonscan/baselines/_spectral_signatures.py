"""Spectral Signatures (Tran, Li, Madry 2018) for the samples of one class.

Centre the representations, take the top right-singular vector ``v``, score =
squared projection ``((x - mean) . v)^2``, flag scores above the quantile
``1 - eps_multiplier * expected_poison_rate``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

__all__ = ["SpectralSignatures"]


class SpectralSignatures(BaseEstimator):
    """Spectral Signatures (Tran, Li, Madry 2018) for the samples of one class.

    Parameters
    ----------
    expected_poison_rate : float in (0, 1], default 0.33
        Assumed share of poison in the class (ART's ``expected_pp_poison`` default).
    eps_multiplier : float, default 1.5
        Flag the top ``eps_multiplier * expected_poison_rate`` of the scores.

    Attributes
    ----------
    direction_ : ndarray of shape (d,)
        Top right-singular vector of the centred features.
    score_ : ndarray of shape (n,)
        Squared projection of the centred features on ``direction_``.
    threshold_ : float
        The ``1 - eps_multiplier * expected_poison_rate`` quantile of the scores.
    flagged_ : ndarray of shape (n,), bool
        ``score_ > threshold_``.
    labels_ : ndarray of shape (n,)
        ``flagged_`` as 0/1.
    """

    def __init__(self, expected_poison_rate: float = 0.33, eps_multiplier: float = 1.5) -> None:
        self.expected_poison_rate = expected_poison_rate
        self.eps_multiplier = eps_multiplier

    def fit(self, X: np.ndarray, y: Any = None) -> SpectralSignatures:
        if not 0 < self.expected_poison_rate <= 1:
            raise ValueError(
                f"expected_poison_rate must lie in (0, 1], got {self.expected_poison_rate}"
            )
        if not self.eps_multiplier > 0:
            raise ValueError(f"eps_multiplier must be > 0, got {self.eps_multiplier}")
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"expected features of shape (n >= 2, d), got shape {x.shape}")
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        self.direction_ = vt[0]
        self.score_ = (centred @ self.direction_) ** 2
        q = float(np.clip(1.0 - self.eps_multiplier * self.expected_poison_rate, 0.0, 1.0))
        self.threshold_ = float(np.quantile(self.score_, q))
        self.flagged_ = self.score_ > self.threshold_
        self.labels_ = self.flagged_.astype(int)
        return self
