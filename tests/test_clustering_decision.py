"""Decision rules and poison scores (poisonscan.clustering.decision)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from poisonscan.clustering.decision import (
    DECISION_RULES,
    centre_distance_score,
    cluster_score,
    decide,
    distance_to_cluster_score,
    relative_size,
    silhouette,
    size_gap,
    size_score,
    smaller_cluster,
)


def test_smaller_cluster_ties_pick_lowest_label() -> None:
    assert np.array_equal(smaller_cluster(np.array([1, 0, 1, 0])), [False, True, False, True])
    assert np.array_equal(smaller_cluster(np.array([2, 2, 1])), [False, False, True])
    # with 3 clusters only the smallest one
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    assert np.array_equal(decide(labels, "smaller"), labels == 2)


def test_size_gap_flags_all_clusters_below_the_largest_size_ratio() -> None:
    # a poison split into 3 small pure clusters next to 3 large clean ones
    labels = np.repeat(np.arange(6), [300, 250, 200, 40, 35, 30])
    assert np.array_equal(size_gap(labels), labels >= 3)
    assert np.array_equal(decide(labels, "size-gap"), labels >= 3)
    # with two clusters it is the "smaller" rule (ties: the lowest label)
    for two in (np.repeat([0, 1], [70, 30]), np.array([1, 0, 1, 0])):
        assert np.array_equal(size_gap(two), smaller_cluster(two))
    assert not size_gap(np.zeros(5, int)).any()
    # HDBSCAN noise (-1) is one more group
    assert np.array_equal(size_gap(np.repeat([-1, 0, 1], [3, 40, 45])), np.arange(88) < 3)


def test_relative_size_uses_rounded_shares() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])  # shares 0.5, 0.3, 0.2
    assert np.array_equal(relative_size(labels), labels > 0)
    assert np.array_equal(relative_size(labels, 0.25), labels == 2)
    # 0.349 rounds to 0.35, which is not below 0.35 (as in ART)
    labels = np.r_[np.zeros(651, int), np.ones(349, int)]
    assert not relative_size(labels).any()
    labels = np.r_[np.zeros(655, int), np.ones(345, int)]  # 0.345 -> 0.34 (half to even)
    assert relative_size(labels).sum() == 345


def test_silhouette_rule_needs_a_cohesive_split() -> None:
    labels = np.r_[np.zeros(80, int), np.ones(20, int)]
    assert np.array_equal(decide(labels, "silhouette-scores", silhouette=0.5), labels == 1)
    assert not decide(labels, "silhouette-scores", silhouette=0.1).any()  # not > 0.1
    assert not decide(labels, "silhouette-scores", silhouette=math.nan).any()
    balanced = np.r_[np.zeros(50, int), np.ones(50, int)]
    assert not decide(balanced, "silhouette-scores", silhouette=0.9).any()
    with pytest.raises(ValueError, match="needs the clustering's silhouette"):
        decide(labels, "silhouette-scores")
    with pytest.raises(ValueError, match="unknown decision rule 'largest'.*allowed"):
        decide(labels, "largest")
    assert set(DECISION_RULES) == {"smaller", "size-gap", "relative-size", "silhouette-scores"}


def test_silhouette_on_features_and_distances_agree() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (30, 3)), rng.normal(8, 1, (10, 3))])
    labels = np.r_[np.zeros(30, int), np.ones(10, int)]
    s = silhouette(labels, features=x)
    assert s > 0.7
    assert silhouette(labels, distances=cdist(x, x)) == pytest.approx(s)
    assert math.isnan(silhouette(np.zeros(40, int), features=x))
    d = cdist(x, x)
    d[0, 35] = d[35, 0] = np.inf  # counted as very far, not an error
    assert math.isfinite(silhouette(labels, distances=d))


def test_cluster_score_orders_clusters_by_size_then_distance() -> None:
    labels = np.repeat([0, 1, 2], [6, 3, 1])
    dist = np.array([0, 1, 2, 3, 4, 9, 0.5, 0.7, 0.6, 0.1])
    score = cluster_score(labels, dist)
    assert np.argsort(-score).tolist()[:4] == [9, 7, 8, 6]  # smallest cluster first
    # inside the largest cluster the farther samples rank higher
    assert np.argsort(score[:6]).tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(cluster_score(labels, np.zeros(10)), size_score(labels))


def test_scores_rank_the_small_far_group_first() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (30, 3)), rng.normal(8, 1, (10, 3))])
    labels = np.r_[np.zeros(30, int), np.ones(10, int)]
    poison = labels == 1
    for score in (
        size_score(labels),
        cluster_score(labels, distance_to_cluster_score(cdist(x, x), labels)),
        centre_distance_score(x, labels),
        distance_to_cluster_score(cdist(x, x), labels),
    ):
        assert score.shape == (40,)
        assert score[poison].min() > score[~poison].max()
    np.testing.assert_allclose(size_score(labels), np.where(poison, 0.75, 0.25))
    d = cdist(x, x)
    manual = d[0, 1:30].mean()  # self left out of its own mean
    assert distance_to_cluster_score(d, labels)[0] == pytest.approx(manual)
