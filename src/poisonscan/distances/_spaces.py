"""Heatmaps as metric measure spaces: measure, support, coordinates and costs.

A heatmap of shape (H, W) becomes a finite metric measure space in three steps:

1. **measure**: the non-negative part of the relevance, normalised to sum 1. An
   all-zero (or all-negative) heatmap carries no relevance; it is replaced by the
   uniform measure on the grid and a warning is logged (:func:`as_measure`).
2. **support**: optional sum-pooling by ``pool`` in both directions, then either
   every cell (``mass=None``) or the smallest set of most relevant cells holding at
   least the share ``mass`` of the relevance.
3. **metric**: the Euclidean (or squared Euclidean) distance between cell centres,
   scaled so that the two opposite corner cells of the pooled grid are at
   distance 1. The scale therefore does not depend on the support, and
   ``C_sqeuclidean == C_euclidean ** 2``.

The coordinates returned by :func:`heatmap_support` already carry that scale,
so ``cost = pdist(coords)`` (or its square) is the normalised cost.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
from scipy.spatial.distance import pdist, squareform

__all__ = [
    "METRICS",
    "MetricMeasureSpace",
    "as_measure",
    "check_space_args",
    "heatmap_support",
    "heatmap_to_mm_space",
]

logger = logging.getLogger("poisonscan.distances")

METRICS = ("euclidean", "sqeuclidean")


class MetricMeasureSpace(NamedTuple):
    """A finite metric measure space: a cost matrix and a probability vector.

    Attributes
    ----------
    cost : ndarray of shape (m, m), float64
        Normalised pairwise distances of the support cells, in [0, 1].
    weights : ndarray of shape (m,), float64
        Relevance on the support cells, summing to 1.
    coords : ndarray of shape (m, 2), float64
        Scaled cell centres: ``cost`` is their Euclidean distance matrix (its
        square for the squared-Euclidean metric).
    """

    cost: np.ndarray
    weights: np.ndarray
    coords: np.ndarray


def check_space_args(pool: int, mass: float | None, metric: str) -> None:
    """Raise ValueError for an invalid pooling factor, mass share or metric."""
    if isinstance(pool, bool) or not isinstance(pool, int | np.integer) or pool < 1:
        raise ValueError(f"pool must be a positive integer, got {pool!r}")
    if mass is not None and not (0.0 < float(mass) <= 1.0):
        raise ValueError(f"mass must be None or in (0, 1], got {mass!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def as_measure(heatmap: np.ndarray) -> np.ndarray:
    """Non-negative part of ``heatmap`` normalised to sum 1 (float64).

    An all-zero (or all-negative) heatmap carries no relevance; it is replaced by
    the uniform measure and a warning is logged.

    Parameters
    ----------
    heatmap : ndarray of shape (H, W)

    Returns
    -------
    ndarray of shape (H, W), float64, summing to 1

    Raises
    ------
    ValueError
        If the shape is not 2-D or a value is NaN or infinite.
    """
    return _measure(heatmap)[0]


def _measure(heatmap: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(measure, empty)``: see :func:`as_measure`; ``empty`` flags the uniform fallback."""
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"expected one heatmap of shape (H, W), got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("heatmap contains NaN or infinite values")
    h = np.clip(h, 0.0, None)
    total = h.sum()
    if total <= 0.0:
        logger.warning("heatmap has no positive relevance; using the uniform measure instead")
        return np.full(h.shape, 1.0 / h.size), True
    return h / total, False


def heatmap_support(
    heatmap: np.ndarray, pool: int = 1, mass: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Support cells of a heatmap: scaled centres and normalised weights.

    Parameters
    ----------
    heatmap : ndarray of shape (H, W)
        Relevance map.
    pool : int, default 1
        Sum-pooling factor; H and W must be divisible by it.
    mass : float in (0, 1] or None, default None
        None keeps every cell. Otherwise the support is the smallest set of the
        most relevant cells whose share of the mass is at least ``mass``
        (``mass=1`` drops the zero cells). A heatmap without positive relevance
        always gets the uniform measure on every cell (no cell is more relevant).

    Returns
    -------
    coords : ndarray of shape (m, 2), float64
        Cell centres (row, column) divided by the distance between the centres of
        two opposite corner cells of the pooled grid (0 for a 1x1 grid).
    weights : ndarray of shape (m,), float64
        Relevance of the cells, summing to 1; cells in row-major order.
    """
    check_space_args(pool, mass, "euclidean")
    h, empty = _measure(heatmap)
    n_rows, n_cols = h.shape
    if n_rows % pool or n_cols % pool:
        raise ValueError(
            f"pool={pool} does not divide the heatmap shape {h.shape}; "
            "choose a pooling factor that divides both H and W"
        )
    hp, wp = n_rows // pool, n_cols // pool
    w = h.reshape(hp, pool, wp, pool).sum(axis=(1, 3)).ravel()
    if mass is None or empty:
        support = np.arange(w.size)
    else:
        order = np.argsort(-w, kind="stable")
        cum = np.cumsum(w[order])
        k = min(int(np.searchsorted(cum, mass * cum[-1], side="left")) + 1, w.size)
        support = np.sort(order[:k])
    rows, cols = np.divmod(support, wp)
    diag = math.hypot(hp - 1, wp - 1)
    scale = 1.0 / diag if diag > 0 else 0.0
    coords = np.column_stack([rows * scale, cols * scale]).astype(np.float64)
    p = w[support]
    return coords, p / p.sum()


def heatmap_to_mm_space(
    heatmap: np.ndarray,
    pool: int = 1,
    mass: float | None = None,
    metric: str = "euclidean",
) -> MetricMeasureSpace:
    """Turn one heatmap into a metric measure space ``(C, p)``.

    See the module docstring for the three steps; the cost lies in [0, 1], on a
    scale that does not depend on the support (the two opposite corner cells of
    the pooled grid are at distance 1).

    Parameters
    ----------
    heatmap : ndarray of shape (H, W)
        Relevance map.
    pool : int, default 1
        Sum-pooling factor; H and W must be divisible by it.
    mass : float in (0, 1] or None, default None
        Share of the mass kept as support (None: every cell).
    metric : {"euclidean", "sqeuclidean"}, default "euclidean"
        Ground metric between cell centres.

    Returns
    -------
    MetricMeasureSpace
        ``cost`` of shape (m, m), ``weights`` of shape (m,) and ``coords`` of shape
        (m, 2), m <= (H/pool)*(W/pool), cells in row-major order of the pooled grid.
    """
    check_space_args(pool, mass, metric)
    coords, p = heatmap_support(heatmap, pool, mass)
    if coords.shape[0] < 2:
        cost = np.zeros((coords.shape[0],) * 2)
    else:
        cost = squareform(pdist(coords, metric=metric))
    return MetricMeasureSpace(cost=cost, weights=p, coords=coords)
