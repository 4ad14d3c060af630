"""The verdict baselines: one registry that the rule, its sections and the bench read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from poisonscan.config import load_schema, section, validate_config
from poisonscan.verdicts.baselines import (
    VERDICT_BASELINES,
    ClassFeatures,
    baseline_names,
    register_baseline,
    run_baseline,
)

REPO = Path(__file__).resolve().parents[1]


def features(n_classes: int = 4, n: int = 60, d: int = 8, poisoned: int = 12) -> tuple:
    """Gaussian class features; class 1's first ``poisoned`` images shifted (the poison)."""
    rng = np.random.default_rng(0)
    per_class, start = {}, 0
    poison = np.zeros(n_classes * n, dtype=bool)
    for c in range(n_classes):
        x = rng.normal(size=(n, d)) + 3 * np.eye(d)[c]
        if c == 1:
            x[:poisoned] += 6 * np.eye(d)[-1]
            poison[start : start + poisoned] = True
        per_class[c] = {"activations": x, "index": np.arange(start, start + n)}
        start += n
    return ClassFeatures.from_classes(per_class, start), poison


def config() -> dict:
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return validate_config(raw, load_schema(REPO / "config" / "schema.yaml"))


def test_every_baseline_runs_and_covers_the_training_set() -> None:
    data, poison = features()
    cfg = config()
    for name, entry in VERDICT_BASELINES.items():
        out = run_baseline(name, data, section(cfg, entry.section), target=1, poison=poison)
        assert out is not None, name
        flagged, score = out
        assert flagged.shape == score.shape == (data.n_train,) and flagged.dtype == bool
    # SPECTRE, told class 1 and its 12 poisoned images, analyses class 1 only
    flagged, score = run_baseline("spectre", data, section(cfg, "baselines.spectre"), 1, poison)
    assert np.all(np.isnan(score[~np.isin(np.arange(data.n_train), data.index[1])]))
    assert flagged[poison].sum() >= 10


def test_a_told_baseline_is_skipped_without_an_attacked_class() -> None:
    data, _ = features()
    params = section(config(), "baselines.spectre")
    assert VERDICT_BASELINES["spectre"].told
    assert run_baseline("spectre", data, params, target=None) is None
    assert not VERDICT_BASELINES["ac"].told


def test_classes_of_one_image_are_left_out() -> None:
    per_class = {0: {"activations": np.zeros((1, 3)), "index": np.array([0])},
                 1: {"activations": np.ones((2, 3)), "index": np.array([1, 2])}}  # fmt: skip
    assert ClassFeatures.from_classes(per_class, 3).classes == [1]


def test_names_are_checked_and_registered_once() -> None:
    with pytest.raises(ValueError, match=r"unknown verdict baselines \['scan'\]"):
        baseline_names(["scan"])
    assert baseline_names() == list(VERDICT_BASELINES)
    with pytest.raises(ValueError, match="registered twice"):
        register_baseline("ac", "activation_clustering", "again")(lambda data, params: None)


def test_every_section_exists_in_the_schema() -> None:
    cfg = config()
    for entry in VERDICT_BASELINES.values():
        assert isinstance(section(cfg, entry.section), dict), entry.section
