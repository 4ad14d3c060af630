"""The class test: is a class's relevance concentrated in a small window more often than the
other classes' is?

A learned backdoor trigger takes the relevance of the images that carry it: their
heatmaps put a large share of the relevance into a window the size of the trigger,
wherever it sits (a max over all window positions: translation invariant, like the
GW comparison of heatmaps). Clean images spread it over the object.

Per image, :func:`peak_shares` gives the share of its positive relevance inside its
best ``size`` x ``size`` window. Per class, :func:`class_test`

1. sets the *extreme* threshold at a high quantile (``quantile``, default 0.999) of
   the peak shares of all **other** classes (leave-one-class-out), so a class is
   compared with the rest of the dataset, not with itself;
2. counts **groups** with an extreme image, not images: near-duplicates (GTSRB's
   tracks of ~30 frames of one sign, a user's bursts and copies) share their heatmaps,
   so one concentrated sign would otherwise count 30 times;
3. tests that count against the rate at which the other classes' groups have an
   extreme image (one-sided exact binomial test, ``scipy.stats.binomtest``), takes
   Benjamini-Hochberg q-values over the classes, and the robust z (median/MAD over
   the classes, :func:`~poisonscan.verdicts._stats.robust_z`) of the share of the
   class's groups that are extreme;
4. calls a class ``poisoned`` when ``q <= alpha`` and ``z > z_threshold`` (default
   e^2, SCAn's and Beatrix's threshold), ``too_small`` when it has fewer than
   ``min_groups`` groups, else ``clean``.

The candidates measured before this one (on real GTSRB, RESULTS.md; ``python -m
poisonscan.bench classtest``): SpRAy's eigengap and the separation of its flagged
group (the whole-dataset scan's ranking then), the second eigenvalue of the kNN graph with
near-duplicate edges removed, cluster cohesion, and the excess and coherence of kNN
outliers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from poisonscan.verdicts._stats import benjamini_hochberg, robust_z
from poisonscan.verdicts.trigger import window_mass

__all__ = ["ClassTest", "class_test", "empirical_p", "peak_shares"]


def peak_shares(heatmaps: np.ndarray, size: int) -> np.ndarray:
    """Share of each heatmap's positive relevance inside its best ``size`` x ``size`` window.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, H, W)

    Returns
    -------
    ndarray of shape (n,), in [0, 1] (0 for a heatmap without positive relevance)
    """
    h = np.clip(np.asarray(heatmaps, dtype=np.float64), 0.0, None)
    if len(h) == 0:
        return np.zeros(0)
    total = h.reshape(len(h), -1).sum(axis=1)
    best = window_mass(h, size).reshape(len(h), -1).max(axis=1)
    return np.divide(best, total, out=np.zeros_like(best), where=total > 0)


def empirical_p(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """One-sided empirical p-values ``(1 + #{reference >= v}) / (1 + len(reference))``.

    Never 0, valid for any distribution: the reference is a sample from the null.
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    v = np.asarray(values, dtype=np.float64)
    above = ref.size - np.searchsorted(ref, v, side="left")
    return (1.0 + above) / (1.0 + ref.size)


@dataclass(frozen=True)
class ClassTest:
    """The class test's result, one entry per class.

    Attributes
    ----------
    classes, n, n_groups : ndarray of shape (c,)
        Class ids, images and near-duplicate groups per class.
    threshold : ndarray of shape (c,)
        The extreme peak share of each class (a quantile of the other classes').
    extreme_groups : ndarray of shape (c,)
        Groups with at least one image above the threshold.
    statistic : ndarray of shape (c,)
        ``extreme_groups / n_groups``.
    reference_rate : ndarray of shape (c,)
        The same share over the other classes' groups.
    z, p, q : ndarray of shape (c,)
        Robust z of ``statistic`` over the classes; the binomial p-value of the count
        against ``reference_rate``; its Benjamini-Hochberg q-value over the classes.
    verdict : ndarray of shape (c,), str
        ``poisoned``, ``clean`` or ``too_small``.
    """

    classes: np.ndarray
    n: np.ndarray
    n_groups: np.ndarray
    threshold: np.ndarray
    extreme_groups: np.ndarray
    statistic: np.ndarray
    reference_rate: np.ndarray
    z: np.ndarray
    p: np.ndarray
    q: np.ndarray
    verdict: np.ndarray

    @property
    def poisoned(self) -> np.ndarray:
        """ndarray of shape (c,), bool."""
        return self.verdict == "poisoned"


def _extreme_groups(shares: np.ndarray, groups: np.ndarray, threshold: float) -> tuple[int, int]:
    """(groups with an image above ``threshold``, groups)."""
    g = np.asarray(groups)
    if g.size == 0:
        return 0, 0
    _, inverse = np.unique(g, return_inverse=True)
    hit = np.zeros(inverse.max() + 1, dtype=bool)
    np.logical_or.at(hit, inverse, shares > threshold)
    return int(hit.sum()), int(hit.size)


def class_test(
    shares: Mapping[int, np.ndarray],
    groups: Mapping[int, np.ndarray],
    quantile: float = 0.999,
    alpha: float = 0.05,
    z_threshold: float = math.exp(2),
    min_groups: int = 10,
) -> ClassTest:
    """Test every class's relevance concentration against the other classes'.

    Parameters
    ----------
    shares : mapping of class id to ndarray of shape (n_c,)
        Peak shares (:func:`peak_shares`) of the class's images.
    groups : mapping of class id to ndarray of shape (n_c,)
        Near-duplicate group of each image (unique ids per image when unknown).
    quantile : float, default 0.999
        Of the other classes' peak shares: the extreme threshold. (0.999: about one
        image in a thousand of a clean dataset is extreme, so a class of ~100 groups
        expects none; measured alternatives in RESULTS.md.)
    alpha : float, default 0.05
        Largest q-value of a poisoned class.
    z_threshold : float, default e^2
        Smallest robust z of a poisoned class.
    min_groups : int, default 10
        Classes with fewer groups are ``too_small``: one extreme group is already a
        tenth of such a class, so its share of extreme groups says little.

    Returns
    -------
    ClassTest
    """
    if not 0.5 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0.5, 1), got {quantile}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    classes = np.array(sorted(shares))
    if set(groups) != set(shares):
        raise ValueError(
            f"shares and groups must name the same classes, got {sorted(shares)} and "
            f"{sorted(groups)}"
        )
    if classes.size < 3:
        raise ValueError(
            f"the class test compares a class with the others: it needs at least 3 classes, "
            f"got {classes.size} ({classes.tolist()})"
        )
    for c in classes:
        if len(shares[c]) != len(groups[c]):
            raise ValueError(
                f"class {c}: {len(shares[c])} peak shares but {len(groups[c])} group ids"
            )
    rows = []
    for c in classes:
        others = np.concatenate([shares[o] for o in classes if o != c])
        threshold = float(np.quantile(others, quantile)) if others.size else math.inf
        hit, n_groups = _extreme_groups(shares[c], groups[c], threshold)
        ref_hit = ref_groups = 0
        for o in classes:
            if o != c:
                h, g = _extreme_groups(shares[o], groups[o], threshold)
                ref_hit, ref_groups = ref_hit + h, ref_groups + g
        # one pseudo-group in the reference, so that a reference rate of 0 stays testable
        rate = (ref_hit + 1) / (ref_groups + 1)
        p = (
            binomtest(hit, n_groups, min(rate, 1.0), alternative="greater").pvalue
            if n_groups
            else 1.0
        )
        rows.append((len(shares[c]), n_groups, threshold, hit, rate, p))
    n, n_groups, threshold, hit, rate, p = (np.array(col) for col in zip(*rows, strict=True))
    statistic = hit / np.maximum(n_groups, 1)
    small = n_groups < min_groups
    # sampling noise of a class's share at the typical class size: the spread between
    # classes cannot be smaller (and the MAD is 0 when most classes have no extreme group)
    overall = float(hit[~small].sum() / max(n_groups[~small].sum(), 1))
    typical = float(np.median(n_groups[~small])) if (~small).any() else 1.0
    floor = math.sqrt(max(overall * (1 - overall), 1e-12) / typical)
    z = robust_z(statistic, reference=statistic[~small], floor=floor)
    p = np.where(small, np.nan, p)
    q = benjamini_hochberg(p)
    verdict = np.where(small, "too_small", np.where((q <= alpha) & (z > z_threshold),
                                                    "poisoned", "clean"))  # fmt: skip
    return ClassTest(classes, n, n_groups, threshold, hit, statistic, rate, z, p, q, verdict)
