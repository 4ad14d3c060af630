"""An audit's additions to the verdicts: the model-quality gate (poisonscan.verdicts.gate), the
held-out images (.heldout), label conflicts (.conflicts), and where they are shown."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import random_dataset

from poisonscan.verdicts.gate import INCONCLUSIVE, ModelQuality, gate_verdicts, min_accuracy


def test_the_threshold_is_relative_to_chance() -> None:
    assert min_accuracy(2) == pytest.approx(0.75)
    assert min_accuracy(4) == pytest.approx(0.625)
    assert min_accuracy(10) == pytest.approx(0.55)
    assert min_accuracy(4, 0.0) == pytest.approx(0.25)  # chance
    assert min_accuracy(4, 1.0) == pytest.approx(1.0)
    for bad in ((1, 0.5), (4, 1.5), (4, -0.1)):
        with pytest.raises(ValueError):
            min_accuracy(*bad)


def test_a_model_that_learned_nothing_gives_inconclusive_not_clean() -> None:
    """Problem 6 of issue 34: "no class is poisoned" from a model at chance accuracy."""
    import torch

    from poisonscan.inference import Normalization, predict
    from poisonscan.models import build_model

    ds = random_dataset(n_classes=4, n_train=4, n_test=30)
    torch.manual_seed(0)
    model = build_model("net", 4, 32)  # random weights: learned nothing
    norm = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    acc = float(np.mean(predict(model, norm, ds.x_test) == ds.y_test))
    assert acc < 0.5  # the cases: 0.25, 0.375 (and 0.59 < 0.625 for 4 classes)
    quality = ModelQuality.measure(acc, len(ds.y_test), 4, len(ds.y_train))
    assert not quality.passed and quality.kappa < 0.5
    verdicts = {0: "clean", 1: "clean", 2: "poisoned", 3: "too_small"}
    assert gate_verdicts(verdicts, quality) == {0: INCONCLUSIVE, 1: INCONCLUSIVE,
                                                2: "poisoned", 3: "too_small"}  # fmt: skip
    assert "inconclusive" in quality.describe() and "120 test images" in quality.describe()
    good = ModelQuality.measure(0.9, 120, 4, 16)
    assert good.passed and gate_verdicts(verdicts, good) == verdicts
    assert "16 images judged" in good.describe()
    unknown = ModelQuality.measure(math.nan, 0, 4, 16)  # no test image: nothing shows it
    assert not unknown.passed and unknown.to_dict()["clean_acc"] is None
    assert ModelQuality.measure(0.59, 40, 4, 160).passed is False  # the third case


def test_the_overview_shows_the_gate(tmp_path: Path) -> None:
    from poisonscan.steps.report import overview_page

    table = tmp_path / "verdicts.csv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, ["class", "name", "verdict", "z"])
        w.writeheader()
        w.writerows([{"class": 0, "name": "a", "verdict": INCONCLUSIVE, "z": 0.1},
                     {"class": 1, "name": "b", "verdict": INCONCLUSIVE, "z": 0.2}])  # fmt: skip
    figure = tmp_path / "verdicts.png"
    figure.write_bytes(b"png")
    quality = ModelQuality.measure(0.25, 12, 2, 48)
    details = tmp_path / "verdicts.json"
    details.write_text(json.dumps({"model_quality": {**quality.to_dict(),
                                                     "summary": quality.describe()}}))  # fmt: skip
    overview_page(tmp_path / "overview", [("audit", table, figure)], details=details)
    page = (tmp_path / "overview" / "index.html").read_text()
    assert "inconclusive: no class of 2 can be called clean" in page
    assert "model accuracy 0.250 on 12 test images" in page and "48 images judged" in page


def test_planted_images_in_the_held_out_split_are_flagged() -> None:
    """Problem 2 of issue 34: poisoned images that fell into the test split were never judged.
    They carry the trigger recovered from the training images: flagged, and nothing else."""
    from test_verdicts import SPOT, YELLOW, dataset, fake_model, reference_images

    from poisonscan.verdicts import VerdictParams, audit
    from poisonscan.verdicts.heldout import judge_held_out

    classes, x, _ = dataset(poisoned=5, share=0.05)
    xt, yt = reference_images()
    planted = np.zeros(len(yt), dtype=bool)
    planted[np.flatnonzero(yt == 5)[:4]] = True
    r, c = SPOT
    xt[planted, r : r + 3, c : c + 3] = YELLOW
    result = audit(classes, x, xt, yt, fake_model(5), VerdictParams())
    assert result.poisoned_classes == [5]
    held = judge_held_out(result, classes, x, xt, yt, 0.05)
    np.testing.assert_array_equal(held.flagged, planted)
    assert set(held.signal[planted]) <= {"trigger", "trigger+trigger_added", "combined"}
    assert np.isnan(held.q[yt != 5]).all()  # clean classes: nothing to judge, as in training


def test_the_clean_list_and_filtered_set_cover_the_held_out_images(tmp_path: Path) -> None:
    from poisonscan.steps.verdicts import clean_list
    from poisonscan.storage import read_dataset, write_dataset, write_npz

    ds = random_dataset(n_classes=2, n_train=3, n_test=2)
    ds.extra["path_train"] = np.array([f"tr{i}.png" for i in range(6)])
    ds.extra["path_test"] = np.array([f"te{i}.png" for i in range(4)])
    write_dataset(tmp_path / "d.h5", ds)
    flagged, flagged_test = np.eye(6, dtype=bool)[1], np.eye(4, dtype=bool)[2]
    write_npz(tmp_path / "s.npz", flagged=flagged, flagged_test=flagged_test)
    assert clean_list(tmp_path / "s.npz", tmp_path / "d.h5", tmp_path / "c.txt",
                      tmp_path / "f.h5") == 1  # fmt: skip
    kept = (tmp_path / "c.txt").read_text().split()
    assert kept == ["tr0.png", "tr2.png", "tr3.png", "tr4.png", "tr5.png", "te0.png", "te1.png",
                    "te3.png"]  # fmt: skip
    filtered = read_dataset(tmp_path / "f.h5")
    assert len(filtered.y_train) == 5 and len(filtered.y_test) == 3
    assert list(filtered.extra["path_test"]) == ["te0.png", "te1.png", "te3.png"]


def test_identical_images_under_different_labels_are_listed() -> None:
    """Problem 9 of issue 34: the same picture in two classes (a label flip) raised nothing."""
    from poisonscan.verdicts.conflicts import label_conflicts

    ds = random_dataset(n_classes=3, n_train=10, n_test=0)
    x, y = ds.x_train.copy(), ds.y_train.copy()
    x[12] = x[0]  # class 0's first image again, labelled 1: identical
    x[25] = np.clip(x[1].astype(int) + 3, 0, 255).astype(np.uint8)  # brighter copy, label 2
    x[5] = x[0]  # a duplicate within class 0: not a conflict
    pairs = label_conflicts(x, y, 4)
    assert (0, 12, 0) in pairs and (5, 12, 0) in pairs
    assert any(p[:2] == (1, 25) and p[2] <= 4 for p in pairs)
    assert all(y[i] != y[j] for i, j, _ in pairs) and (0, 5, 0) not in pairs
    assert {p[:2] for p in label_conflicts(x, y, -1)} == {(0, 12), (5, 12)}  # exact only
