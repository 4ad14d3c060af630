"""The result type of every detector, its file, and the inputs a detector reads."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from poisonscan.explain.store import (
    check_heatmaps,
    class_group_path,
    read_group_array,
    store_classes,
)
from poisonscan.storage import read_dataset, read_npz, write_npz

__all__ = ["Detection", "DetectorInputs", "read_detection"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass
class Detection:
    """What a detector found in one class.

    Attributes
    ----------
    labels : ndarray of shape (n,)
        Cluster labels (a detector that does not cluster: the flags as 0/1).
    flagged : ndarray of shape (n,), bool
        True = suspected poison.
    score : ndarray of shape (n,), float64
        Continuous poison score, higher = more suspicious (for the AUROC).
    k : int or None
        Number of clusters used (None: not a clustering).
    rule : str
        What turned the result into flags (a decision rule, a threshold).
    score_name : str
        How ``score`` is made.
    extras : dict of str to array-like
        Method-specific arrays stored beside the result (e.g. SpRAy's eigenvalues).
    """

    labels: np.ndarray
    flagged: np.ndarray
    score: np.ndarray
    k: int | None
    rule: str
    score_name: str
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        self.flagged = np.asarray(self.flagged, dtype=bool)
        self.score = np.asarray(self.score, dtype=np.float64)
        if not self.labels.shape == self.flagged.shape == self.score.shape:
            raise ValueError(
                f"shapes differ: labels {self.labels.shape}, flagged {self.flagged.shape}, "
                f"score {self.score.shape}"
            )

    def save(self, path: PathLike, method: str) -> None:
        """Write the result of ``method`` as ``.npz`` (atomically); see :func:`read_detection`."""
        write_npz(path, labels=self.labels, flagged=self.flagged, score=self.score,
                  k=np.int64(-1 if self.k is None else self.k), decision_rule=np.str_(self.rule),
                  method=np.str_(method), score_name=np.str_(self.score_name),
                  **self.extras)  # fmt: skip
        sizes = np.unique(self.labels, return_counts=True)[1].tolist()
        log.info("%s: k=%s, cluster sizes %s, rule %s flags %d of %d", method, self.k, sizes,
                 self.rule, int(self.flagged.sum()), self.flagged.size)  # fmt: skip


def read_detection(path: PathLike) -> dict[str, Any]:
    """Read a file of :meth:`Detection.save`.

    Returns
    -------
    dict
        ``labels``, ``flagged``, ``score``, ``k`` (None for a method that does not
        cluster), ``decision_rule``, ``method``, ``score_name`` (``str``) and the
        method's extras.
    """
    out: dict[str, Any] = read_npz(path)
    out["k"] = None if int(out["k"]) < 0 else int(out["k"])
    for name in ("decision_rule", "method", "score_name"):
        if name in out:
            out[name] = str(out[name])
    return out


@dataclass
class DetectorInputs:
    """What a detector may read about the analysed class; each part is loaded on first use.

    Parameters
    ----------
    group : path
        The class group of the explanation store (``explain.zarr/<class id>``).
    distance_store : path, optional
        The class's heatmap distance store (detectors on a distance).
    dataset : path, optional
        The training set (detectors on images).
    """

    group: PathLike
    distance_store: PathLike | None = None
    dataset: PathLike | None = None

    def _array(self, name: str) -> np.ndarray:
        return read_group_array(self.group, name)

    @cached_property
    def heatmaps(self) -> np.ndarray:
        """ndarray of shape (n, h, w)."""
        return self._array("heatmaps")

    @cached_property
    def activations(self) -> np.ndarray:
        """ndarray of shape (n, d): the model's penultimate activations."""
        return self._array("activations")

    @cached_property
    def index(self) -> np.ndarray:
        """ndarray of shape (n,): positions of the class's samples in the training set."""
        return self._array("index")

    @cached_property
    def distances(self) -> np.ndarray:
        """ndarray of shape (n, n): the heatmap distance matrix (+inf = pair not evaluated).

        The store must have been computed from this class's heatmaps (its
        ``heatmaps_sha256``, :func:`~poisonscan.explain.store.check_heatmaps`).
        """
        from poisonscan.distances import read_distance_store

        if self.distance_store is None:
            raise ValueError("this detector needs a distance store, none was given")
        d = read_distance_store(str(self.distance_store))
        check_heatmaps(self.distance_store, self.group)
        return d

    @cached_property
    def images(self) -> np.ndarray:
        """ndarray of shape (n, H, W, 3), uint8: the class's training images."""
        if self.dataset is None:
            raise ValueError("this detector needs the training set, none was given")
        return read_dataset(self.dataset).x_train[self.index]

    def other_classes_activations(self) -> list[np.ndarray]:
        """Activations of every other class group of the same store (with more than one sample)."""
        group = Path(str(self.group))
        store = group.parent
        out = []
        for cls in store_classes(store):
            if str(cls) == group.name:
                continue
            act = read_group_array(class_group_path(store, cls), "activations")
            if len(act) > 1:
                out.append(act)
        return out
