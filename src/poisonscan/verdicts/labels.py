"""Label disagreement: training images whose label the trained model contradicts.

Dirty-label poison that the model did not learn is still poison: it carries the
target label but looks like its source class, so the model predicts the source.
Per class, the share of its training images predicted as another class is
compared with the other classes (robust z, as the heatmap test); inside a class
flagged this way, every contradicted image is flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from poisonscan.verdicts._stats import benjamini_hochberg, robust_z, upper_tail_p

__all__ = ["LabelDisagreement", "label_disagreement"]


@dataclass(frozen=True)
class LabelDisagreement:
    """Per class: the share contradicted, its robust z over classes, and the verdicts.

    Attributes
    ----------
    classes : ndarray of shape (c,)
    n : ndarray of shape (c,)
        Training images per class.
    contradicted : ndarray of shape (c,)
        Images the model predicts as another class.
    main_other : ndarray of shape (c,)
        The class most of them are predicted as (-1 if none).
    share : ndarray of shape (c,)
    z, p, q : ndarray of shape (c,)
        Robust z of ``share`` over the classes, its one-sided normal p-value and the
        Benjamini-Hochberg q-value over classes.
    flagged : ndarray of shape (c,), bool
        ``z > z_threshold`` and ``q <= alpha``.
    """

    classes: np.ndarray
    n: np.ndarray
    contradicted: np.ndarray
    main_other: np.ndarray
    share: np.ndarray
    z: np.ndarray
    p: np.ndarray
    q: np.ndarray
    flagged: np.ndarray


def label_disagreement(
    labels: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    classes: Sequence[int],
    z_threshold: float = float(np.exp(2)),
    alpha: float = 0.05,
) -> LabelDisagreement:
    """Compare every class's share of contradicted labels with the other classes'.

    Parameters
    ----------
    labels, predictions : sequences of ndarray of shape (n_c,)
        Per class, the training labels and the model's predictions.
    classes : sequence of int
    z_threshold : float, default e^2
        Robust z above which a class is flagged (the threshold of SCAn, Beatrix, AGPD).
    alpha : float, default 0.05
        Largest q-value of a flagged class.

    Returns
    -------
    LabelDisagreement
    """
    if not len(labels) == len(predictions) == len(classes):
        raise ValueError(
            f"{len(labels)} label arrays, {len(predictions)} prediction arrays and "
            f"{len(classes)} classes: one of each per class"
        )
    n = np.array([len(y) for y in labels])
    contradicted = np.array([int(np.sum(p != y)) for y, p in zip(labels, predictions, strict=True)])
    main = []
    for y, p in zip(labels, predictions, strict=True):
        other = p[p != y]
        main.append(int(np.bincount(other).argmax()) if other.size else -1)
    share = contradicted / np.maximum(n, 1)
    z = robust_z(share)
    p = upper_tail_p(z)
    q = benjamini_hochberg(p)
    return LabelDisagreement(
        np.asarray(classes), n, contradicted, np.array(main), share, z, p, q,
        (z > z_threshold) & (q <= alpha),
    )  # fmt: skip
