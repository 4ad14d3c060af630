"""A verdict on the held-out images too: an audit judges every file of the user's dataset.

The model of an audit is trained on the training split and its accuracy is measured on the
held-out test split (``dataset.test_fraction``), so the test images have no heatmaps and the
class test and the per-image flags (:func:`poisonscan.verdicts.audit`) cover the training
images only. A poisoned image that fell into the test split would then appear in neither
``suspicious.csv`` nor ``clean_list.txt``.

Every test image is judged here with the evidence that needs no heatmap: in a class whose
verdict is ``poisoned``, the recovered trigger (:class:`~poisonscan.verdicts.trigger.Trigger`)
is searched in the image's pixels, as the training images' trigger signals are
(:func:`~poisonscan.verdicts.trigger.trigger_scores`: pasted and added), against the same
reference (the training images of the other classes); the two p-values are combined by
Bonferroni and flagged at the false-discovery rate ``verdicts.sample_alpha`` among the
class's test images (Benjamini-Hochberg). In every other class nothing is flagged, as in the
training split: the class test found no trigger there. What this does not see: a test image
whose trigger differs from the one recovered from the training images (the training images'
relevance signal has no counterpart here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from poisonscan.verdicts._stats import benjamini_hochberg
from poisonscan.verdicts.audit import AuditResult, ClassData
from poisonscan.verdicts.concentration import empirical_p
from poisonscan.verdicts.trigger import trigger_scores

__all__ = ["HeldOut", "judge_held_out"]


@dataclass
class HeldOut:
    """The flags on the test images (arrays of shape (n_test,)).

    Attributes
    ----------
    flagged : ndarray of bool
    score : ndarray of float
        The pasted trigger score (NaN outside poisoned classes).
    p, q : ndarray of float
        Combined p-value and its Benjamini-Hochberg q within the class (NaN outside poisoned
        classes).
    signal : ndarray of object
        ``trigger``, ``trigger_added``, both joined by ``+``, ``combined`` or ``""``.
    """

    flagged: np.ndarray
    score: np.ndarray
    p: np.ndarray
    q: np.ndarray
    signal: np.ndarray


def judge_held_out(
    result: AuditResult,
    classes: Mapping[int, ClassData],
    x_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    sample_alpha: float,
) -> HeldOut:
    """Flag the test images of the poisoned classes that carry the recovered trigger.

    Parameters
    ----------
    result : AuditResult
        The audit of the training images (its verdicts and triggers).
    classes : mapping of class id to ClassData
        Every class of the training set (their ``index`` into ``x_train``).
    x_train : ndarray of shape (n_train, H, W, 3), uint8
    x_test : ndarray of shape (n_test, H, W, 3), uint8
    y_test : ndarray of shape (n_test,)
    sample_alpha : float
        False-discovery rate of the flags within a class.

    Returns
    -------
    HeldOut
    """
    n = len(y_test)
    out = HeldOut(np.zeros(n, dtype=bool), np.full(n, math.nan), np.full(n, math.nan),
                  np.full(n, math.nan), np.full(n, "", dtype=object))  # fmt: skip
    for c in result.poisoned_classes:
        trig = result.triggers.get(c)
        own = np.flatnonzero(np.asarray(y_test) == c)
        if trig is None or not len(own):
            continue
        ref_index = np.concatenate([classes[o].index for o in classes if o != c])
        ref = trigger_scores(x_train[ref_index], trig)
        mine = trigger_scores(x_test[own], trig)
        pvals = [empirical_p(mine[0], ref[0]), empirical_p(mine[1], ref[1])]
        combined = np.minimum(2 * np.min(pvals, axis=0), 1.0)
        q = benjamini_hochberg(combined)
        flagged = q <= sample_alpha
        signal = np.full(len(own), "", dtype=object)
        for name, pv in zip(("trigger", "trigger_added"), pvals, strict=True):
            hit = flagged & (benjamini_hochberg(pv) <= sample_alpha)
            signal[hit] = [f"{s}+{name}" if s else name for s in signal[hit]]
        signal[flagged & (signal == "")] = "combined"
        out.flagged[own], out.score[own], out.p[own], out.q[own] = flagged, mine[0], combined, q
        out.signal[own] = signal
    return out
