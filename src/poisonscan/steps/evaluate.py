"""Rules evaluate and summary (rules/evaluate.smk)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from poisonscan import evaluate
from poisonscan.detectors import read_detection
from poisonscan.explain.store import read_group_array
from poisonscan.storage import write_json

__all__ = ["SUMMARY_TABLE", "evaluate_scenario", "summarize"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

SUMMARY_TABLE = ("scenario", "method", "decision_rule", "k_chosen", "n", "n_poison", "tn", "fp",
                 "fn", "tp", "acc", "tpr", "tnr", "f1", "auroc", "clean_acc", "asr")  # fmt: skip


def evaluate_scenario(
    explanations: PathLike,
    metrics: PathLike,
    detections: Mapping[str, PathLike],
    out: PathLike,
    context: Mapping[str, Any],
    art_out: PathLike | None = None,
    dataset: PathLike | None = None,
) -> None:
    """Score every method's flags and scores against the ground truth; one row per method.

    Parameters
    ----------
    explanations : path
        Class group of the explanation store (``poison``; the group's name is the class id).
    metrics : path
        The trained model's metrics JSON (``clean_acc``, ``asr``).
    detections : mapping of method name to its ``.npz`` result
    out : path
        JSON list of summary rows.
    context : mapping
        Descriptive columns added to every row.
    art_out : path, optional
        JSON in the shape of ART's ``evaluate_defence``, per method:
        ``{method: {"class_<id>": {...}}}``.
    dataset : path, optional
        The training set: with it every row has both poison rates (``rate_of_class``, the
        share of the analysed class; ``rate_of_set``, of the whole training set).
    """
    group = Path(str(explanations))
    poison = read_group_array(group, "poison").astype(bool)
    cls = int(group.name) if group.name.isdigit() else 0
    train_metrics = json.loads(Path(metrics).read_text())
    rates = {}
    if dataset is not None:
        from poisonscan.storage import read_dataset

        n_train = len(read_dataset(dataset).y_train)
        rates = {"rate_of_class": int(poison.sum()) / max(poison.size, 1),
                 "rate_of_set": int(poison.sum()) / max(n_train, 1)}  # fmt: skip
    rows, art = [], {}
    for method, path in sorted(detections.items()):
        res = read_detection(path)
        if res["flagged"].shape != poison.shape:
            raise ValueError(
                f"{path} has {res['flagged'].size} samples but {group} has {poison.size}"
            )
        rows.append({
            **context,
            "method": method,
            "decision_rule": res["decision_rule"],
            "k_chosen": res["k"],
            "n": int(poison.size),
            "n_poison": int(poison.sum()),
            **rates,
            **evaluate.detection_metrics(res["flagged"], poison, res["score"]),
            "clean_acc": train_metrics["clean_acc"],
            "asr": train_metrics["asr"],
        })  # fmt: skip
        art[method] = evaluate.art_report({cls: (res["flagged"], poison)})
    write_json(out, rows)
    if art_out is not None:
        write_json(art_out, art)


def summarize(evaluations: Sequence[PathLike], out: PathLike) -> str:
    """Collect the per-scenario evaluations into one CSV; return it as a text table."""
    rows = [row for path in evaluations for row in json.loads(Path(path).read_text())]
    evaluate.write_summary(out, rows)
    table = evaluate.format_table(rows, SUMMARY_TABLE)
    log.info("summary:\n%s", table)
    return table
