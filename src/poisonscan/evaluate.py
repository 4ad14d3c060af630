"""Detection metrics (poison = positive) and the run summary table."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from poisonscan.storage import atomic_path

__all__ = ["SUMMARY_COLUMNS", "detection_metrics", "format_table", "write_summary"]

SUMMARY_COLUMNS: tuple[str, ...] = (
    "dataset", "scenario", "attack", "poison_rate", "sticker_size", "model", "method",
    "n", "n_poison", "tn", "fp", "fn", "tp", "acc", "tpr", "tnr", "f1", "clean_acc", "asr",
)  # fmt: skip


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def detection_metrics(flagged: np.ndarray, poison: np.ndarray) -> dict[str, float | int]:
    """Confusion counts and rates of a poison detector.

    Parameters
    ----------
    flagged : ndarray of shape (n,), bool
        The detector's verdict (True = poisoned).
    poison : ndarray of shape (n,), bool
        Ground truth.

    Returns
    -------
    dict with tn, fp, fn, tp, acc, tpr, tnr, f1; a rate whose denominator is
    zero is NaN.
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
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }  # fmt: skip


def write_summary(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` as CSV with :data:`SUMMARY_COLUMNS` first, atomically."""
    rows = list(rows)
    extra = sorted({k for r in rows for k in r} - set(SUMMARY_COLUMNS))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*SUMMARY_COLUMNS, *extra])
        writer.writeheader()
        writer.writerows(rows)


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
