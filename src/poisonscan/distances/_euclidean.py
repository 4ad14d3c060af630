"""Euclidean distances between flattened heatmaps (the Heatmap Clustering baseline)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist, squareform

__all__ = ["euclidean_distances"]


def euclidean_distances(heatmaps: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances between flattened heatmaps.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, H, W)
        Heatmaps, used as given (no renormalisation).

    Raises
    ------
    ValueError
        If a heatmap holds NaN or infinite values (naming the rows). All-zero
        heatmaps are kept: they are at distance ``||h||`` from every other.

    Returns
    -------
    ndarray of shape (n, n), float64
        ``D[i, j] = ||heatmaps[i] - heatmaps[j]||_2``; exactly symmetric with a
        zero diagonal.
    """
    x = np.asarray(heatmaps, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"expected heatmaps of shape (n, H, W), got shape {x.shape}")
    x = x.reshape(x.shape[0], -1)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:  # a NaN would spread silently through the distances and the clustering
        raise ValueError(
            f"{bad.size} heatmap(s) contain NaN or infinite values, e.g. rows {bad[:5].tolist()}"
        )
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], x.shape[0]))
    return squareform(pdist(x, metric="euclidean"))
