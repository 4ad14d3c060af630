"""The verdict on every class of a training set, and the suspicious images in the poisoned ones.

:func:`audit` runs, in order:

1. **the class test** (:mod:`.concentration`): how often a class's relevance is
   concentrated in a small window, against the other classes; candidate classes pass
   ``q <= alpha`` and ``z > z_threshold``;
2. **trigger recovery and the causal check** (:mod:`.trigger`) on every candidate: the
   trigger is recovered from its extreme images, pasted onto clean test images of the
   other classes, and must flip them to the class significantly more often than a
   control patch of the same size (``flip_alpha``), and at least ``min_flip_rate`` of
   them; a candidate that fails is ``clean`` (its relevance peak is a feature of the
   class, not a trigger);
3. **per-image flags inside a poisoned class**: each image's peak share and its match
   with the recovered trigger (pasted and added, :func:`~.trigger.trigger_scores`),
   each turned into an empirical p-value against the same measure on the other classes'
   images, combined (the smallest times their number, Bonferroni), and
   Benjamini-Hochberg at ``sample_alpha`` over the class's images; clean classes get no
   flags;
4. **label disagreement** (:mod:`.labels`), reported beside the heatmap verdict.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from poisonscan.verdicts._stats import benjamini_hochberg
from poisonscan.verdicts.concentration import ClassTest, class_test, empirical_p, peak_shares
from poisonscan.verdicts.labels import LabelDisagreement, label_disagreement
from poisonscan.verdicts.trigger import (
    FlipTest,
    Trigger,
    flip_rates,
    recover_trigger,
    trigger_scores,
)

__all__ = ["AuditResult", "ClassData", "VerdictParams", "audit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerdictParams:
    """The ``verdicts`` config section.

    Attributes
    ----------
    window : int
        Side of the relevance window of the class test, in pixels.
    quantile : float
        Of the other classes' peak shares: the extreme threshold.
    alpha : float
        Largest q-value (over classes) of a poisoned class.
    z_threshold : float
        Smallest robust z of a poisoned class (e^2: SCAn, Beatrix, AGPD).
    min_groups : int
        Classes with fewer near-duplicate groups are ``too_small``.
    flip_alpha : float
        Largest p-value of the causal check (the trigger flips more than the control).
    min_flip_rate : float
        Smallest median, over the other classes, of the share of their images the
        trigger flips (:class:`~poisonscan.verdicts.trigger.FlipTest`).
    sample_alpha : float
        False-discovery rate of the per-image flags inside a poisoned class.
    trigger_sizes : tuple of int
        Window sides tried when the trigger is recovered.
    flip_images : int
        Test images of other classes used by the causal check, at most.
    seed : int
    """

    window: int = 3
    quantile: float = 0.999
    alpha: float = 0.05
    z_threshold: float = math.exp(2)
    min_groups: int = 10
    flip_alpha: float = 0.01
    min_flip_rate: float = 0.05
    sample_alpha: float = 0.05
    trigger_sizes: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    flip_images: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger_sizes", tuple(int(s) for s in self.trigger_sizes))
        for name in ("alpha", "flip_alpha", "sample_alpha"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"verdicts.{name} must lie in (0, 1), got {getattr(self, name)}")
        if not 0.5 < self.quantile < 1.0:
            raise ValueError(f"verdicts.quantile must lie in (0.5, 1), got {self.quantile}")
        if not 0.0 <= self.min_flip_rate <= 1.0:
            raise ValueError(f"verdicts.min_flip_rate must lie in [0, 1], got {self.min_flip_rate}")
        if self.window < 1 or self.min_groups < 1 or self.flip_images < 1:
            raise ValueError("verdicts.window, min_groups and flip_images must be >= 1")


@dataclass(frozen=True)
class ClassData:
    """One class of the training set as the audit reads it.

    Attributes
    ----------
    heatmaps : ndarray of shape (n, H, W)
        At the images' resolution.
    index : ndarray of shape (n,)
        Positions in the training set.
    prediction : ndarray of shape (n,)
        The model's predictions.
    groups : ndarray of shape (n,)
        Near-duplicate group of each image (unique ids when unknown).
    """

    heatmaps: np.ndarray
    index: np.ndarray
    prediction: np.ndarray
    groups: np.ndarray


@dataclass
class AuditResult:
    """Everything the audit found.

    Attributes
    ----------
    test : ClassTest
        The class test, before the causal check.
    verdict : dict of int to str
        Final class verdicts: ``poisoned``, ``clean`` or ``too_small``.
    params : VerdictParams
    triggers : dict of int to Trigger
        The trigger recovered for every candidate class.
    flips : dict of int to FlipTest
        The causal check of every candidate class.
    labels : LabelDisagreement
    score, p, q : ndarray of shape (n_train,)
        Per training image (NaN outside poisoned classes): the combined p-value's
        ``-log10`` as score, the p-value and the BH q-value inside its class.
    flagged : ndarray of shape (n_train,), bool
    signal : ndarray of shape (n_train,), str
        What flagged an image: ``relevance`` (its heatmap's peak share), ``trigger`` (its
        pixels match the recovered pattern), ``trigger_added`` (they carry its additive
        part), joined by ``+``; ``combined`` when only the combined p-value passes; ``""``.
    peak_share, trigger_score : ndarray of shape (n_train,)
        The two per-image measures (NaN where not computed).
    """

    test: ClassTest
    verdict: dict[int, str]
    params: VerdictParams = field(default_factory=lambda: VerdictParams())
    triggers: dict[int, Trigger] = field(default_factory=dict)
    flips: dict[int, FlipTest] = field(default_factory=dict)
    labels: LabelDisagreement | None = None
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    p: np.ndarray = field(default_factory=lambda: np.zeros(0))
    q: np.ndarray = field(default_factory=lambda: np.zeros(0))
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    signal: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    peak_share: np.ndarray = field(default_factory=lambda: np.zeros(0))
    trigger_score: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def poisoned_classes(self) -> list[int]:
        return sorted(c for c, v in self.verdict.items() if v == "poisoned")

    def summary(self) -> dict[str, Any]:
        """JSON-able record: parameters, candidates, triggers, causal checks, labels."""
        t = self.test
        out: dict[str, Any] = {
            "params": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in dataclasses.asdict(self.params).items()},
            "poisoned_classes": self.poisoned_classes,
            "candidates": [int(c) for c in t.classes[t.poisoned]],
            "n_flagged": int(self.flagged.sum()),
            "triggers": {
                str(c): {"size": tr.size, "region": list(tr.region),
                         "pattern": np.round(tr.pattern, 1).tolist(),
                         "relevance_share": tr.relevance_share, "spread": tr.spread,
                         "n_positions": len(tr.positions)}
                for c, tr in self.triggers.items()
            },
            "causal_checks": {
                str(c): {"n": f.n, "trigger_rate": f.trigger_rate,
                         "control_rate": f.control_rate, "p_value": f.p_value,
                         "per_class": {str(int(k)): [float(a), float(b)] for k, a, b in
                                       zip(f.classes, f.trigger_rates, f.control_rates,
                                           strict=True)}}
                for c, f in self.flips.items()
            },
        }  # fmt: skip
        if self.labels is not None:
            lab = self.labels
            out["label_disagreement_flagged"] = [int(c) for c in lab.classes[lab.flagged]]
        return out


def audit(
    classes: Mapping[int, ClassData],
    x_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray] | None,
    params: VerdictParams | None = None,
) -> AuditResult:
    """Verdict on every class and flags on the images of the poisoned ones.

    Parameters
    ----------
    classes : mapping of class id to ClassData
        Every class of the training set.
    x_train : ndarray of shape (n_train, H, W, 3), uint8
    x_test, y_test : ndarray
        Clean reference images for the causal check (the test split).
    predict : callable or None
        uint8 images -> predicted class ids (the trained model). Without it the causal
        check is skipped and the class test decides alone.
    params : VerdictParams, optional

    Returns
    -------
    AuditResult
    """
    p = params or VerdictParams()
    ids = sorted(classes)
    n_train = len(x_train)
    _check_reference(ids, x_train, x_test, y_test)
    for c in ids:
        d = classes[c]
        if d.heatmaps.shape[1:] != x_train.shape[1:3]:
            raise ValueError(
                f"class {c}: heatmaps of shape {d.heatmaps.shape[1:]} but images of shape "
                f"{x_train.shape[1:3]}; explain with pool 1 for the audit"
            )
    shares = {c: peak_shares(classes[c].heatmaps, p.window) for c in ids}
    test = class_test(shares, {c: classes[c].groups for c in ids}, p.quantile, p.alpha,
                      p.z_threshold, p.min_groups)  # fmt: skip
    verdict = {int(c): str(v) for c, v in zip(test.classes, test.verdict, strict=True)}
    result = AuditResult(test, verdict, p)
    result.peak_share = np.full(n_train, math.nan)
    for c in ids:
        result.peak_share[classes[c].index] = shares[c]
    result.trigger_score = np.full(n_train, math.nan)
    for i, c in enumerate(test.classes):
        if test.verdict[i] != "poisoned":
            continue
        c = int(c)
        d = classes[c]
        extreme = shares[c] > test.threshold[i]
        trig = recover_trigger(d.heatmaps[extreme], x_train[d.index[extreme]], p.trigger_sizes)
        result.triggers[c] = trig
        if predict is None:
            continue
        rng = np.random.default_rng([p.seed, c])
        flip = flip_rates(predict, x_test, y_test, c, trig, x_train[d.index[extreme]], rng,
                          p.flip_images)  # fmt: skip
        result.flips[c] = flip
        causal = flip.p_value <= p.flip_alpha and flip.trigger_rate >= p.min_flip_rate
        log.info("class %d: trigger %dx%d at %s flips a median %.3f of the other classes' "
                 "test images (%d; control %.3f, p %.2g): %s", c, trig.size, trig.size, trig.region,
                 flip.trigger_rate, flip.n, flip.control_rate, flip.p_value,
                 "causal" if causal else "not causal: clean")  # fmt: skip
        if not causal:
            result.verdict[c] = "clean"
    _flag_images(result, classes, x_train, shares, p)
    result.labels = label_disagreement(
        [np.full(len(classes[c].index), c) for c in ids],
        [classes[c].prediction for c in ids], ids, p.z_threshold, p.alpha,
    )  # fmt: skip
    return result


def _check_reference(
    ids: list[int], x_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> None:
    """The clean reference (test split) must match the training set: image shape, classes."""
    if np.shape(x_test)[1:] != np.shape(x_train)[1:]:
        raise ValueError(
            f"test images of shape {np.shape(x_test)[1:]} but training images of shape "
            f"{np.shape(x_train)[1:]}: the reference set must come from the same dataset"
        )
    if len(x_test) != len(y_test):
        raise ValueError(f"{len(x_test)} test images but {len(y_test)} test labels")
    foreign = sorted(set(np.unique(y_test).tolist()) - set(ids))
    if foreign:
        raise ValueError(
            f"test labels {foreign} are not classes of the training set ({ids[0]}..{ids[-1]})"
        )


def _flag_images(
    result: AuditResult,
    classes: Mapping[int, ClassData],
    x_train: np.ndarray,
    shares: Mapping[int, np.ndarray],
    p: VerdictParams,
) -> None:
    n_train = len(x_train)
    result.score = np.full(n_train, math.nan)
    result.p = np.full(n_train, math.nan)
    result.q = np.full(n_train, math.nan)
    result.flagged = np.zeros(n_train, dtype=bool)
    result.signal = np.full(n_train, "", dtype=object)
    for c in result.poisoned_classes:
        d = classes[c]
        others = [o for o in classes if o != c]
        ref_share = np.concatenate([shares[o] for o in others])
        p_share = empirical_p(shares[c], ref_share)
        pvals = [p_share]
        trig = result.triggers.get(c)
        if trig is not None:
            ref_index = np.concatenate([classes[o].index for o in others])
            own = trigger_scores(x_train[d.index], trig)
            ref = trigger_scores(x_train[ref_index], trig)
            result.trigger_score[d.index] = own[0]
            pvals += [empirical_p(own[0], ref[0]), empirical_p(own[1], ref[1])]
        combined = np.minimum(len(pvals) * np.min(pvals, axis=0), 1.0)
        q = benjamini_hochberg(combined)
        flagged = q <= p.sample_alpha
        signal = np.full(len(q), "", dtype=object)
        for name, pv in zip(("relevance", "trigger", "trigger_added"), pvals, strict=False):
            hit = flagged & (benjamini_hochberg(pv) <= p.sample_alpha)
            signal[hit] = [f"{s}+{name}" if s else name for s in signal[hit]]
        signal[flagged & (signal == "")] = "combined"
        result.score[d.index] = -np.log10(combined)
        result.p[d.index] = combined
        result.q[d.index] = q
        result.flagged[d.index] = flagged
        result.signal[d.index] = signal
        log.info("class %d: %d of %d images flagged at FDR %.2f", c, int(flagged.sum()),
                 len(flagged), p.sample_alpha)  # fmt: skip


def verdict_table(
    result: AuditResult, labels: np.ndarray, names: Mapping[int, str] | None = None
) -> list[dict[str, Any]]:
    """One row per class for ``verdicts.csv``.

    Parameters
    ----------
    result : AuditResult
    labels : ndarray of shape (n_train,)
        Training labels (to count the flagged images per class).
    names : mapping of class id to name, optional
    """
    t, lab = result.test, result.labels
    flagged_per_class = np.bincount(np.asarray(labels)[result.flagged],
                                    minlength=int(t.classes.max()) + 1)  # fmt: skip
    rows = []
    for i, c in enumerate(t.classes):
        c = int(c)
        flip, trig = result.flips.get(c), result.triggers.get(c)
        poisoned = result.verdict[c] == "poisoned"
        row: dict[str, Any] = {
            "class": c,
            "name": (names or {}).get(c, str(c)),
            "verdict": result.verdict[c],
            "n": int(t.n[i]),
            "n_groups": int(t.n_groups[i]),
            "statistic": float(t.statistic[i]),
            "z": float(t.z[i]),
            "p": float(t.p[i]),
            "q": float(t.q[i]),
            "n_flagged": int(flagged_per_class[c]),
            "signal": "heatmaps" if poisoned else "",
            "trigger": _describe(trig),
            "flip_rate": flip.trigger_rate if flip else math.nan,
            "control_flip_rate": flip.control_rate if flip else math.nan,
            "flip_p": flip.p_value if flip else math.nan,
            "flip_probe": flip.probe if flip else "",
        }
        if lab is not None:
            j = int(np.flatnonzero(lab.classes == c)[0])
            row |= {"label_disagreement": float(lab.share[j]),
                    "label_main_other": int(lab.main_other[j]), "label_z": float(lab.z[j]),
                    "label_q": float(lab.q[j]), "label_flagged": bool(lab.flagged[j])}  # fmt: skip
        rows.append(row)
    return rows


def _describe(trig: Trigger | None) -> str:
    if trig is None:
        return ""
    top, left, bottom, right = trig.region
    rgb = ",".join(f"{v:.0f}" for v in trig.pattern.reshape(-1, 3).mean(axis=0))
    return (f"{trig.size}x{trig.size} px in rows {top}-{bottom - 1}, cols {left}-{right - 1}, "
            f"mean colour ({rgb})")  # fmt: skip
