from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from poisonscan.evaluate import SUMMARY_COLUMNS, detection_metrics, format_table, write_summary


def test_detection_metrics_counts_and_rates() -> None:
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    flags = np.array([1, 1, 0, 1, 0, 0, 0, 0], bool)
    m = detection_metrics(flags, truth)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (4, 1, 1, 2)
    assert m["acc"] == pytest.approx(6 / 8)
    assert m["tpr"] == pytest.approx(2 / 3) and m["tnr"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_detection_metrics_undefined_rates_are_nan() -> None:
    m = detection_metrics(np.zeros(4, bool), np.zeros(4, bool))
    assert m["tnr"] == 1.0 and math.isnan(m["tpr"]) and math.isnan(m["f1"])
    with pytest.raises(ValueError, match="shapes differ"):
        detection_metrics(np.zeros(3, bool), np.zeros(4, bool))


def test_summary_csv_and_table(tmp_path: Path) -> None:
    row = {c: 1 for c in SUMMARY_COLUMNS} | {"method": "hc_gw", "tpr": 0.91234, "note": "x"}
    write_summary(tmp_path / "s.csv", [row])
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[: len(SUMMARY_COLUMNS)] == list(SUMMARY_COLUMNS)
    assert rows[0]["note"] == "x"
    table = format_table(rows, ["method", "n", "tpr"])
    assert "hc_gw" in table and "0.912" in table and table.splitlines()[0].startswith("method")
