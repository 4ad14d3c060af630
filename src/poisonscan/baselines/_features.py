"""Checked input of the whole-dataset baselines (SCAn, SPECTRE): features with class labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["labelled_features"]


def labelled_features(
    X: np.ndarray | Sequence[np.ndarray], y: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of shape (n, d) with their class labels, from either input form.

    Parameters
    ----------
    X : ndarray of shape (n, d), or sequence of ndarray of shape (n_c, d)
        Features with labels ``y``; or, with ``y=None``, one array per class
        (class ``c`` is position ``c``; samples keep the order of the
        concatenation).
    y : ndarray of shape (n,) or None

    Returns
    -------
    x : ndarray of shape (n, d), float64
    y : ndarray of shape (n,)
    classes : ndarray of shape (n_classes,)
        The sorted distinct labels.

    Raises
    ------
    ValueError
        Wrong shapes, a length mismatch, an empty class array or non-finite features.
    """
    if y is None:
        if isinstance(X, np.ndarray) or not isinstance(X, Sequence) or len(X) == 0:
            raise ValueError(
                "without labels y, X must be a non-empty sequence of per-class arrays (n_c, d)"
            )
        parts = [np.asarray(a, dtype=np.float64) for a in X]
        for c, a in enumerate(parts):
            if a.ndim != 2 or a.shape[0] == 0:
                raise ValueError(
                    f"class {c}: expected features of shape (n_c >= 1, d), got {a.shape}"
                )
            if a.shape[1] != parts[0].shape[1]:
                raise ValueError(
                    f"class {c} has {a.shape[1]} feature dimensions, "
                    f"class 0 has {parts[0].shape[1]}"
                )
        x = np.vstack(parts)
        labels = np.repeat(np.arange(len(parts)), [len(a) for a in parts])
    else:
        x = np.asarray(X, dtype=np.float64)
        labels = np.asarray(y)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"expected features of shape (n >= 1, d), got shape {x.shape}")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},) like X's rows, got {labels.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the features contain NaN or infinite values")
    return x, labels, np.unique(labels)
