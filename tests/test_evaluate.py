from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from poisonscan.evaluate import (
    SUMMARY_COLUMNS,
    art_confusion,
    art_report,
    auroc,
    detection_metrics,
    format_table,
    write_summary,
)


def test_detection_metrics_counts_and_rates() -> None:
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    flags = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    m = detection_metrics(flags, truth)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (4, 1, 1, 2)
    assert m["acc"] == pytest.approx(6 / 8)
    assert m["tpr"] == pytest.approx(2 / 3) and m["tnr"] == pytest.approx(4 / 5)
    assert m["fpr"] == pytest.approx(1 / 5) and m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert math.isnan(m["auroc"])  # no score given
    score = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3, 0.0, 0.05])
    # pairs (poison, clean) ordered correctly: 0.9 and 0.8 beat all 5; 0.1 beats 2 of 5
    expected = (5 + 5 + 2) / 15
    assert detection_metrics(flags, truth, score)["auroc"] == pytest.approx(expected)
    assert auroc(score, truth) == pytest.approx(expected)


def test_detection_metrics_undefined_rates_are_nan() -> None:
    m = detection_metrics(np.zeros(4, bool), np.zeros(4, bool), np.arange(4.0))
    assert m["tnr"] == 1.0 and m["fpr"] == 0.0
    assert math.isnan(m["tpr"]) and math.isnan(m["f1"]) and math.isnan(m["precision"])
    assert math.isnan(m["auroc"])  # clean control: no poison, AUROC undefined
    assert math.isnan(auroc(np.array([1.0, np.nan]), np.array([True, False])))
    with pytest.raises(ValueError, match="shapes differ"):
        detection_metrics(np.zeros(3, bool), np.zeros(4, bool))


def test_art_confusion_matches_arts_ground_truth_evaluator() -> None:
    gte = pytest.importorskip(
        "art.defences.detector.poison.ground_truth_evaluator", reason="needs the test extra"
    )
    rng = np.random.default_rng(0)
    cases = {
        3: (rng.random(40) < 0.3, rng.random(40) < 0.2),
        5: (rng.random(25) < 0.5, np.zeros(25, bool)),  # no poison: TPR undefined
    }
    # ART takes is_clean (1 = clean) per class, positions = class index order
    assigned_clean = [(~f).astype(int) for f, _ in cases.values()]
    is_clean = [(~p).astype(int) for _, p in cases.values()]
    _, theirs = gte.GroundTruthEvaluator().analyze_correctness(assigned_clean, is_clean)
    theirs = json.loads(theirs)
    ours = art_report(cases)
    assert list(ours) == ["class_3", "class_5"]
    for (_, ours_class), theirs_class in zip(ours.items(), theirs.values(), strict=True):
        assert ours_class == theirs_class
    assert ours["class_5"]["TruePositive"]["rate"] == -1
    assert art_confusion(*cases[3]) == ours["class_3"]


def test_summary_csv_and_table(tmp_path: Path) -> None:
    row = {c: 1 for c in SUMMARY_COLUMNS} | {"method": "hc_gw", "tpr": 0.91234, "note": "x"}
    row |= {"decision_rule": "smaller", "k_chosen": None, "auroc": math.nan}
    write_summary(tmp_path / "s.csv", [row])
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[: len(SUMMARY_COLUMNS)] == list(SUMMARY_COLUMNS)
    for col in ("fpr", "precision", "auroc", "k_chosen", "decision_rule"):
        assert col in SUMMARY_COLUMNS
    assert rows[0]["note"] == "x" and rows[0]["k_chosen"] == "" and rows[0]["auroc"] == "nan"
    table = format_table(rows, ["method", "n", "tpr", "decision_rule"])
    assert "hc_gw" in table and "0.912" in table and table.splitlines()[0].startswith("method")
    assert "smaller" in table
