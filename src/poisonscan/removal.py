"""Removal of flagged samples from a training set, and the table that compares the retrained models.

A defence is judged by what removal does to the attack: retrain on the
training set minus the flagged samples and compare clean accuracy and attack
success rate (ASR) with the undefended model and with a perfect filter (the
training set minus exactly the poison), the measure Armory/ART users report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan.storage import ImageDataset

__all__ = ["REMOVAL_COLUMNS", "filter_training_set", "removal_mask", "removal_row"]

REMOVAL_COLUMNS: tuple[str, ...] = (
    "filter", "n_train", "n_removed", "n_poison", "n_poison_removed", "n_clean_removed",
    "n_poison_left", "clean_acc", "asr",
)  # fmt: skip


def removal_mask(n_train: int, index: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """Training-set mask of the flagged samples of one class.

    Parameters
    ----------
    n_train : int
        Size of the training set.
    index : ndarray of shape (m,), int
        Positions of the class's samples in the training set.
    flagged : ndarray of shape (m,), bool
        The detector's flags for those samples.

    Returns
    -------
    ndarray of shape (n_train,), bool
    """
    index = np.asarray(index, dtype=np.int64)
    flagged = np.asarray(flagged, dtype=bool)
    if index.shape != flagged.shape:
        raise ValueError(f"shapes differ: index {index.shape}, flagged {flagged.shape}")
    if index.size and (index.min() < 0 or index.max() >= n_train):
        raise ValueError(f"index out of range for a training set of {n_train} samples")
    mask = np.zeros(n_train, dtype=bool)
    mask[index[flagged]] = True
    return mask


def filter_training_set(ds: ImageDataset, remove: np.ndarray) -> ImageDataset:
    """``ds`` without the training samples in ``remove``; test data unchanged.

    Every extra array aligned with the training set (first dimension
    ``n_train`` and a name not starting with ``x_test``/``y_test``, e.g.
    ``poison_mask``, ``y_train_original``) is filtered alike. ``meta`` gains
    ``removed``: the number of samples removed.
    """
    remove = np.asarray(remove, dtype=bool)
    n = len(ds.y_train)
    if remove.shape != (n,):
        raise ValueError(f"remove must have shape ({n},), got {remove.shape}")
    keep = ~remove
    extra = {
        name: arr[keep]
        if np.ndim(arr) >= 1 and len(arr) == n and not name.startswith(("x_test", "y_test"))
        else arr
        for name, arr in ds.extra.items()
    }
    return dataclasses.replace(
        ds,
        x_train=ds.x_train[keep],
        y_train=ds.y_train[keep],
        extra=extra,
        meta={**ds.meta, "removed": int(remove.sum())},
    )


def removal_row(
    name: str, remove: np.ndarray, poison: np.ndarray, metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """One row of the removal table (see :data:`REMOVAL_COLUMNS`).

    Parameters
    ----------
    name : str
        Filter name (a method, ``"perfect"`` or ``"none"``).
    remove, poison : ndarray of shape (n_train,), bool
    metrics : mapping
        Metrics of the model trained without the removed samples
        (``clean_acc``, ``asr``).
    """
    remove = np.asarray(remove, dtype=bool)
    poison = np.asarray(poison, dtype=bool)
    return {
        "filter": name,
        "n_train": int(remove.size),
        "n_removed": int(remove.sum()),
        "n_poison": int(poison.sum()),
        "n_poison_removed": int((remove & poison).sum()),
        "n_clean_removed": int((remove & ~poison).sum()),
        "n_poison_left": int((~remove & poison).sum()),
        "clean_acc": float(metrics.get("clean_acc", math.nan)),
        "asr": float(metrics.get("asr", math.nan)),
    }
