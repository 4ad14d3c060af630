"""Attribution (n, C, H, W) -> heatmap (n, H', W'): channel reduction, normalisation, pooling.

Steps, in order:

1. channel reduction (:data:`REDUCTIONS`): ``sum`` (default, signed relevance),
   ``positive`` (sum of the positive parts) or ``abs`` (sum of absolute values,
   the usual choice for gradients);
2. normalisation (:data:`NORMALIZATIONS`): ``minmax_mass`` (min-max to [0, 1],
   then divide by the mass: the reference study), ``positive_mass`` (positive
   part, then divide by the mass) or ``none``; a map without mass stays zero;
3. optional sum-pooling by an integer factor to a coarser grid (mass is kept).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["NORMALIZATIONS", "REDUCTIONS", "normalize_heatmaps", "sum_pool", "to_heatmaps"]

REDUCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sum": lambda r: r.sum(axis=1),
    "positive": lambda r: np.maximum(r, 0.0).sum(axis=1),
    "abs": lambda r: np.abs(r).sum(axis=1),
}


def _minmax(h: np.ndarray) -> np.ndarray:
    lo = h.min(axis=(1, 2), keepdims=True)
    span = h.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (h - lo) / np.where(span > 0, span, 1), 0.0)


def _by_mass(h: np.ndarray) -> np.ndarray:
    mass = h.sum(axis=(1, 2), keepdims=True)
    return np.where(mass > 0, h / np.where(mass > 0, mass, 1), 0.0)


NORMALIZATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    # the reference study: min-max to [0, 1], then divide by the mass
    "minmax_mass": lambda h: _by_mass(_minmax(h)),
    # keep the positive evidence only, then divide by the mass
    "positive_mass": lambda h: _by_mass(np.maximum(h, 0.0)),
    "none": lambda h: h,
}


def normalize_heatmaps(heatmaps: np.ndarray, mode: str) -> np.ndarray:
    """Normalise channel-reduced heatmaps (n, H, W); returns float32.

    Raises
    ------
    ValueError
        If ``mode`` is not in :data:`NORMALIZATIONS`.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(
            f"unknown heatmap normalization {mode!r}; available: {sorted(NORMALIZATIONS)}"
        )
    return NORMALIZATIONS[mode](np.asarray(heatmaps, dtype=np.float64)).astype(np.float32)


def sum_pool(heatmaps: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor`` x ``factor`` blocks of heatmaps (n, H, W) -> (n, H / factor, W / factor).

    Raises
    ------
    ValueError
        If ``factor`` < 1 or does not divide H and W.
    """
    n, h, w = heatmaps.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"pool factor {factor} must be >= 1 and divide the heatmap size {h}x{w}")
    if factor == 1:
        return heatmaps
    return heatmaps.reshape(n, h // factor, factor, w // factor, factor).sum(axis=(2, 4))


def to_heatmaps(
    attribution: np.ndarray,
    reduction: str = "sum",
    normalization: str = "positive_mass",
    pool: int = 1,
) -> np.ndarray:
    """Turn an attribution (n, C, H, W) into float32 heatmaps (n, H / pool, W / pool).

    Raises
    ------
    ValueError
        If ``reduction`` or ``normalization`` is unknown, or ``pool`` does not fit.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"unknown channel reduction {reduction!r}; available: {sorted(REDUCTIONS)}"
        )
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"expected an attribution of shape (n, C, H, W), got {a.shape}")
    h = normalize_heatmaps(REDUCTIONS[reduction](a), normalization)
    return sum_pool(h.astype(np.float64), pool).astype(np.float32)
