"""Detection metrics (poison = positive), ART's evaluation JSON and the run summary table."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from poisonscan.storage import write_csv

__all__ = [
    "SUMMARY_COLUMNS",
    "art_confusion",
    "art_report",
    "auroc",
    "detection_metrics",
    "format_table",
    "poison_rates",
    "verdict_metrics",
    "write_summary",
]

SUMMARY_COLUMNS: tuple[str, ...] = (
    "dataset", "scenario", "attack", "poison_rate", "rate_of_class", "rate_of_set",
    "sticker_size", "model", "method",
    "decision_rule", "k_chosen", "n", "n_poison", "tn", "fp", "fn", "tp",
    "acc", "tpr", "tnr", "fpr", "precision", "f1", "auroc", "clean_acc", "asr",
)  # fmt: skip


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def auroc(score: np.ndarray, poison: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` (higher = more suspicious) for ``poison``.

    NaN when only one class is present (e.g. a clean control scenario) or a
    score is not finite.
    """
    score = np.asarray(score, dtype=np.float64)
    poison = np.asarray(poison, dtype=bool)
    if score.shape != poison.shape:
        raise ValueError(f"shapes differ: score {score.shape}, poison {poison.shape}")
    if poison.all() or not poison.any() or not np.isfinite(score).all():
        return math.nan
    return float(roc_auc_score(poison, score))


def detection_metrics(
    flagged: np.ndarray, poison: np.ndarray, score: np.ndarray | None = None
) -> dict[str, float | int]:
    """Confusion counts and rates of a poison detector.

    Parameters
    ----------
    flagged : ndarray of shape (n,), bool
        The detector's verdict (True = poisoned).
    poison : ndarray of shape (n,), bool
        Ground truth.
    score : ndarray of shape (n,), optional
        Continuous poison score (higher = more suspicious) for the AUROC.

    Returns
    -------
    dict with tn, fp, fn, tp, acc, tpr, tnr, fpr, precision, f1 and auroc
    (NaN without ``score``); a rate whose denominator is zero is NaN.
    """
    flagged = np.asarray(flagged, dtype=bool)
    poison = np.asarray(poison, dtype=bool)
    if flagged.shape != poison.shape:
        raise ValueError(f"shapes differ: flagged {flagged.shape}, poison {poison.shape}")
    tp = int(np.sum(flagged & poison))
    fp = int(np.sum(flagged & ~poison))
    fn = int(np.sum(~flagged & poison))
    tn = int(np.sum(~flagged & ~poison))
    return {
        "tn": tn, "fp": fp, "fn": fn, "tp": tp,
        "acc": _ratio(tp + tn, tp + tn + fp + fn),
        "tpr": _ratio(tp, tp + fn),
        "tnr": _ratio(tn, tn + fp),
        "fpr": _ratio(fp, fp + tn),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auroc": math.nan if score is None else auroc(score, poison),
    }  # fmt: skip


def poison_rates(poison: np.ndarray, labels: np.ndarray, target: int) -> dict[str, float]:
    """Both conventions of the poison rate (the field uses both; report both).

    Returns
    -------
    dict
        ``rate_of_class``: poisoned share of the target class (ours and the reference
        study's); ``rate_of_set``: poisoned share of the whole training set
        (BackdoorBench's); NaN where the denominator is 0.
    """
    poison = np.asarray(poison, dtype=bool)
    in_class = np.asarray(labels) == target
    return {
        "rate_of_class": _ratio(int(poison[in_class].sum()), int(in_class.sum())),
        "rate_of_set": _ratio(int(poison.sum()), poison.size),
    }


