"""Calibration across classes and false-discovery control: robust z, tail p-values, BH."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import false_discovery_control, norm

__all__ = ["MAD_TO_SD", "benjamini_hochberg", "robust_z", "upper_tail_p"]

# 1 / Phi^-1(3/4): the MAD of a normal sample times this estimates its standard deviation.
MAD_TO_SD = 1.4826


def robust_z(
    values: np.ndarray, reference: np.ndarray | None = None, floor: float = 0.0
) -> np.ndarray:
    """``(v - median) / max(1.4826 MAD, floor)`` of ``values`` against ``reference``.

    The anomaly index of SCAn, Beatrix and AGPD (threshold e^2 there). NaN values are
    ignored in the median and MAD and stay NaN. ``floor`` keeps the scale from collapsing
    when more than half the reference is equal (a MAD of 0): pass the sampling noise of
    the values (e.g. a binomial standard error). With a MAD and a floor of 0 the mean
    absolute deviation is used, and 1 if that is 0 too, so that the index stays finite.

    Parameters
    ----------
    values : ndarray of shape (n,)
    reference : ndarray of shape (m,), optional
        Default: ``values`` themselves.
    floor : float, default 0

    Returns
    -------
    ndarray of shape (n,), signed (positive = above the median)
    """
    v = np.asarray(values, dtype=np.float64)
    ref = v if reference is None else np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.full(v.shape, math.nan)
    med = float(np.median(ref))
    spread = max(MAD_TO_SD * float(np.median(np.abs(ref - med))), float(floor))
    if spread <= 0:
        spread = float(np.mean(np.abs(ref - med))) * math.sqrt(math.pi / 2) or 1.0
    return (v - med) / spread


def upper_tail_p(z: np.ndarray) -> np.ndarray:
    """One-sided p-values ``P(Z >= z)`` of standard-normal scores (NaN stays NaN)."""
    return norm.sf(np.asarray(z, dtype=np.float64))


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values) of ``p``; NaN entries stay NaN.

    Rejecting every hypothesis with ``q <= alpha`` controls the false discovery rate at
    ``alpha`` for independent (or positively dependent) tests
    (``scipy.stats.false_discovery_control``).

    Parameters
    ----------
    p : ndarray of shape (n,)

    Returns
    -------
    ndarray of shape (n,), in [0, 1]
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, math.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
    return q
