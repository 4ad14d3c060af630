"""Whole-dataset scan criteria (poisonscan.clustering.scan)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from poisonscan.clustering import class_suspicion, rank_classes
from poisonscan.clustering.decision import size_gap
from poisonscan.clustering.scan import cluster_separation, flagged_separation


def heatmap_class(n_clean: int, n_trigger: int, seed: int = 0) -> np.ndarray:
    """Clean heatmaps: relevance spread over the centre with noise; trigger: one hot corner."""
    rng = np.random.default_rng(seed)
    h = rng.gamma(2.0, 1.0, size=(n_clean + n_trigger, 8, 8))
    h[:, 2:6, 2:6] += 4.0
    h[n_clean:, 6:, 6:] += 40.0
    return h / h.sum(axis=(1, 2), keepdims=True)


def distances(h: np.ndarray) -> np.ndarray:
    flat = h.reshape(len(h), -1)
    return cdist(flat, flat)


def test_flagged_separation_known_value() -> None:
    # two points per group at 0/1 and 10/11 on a line: means 0.5 and 10.5, gap^2 = 100;
    # total variance 101/3, so a random pair would score 101/3 * 4 / (2 * 2) = 101/3;
    # nonzero pairwise distances 1, 10, 11, 9, 10, 1 -> median 9.5
    h = np.array([[0.0], [1.0], [10.0], [11.0]])
    d = distances(h)
    flags = np.array([False, False, True, True])
    assert flagged_separation(h, d, flags) == pytest.approx(np.sqrt(100 - 101 / 3) / 9.5)
    assert flagged_separation(h, d, np.zeros(4, dtype=bool)) == 0.0
    assert flagged_separation(h, d, np.ones(4, dtype=bool)) == 0.0
    # duplicated heatmaps: the median over nonzero pairs (3) keeps the scale positive;
    # gap^2 = 9, total variance 15/7, chance 15/7 * 7 / (2 * 5) = 1.5
    dup = np.array([[0.0]] * 5 + [[3.0]] * 2)
    flags = np.arange(7) >= 5
    assert flagged_separation(dup, distances(dup), flags) == pytest.approx(np.sqrt(7.5) / 3)
    assert flagged_separation(np.zeros((3, 1)), np.zeros((3, 3)), np.arange(3) == 2) == 0.0
    with pytest.raises(ValueError, match=r"4 flags need 4 heatmaps .* got 4 heatmaps and \(3, 3\)"):
        flagged_separation(h, d[:3, :3], np.arange(4) == 0)


def test_flagged_separation_of_random_flags_is_near_zero_at_any_size() -> None:
    # a handful of random flags on pure noise must not look separated (the raw mean
    # gap of one random sample is about 0.7 of the median distance here)
    rng = np.random.default_rng(0)
    h = rng.gamma(2.0, 1.0, size=(400, 64))
    d = distances(h)
    for m in (1, 3, 10, 40, 130):
        values = [flagged_separation(h, d, np.isin(np.arange(400), rng.choice(400, m, False)))
                  for _ in range(10)]  # fmt: skip
        assert np.mean(values) < 0.35, (m, values)
    trigger = heatmap_class(385, 15).reshape(400, -1)
    flags = np.arange(400) >= 385
    assert flagged_separation(trigger, distances(trigger), flags) > 1.0


def test_cluster_separation_is_the_largest_of_the_minority_clusters() -> None:
    h = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [30.0]])
    d = distances(h)
    labels = np.array([0, 0, 0, 1, 1, 2])  # shares 0.5 (not a minority), 1/3, 1/6
    expected = max(flagged_separation(h, d, labels == 1), flagged_separation(h, d, labels == 2))
    assert cluster_separation(h, d, labels) == pytest.approx(expected) and expected > 0
    assert cluster_separation(h, d, np.zeros(6, dtype=int)) == 0.0  # one cluster
    assert cluster_separation(h, d, np.arange(6) >= 3) == 0.0  # two halves: no minority


def test_cluster_separation_finds_poison_where_the_size_gap_flags_a_clean_cluster() -> None:
    """Repetition 1's GW scan in miniature (README): among many clusters the largest size
    ratio falls below two pure poison clusters, so the rule flags a clean one."""
    rng = np.random.default_rng(0)
    sizes = {"clean": [5, 18, 30, 34], "poison": [10, 11]}
    maps, labels = [], []
    for kind, group_sizes in sizes.items():
        for size in group_sizes:
            centre = np.zeros((8, 8))
            if kind == "clean":  # each clean cluster its own relevance spot (a track)
                r, c = rng.integers(2, 5, 2)
                centre[r : r + 2, c : c + 2] = 3.0
            else:
                centre[6:, 6:] = 30.0  # the trigger's corner
            maps.append(rng.gamma(2.0, 1.0, size=(size, 8, 8)) + centre)
            labels += [len(set(labels))] * size
    h = np.concatenate(maps)
    h /= h.sum(axis=(1, 2), keepdims=True)
    labels = np.array(labels)
    poison = labels >= 4
    d = distances(h)
    flagged = size_gap(labels)
    assert flagged.sum() == 5 and not (flagged & poison).any()
    by_cluster = cluster_separation(h, d, labels)
    assert by_cluster == max(flagged_separation(h, d, labels == c) for c in (4, 5))
    assert by_cluster > 3 * flagged_separation(h, d, flagged)


DECISION = {"rule": "size-gap", "size_threshold": 0.35, "silhouette_threshold": 0.1}
SEED = {"seed": 0}


def test_class_suspicion_separates_a_trigger_group_from_clean_classes() -> None:
    attacked = heatmap_class(80, 15)
    row = class_suspicion(attacked, distances(attacked), SEED, DECISION)
    assert row["n"] == 95 and row["k"] >= 2
    assert row["flagged_share"] == pytest.approx(15 / 95)
    clean = heatmap_class(95, 0, seed=1)
    clean_row = class_suspicion(clean, distances(clean), SEED, DECISION)
    assert row["separation"] > 3 * clean_row["separation"]
    assert row["cluster_separation"] > 3 * clean_row["cluster_separation"]


def test_class_suspicion_uses_the_decision_rule() -> None:
    h = heatmap_class(80, 15)
    d = distances(h)
    everything_small = {**DECISION, "rule": "relative-size", "size_threshold": 1.01}
    row = class_suspicion(h, d, SEED, everything_small)
    assert row["flagged_share"] == 1.0 and row["separation"] == 0.0
    with pytest.raises(ValueError, match="unknown decision rule 'largest'"):
        class_suspicion(h, d, SEED, {**DECISION, "rule": "largest"})


def test_class_suspicion_single_group_no_flag() -> None:
    # one noise group: the eigengap sees one group, so with the option nothing is flagged
    h = heatmap_class(95, 0, seed=2)
    d = distances(h)
    row = class_suspicion(h, d, {**SEED, "single_group_no_flag": True}, DECISION)
    assert row["n_groups"] == 1
    assert row["flagged_share"] == 0.0 and row["separation"] == 0.0
    assert row["cluster_separation"] == 0.0
    flagged = class_suspicion(h, d, {**SEED, "single_group_no_flag": False}, DECISION)
    assert flagged["flagged_share"] > 0


def test_class_suspicion_too_small_class_is_nan() -> None:
    h = heatmap_class(5, 0)
    row = class_suspicion(h, distances(h), SEED, DECISION)
    assert row["k"] == -1 and math.isnan(row["separation"])
    assert math.isnan(row["cluster_separation"])


def test_rank_classes_by_cluster_separation_unscored_last_ties_shared() -> None:
    rows = [{"class": 0, "cluster_separation": 0.3}, {"class": 1, "cluster_separation": math.nan},
            {"class": 2, "cluster_separation": 0.9}, {"class": 3, "cluster_separation": 0.3},
            {"class": 4, "cluster_separation": 0.0}]  # fmt: skip
    ranked = rank_classes(rows)
    assert [r["rank"] for r in ranked] == [2, 5, 1, 2, 5]
    # another column ranks alike (the bench ranks the scan.csv it read, strings included)
    other = [{"class": r["class"], "separation": str(r["cluster_separation"])} for r in rows]
    assert [r["rank"] for r in rank_classes(other, by="separation")] == [2, 5, 1, 2, 5]
    assert "rank" not in rows[0]  # copies
    assert rank_classes([]) == []
    # no minority cluster anywhere: no class is "first"
    assert [r["rank"] for r in rank_classes([{"cluster_separation": 0.0}] * 3)] == [3, 3, 3]