def verdict_metrics(
    flagged_classes: np.ndarray,
    classes: np.ndarray,
    flagged: np.ndarray,
    poison: np.ndarray,
    labels: np.ndarray,
    target: int | None,
    score: np.ndarray | None = None,
) -> dict[str, Any]:
    """How a scan of every class did against the ground truth.

    Parameters
    ----------
    flagged_classes : ndarray of shape (c,), bool
        The class-level verdict ("poisoned") per class of ``classes``.
    classes : ndarray of shape (c,)
    flagged : ndarray of shape (n,), bool
        Per training image: flagged as poison.
    poison : ndarray of shape (n,), bool
        Ground truth.
    labels : ndarray of shape (n,)
        Training labels (which class each image sits in).
    target : int or None
        The attacked class (None for the clean control).
    score : ndarray of shape (n,), optional
        Continuous poison score, for the AUROC inside the target class.

    Returns
    -------
    dict
        ``classes_flagged`` (list), ``n_classes_flagged``, ``target_flagged``,
        ``n_clean_classes_flagged``; over the whole training set the confusion counts and
        rates of :func:`detection_metrics` (prefix ``set_``) and ``flagged_share``; inside
        the target class the same (prefix none: ``tp``, ``tpr`` ...) and ``auroc``; the
        two poison rates.
    """
    classes = np.asarray(classes)
    hit = classes[np.asarray(flagged_classes, dtype=bool)]
    flagged = np.asarray(flagged, dtype=bool)
    poison = np.asarray(poison, dtype=bool)
    labels = np.asarray(labels)
    out: dict[str, Any] = {
        "classes_flagged": [int(c) for c in hit],
        "n_classes_flagged": int(hit.size),
        "target_flagged": bool(target is not None and target in hit),
        "n_clean_classes_flagged": int(np.sum(hit != target))
        if target is not None
        else int(hit.size),
        "flagged_share": float(flagged.mean()) if flagged.size else math.nan,
    }
    out |= {f"set_{k}": v for k, v in detection_metrics(flagged, poison).items() if k != "auroc"}
    if target is not None:
        inside = labels == target
        s = None if score is None else np.asarray(score)[inside]
        out |= detection_metrics(flagged[inside], poison[inside], s)
        out |= poison_rates(poison, labels, target)
    return out


def _art_rate(num: int, den: int) -> dict[str, float | int]:
    return {"rate": round(100.0 * num / den, 2) if den else -1, "numerator": num,
            "denominator": den}  # fmt: skip


def art_confusion(flagged: np.ndarray, poison: np.ndarray) -> dict[str, dict[str, float | int]]:
    """One class's entry of ART's ``evaluate_defence`` JSON.

    Same shape as ART's ``GroundTruthEvaluator.get_confusion_matrix`` (ART
    1.20): ``{"TruePositive": {"rate", "numerator", "denominator"},
    "TrueNegative": ..., "FalsePositive": ..., "FalseNegative": ...}`` with rates
    in percent rounded to 2 decimals, and rate -1 when the denominator is 0.
    """
    m = detection_metrics(flagged, poison)
    tp, tn, fp, fn = (int(m[k]) for k in ("tp", "tn", "fp", "fn"))
    return {
        "TruePositive": _art_rate(tp, tp + fn),
        "TrueNegative": _art_rate(tn, tn + fp),
        "FalsePositive": _art_rate(fp, fp + tn),
        "FalseNegative": _art_rate(fn, tp + fn),
    }


def art_report(
    per_class: Mapping[int, tuple[np.ndarray, np.ndarray]],
) -> dict[str, dict[str, dict[str, float | int]]]:
    """ART's ``evaluate_defence`` JSON object: ``{"class_<id>": art_confusion(...)}``.

    Parameters
    ----------
    per_class : mapping of class id to (flagged, poison)
    """
    return {f"class_{c}": art_confusion(f, p) for c, (f, p) in sorted(per_class.items())}


def write_summary(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` as CSV with :data:`SUMMARY_COLUMNS` first, atomically."""
    write_csv(path, rows, SUMMARY_COLUMNS, extra_columns=True)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Plain-text table of ``columns`` (floats with 3 decimals) for the terminal."""

    def cell(v: Any) -> str:
        if isinstance(v, int) or (isinstance(v, str) and v.lstrip("-").isdigit()):
            return str(v)
        try:
            return f"{float(v):.3f}"
        except (TypeError, ValueError):
            return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)
