"""The detector registry (poisonscan.detectors): entries, result file, inputs."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from poisonscan.detectors import DETECTORS, DISTANCES, Detection, read_detection


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_entry_loads_and_takes_its_sections(name: str) -> None:
    detector = DETECTORS[name]
    function = detector.load()
    assert detector.module == function.__module__
    params = list(inspect.signature(function).parameters)
    assert params[0] == "inputs" and params[1:] == list(detector.sections)
    assert detector.distance in (None, *DISTANCES)
    assert detector.summary


def test_families_on_every_distance() -> None:
    for prefix in ("hc", "agglo", "hdbscan"):
        for d in DISTANCES:
            assert DETECTORS[f"{prefix}_{d}"].distance == d
    assert DETECTORS["gw_kmeans"].distance == "gw" and DETECTORS["raw"].images


def test_detection_round_trips_through_its_file(tmp_path: Path) -> None:
    det = Detection(np.array([0, 0, 1]), np.array([False, False, True]), np.array([0.1, 0.2, 0.9]),
                    2, "size-gap", "a score", {"silhouette": np.float64(0.5)})  # fmt: skip
    det.save(tmp_path / "x.npz", "m")
    res = read_detection(tmp_path / "x.npz")
    assert res["method"] == "m" and res["decision_rule"] == "size-gap" and res["k"] == 2
    assert res["score_name"] == "a score" and float(res["silhouette"]) == 0.5
    np.testing.assert_array_equal(res["flagged"], det.flagged)
    Detection(det.labels, det.flagged, det.score, None, "r", "s").save(tmp_path / "y.npz", "n")
    assert read_detection(tmp_path / "y.npz")["k"] is None
    with pytest.raises(ValueError, match="shapes differ"):
        Detection(np.zeros(3), np.zeros(2, bool), np.zeros(3), None, "r", "s")
