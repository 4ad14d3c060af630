"""Baselines (poisonscan.baselines): AC against ART, Spectral Signatures, raw pixels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from poisonscan.baselines import (
    CLUSTER_ANALYSES,
    ActivationClustering,
    RawPixelClustering,
    SpectralSignatures,
    class_medians,
    distance_analysis,
    reduce_dimensionality,
    to_grayscale,
)
from poisonscan.clustering import DECISION_RULES, decide, silhouette


def activations_by_class(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three classes of 40-d activations; each has a separated sub-group of the given size."""
    rng = np.random.default_rng(seed)
    acts, poison = [], []
    for c, (n_clean, n_sub) in enumerate([(45, 15), (34, 16), (50, 8)]):
        centre = rng.normal(0, 4, 40)
        shift = np.zeros(40)
        shift[c * 5 : c * 5 + 5] = 9.0
        x = np.vstack(
            [rng.normal(centre, 1, (n_clean, 40)), rng.normal(centre + shift, 1, (n_sub, 40))]
        )
        order = rng.permutation(len(x))  # interleave, so position says nothing
        acts.append(x[order])
        poison.append((np.arange(len(x)) >= n_clean)[order])
    return acts, poison


def test_cluster_analyses_are_arts_and_the_decision_rules() -> None:
    assert set(CLUSTER_ANALYSES) == {"smaller", "relative-size", "distance", "silhouette-scores"}
    assert set(CLUSTER_ANALYSES) - {"distance"} <= set(DECISION_RULES)
    x, poison = activations_by_class()
    est = ActivationClustering(cluster_analysis="size-gap").fit(x[2])
    assert np.array_equal(est.flagged_, poison[2])


def test_activation_clustering_flags_the_small_group() -> None:
    acts, poison = activations_by_class()
    est = ActivationClustering().fit(acts[0])
    assert est.reduced_.shape == (60, 10)
    assert np.array_equal(est.flagged_, poison[0])
    assert est.silhouette_ > 0.3
    assert est.score_[poison[0]].min() > est.score_[~poison[0]].max()
    balanced = np.vstack([acts[0][~poison[0]][:30], acts[0][poison[0]] + 1, acts[0][poison[0]]])
    rel = ActivationClustering(cluster_analysis="relative-size").fit(balanced)
    assert not rel.flagged_.any()  # 30 of 60 is not below 0.35
    with pytest.raises(ValueError, match="cluster_analysis must be one of"):
        ActivationClustering(cluster_analysis="largest").fit(acts[0])
    with pytest.raises(ValueError, match="needs other_medians"):
        ActivationClustering(cluster_analysis="distance").fit(acts[0])


def test_reduce_dimensionality_follows_art() -> None:
    x = np.random.default_rng(0).normal(size=(30, 12))
    assert reduce_dimensionality(x, 10, "PCA").shape == (30, 10)
    assert reduce_dimensionality(x, 10, "FastICA").shape == (30, 10)
    assert reduce_dimensionality(x[:, :8], 10) is not None
    np.testing.assert_array_equal(reduce_dimensionality(x[:, :8], 10), x[:, :8])  # no reduction
    assert reduce_dimensionality(x[:6], 10).shape == (6, 6)
    with pytest.raises(ValueError, match="reduce must be one of"):
        reduce_dimensionality(x, 10, "TSNE")


@pytest.mark.parametrize("analysis", ["smaller", "relative-size", "distance"])
def test_activation_clustering_flags_what_art_flags(analysis: str) -> None:
    """ART's ActivationDefence on the same per-class activations flags the same samples.

    ART 1.20.1 with numpy 2 raises in ``relative-size`` for a class without a
    small cluster, so every class here has one.
    """
    art = pytest.importorskip("art.defences.detector.poison", reason="needs the test extra (ART)")
    acts, poison = activations_by_class()
    y = np.concatenate([np.full(len(a), c) for c, a in enumerate(acts)])
    y = y[np.random.default_rng(1).permutation(len(y))]  # classes interleaved in x_train
    defence = art.ActivationDefence(SimpleNamespace(nb_classes=3), np.zeros((len(y), 1)), y)
    # ART segments x_train by label in index order: hand it the same per-class activations
    defence.activations_by_class = [a.copy() for a in acts]
    np.random.seed(0)  # noqa: NPY002  ART's k-means uses the global generator
    _, is_clean = defence.detect_poison(
        nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis=analysis
    )
    is_clean = np.asarray(is_clean)
    medians = class_medians(acts, 10, "PCA")
    flagged = []
    for c, a in enumerate(acts):
        others = [m for k, m in enumerate(medians) if k != c]
        est = ActivationClustering(cluster_analysis=analysis).fit(a, other_medians=others)
        assert np.array_equal(est.flagged_, is_clean[y == c] == 0), (c, analysis)
        flagged.append(est.flagged_)
    if analysis != "distance":
        assert all(np.array_equal(f, p) for f, p in zip(flagged, poison, strict=True))


def test_silhouette_analysis_matches_art_where_art_is_defined() -> None:
    """ART 1.20.1's silhouette analysis marks the poison cluster 0 but leaves the other
    cluster's entries uninitialised (``np.empty``), and raises IndexError for a small but
    weak cluster; we compare the clusters ART marks 0, and the no-flag case."""
    art = pytest.importorskip("art.defences.detector.poison.clustering_analyzer")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    small = np.r_[np.zeros(45, int), np.ones(15, int)]
    balanced = np.r_[np.zeros(30, int), np.ones(30, int)]
    for labels in (small, balanced):
        reduced = x + 8.0 * labels[:, None]
        assigned, _, _ = art.ClusteringAnalyzer().analyze_by_silhouette_score([labels], [reduced])
        art_poison = np.asarray(assigned[0], dtype=float) == 0
        s = silhouette(labels, features=reduced)
        ours = decide(labels, "silhouette-scores", silhouette=s)
        assert np.array_equal(ours, art_poison)
        assert ours.sum() == (15 if labels is small else 0)
    weak = x + 0.2 * small[:, None]
    assert not decide(small, "silhouette-scores", silhouette=silhouette(small, features=weak)).any()


def test_fastica_reduction_equals_arts_with_the_same_generator() -> None:
    art = pytest.importorskip("art.defences.detector.poison.activation_defence")
    x = activations_by_class()[0][0]
    np.random.seed(5)  # noqa: NPY002  ART's FastICA draws from the global generator
    theirs = art.reduce_dimensionality(x, nb_dims=10, reduce="FastICA")
    np.testing.assert_allclose(reduce_dimensionality(x, 10, "FastICA", random_state=5), theirs)
    np.testing.assert_allclose(
        reduce_dimensionality(x, 10, "PCA"), art.reduce_dimensionality(x, 10, reduce="PCA")
    )


def test_distance_analysis_flags_the_cluster_near_another_class() -> None:
    reduced = np.r_[np.zeros(8), np.full(4, 10.0)][:, None]
    labels = np.r_[np.zeros(8, int), np.ones(4, int)]
    assert np.array_equal(distance_analysis(labels, reduced, [np.array([9.0])]), labels == 1)
    assert not distance_analysis(labels, reduced, [np.array([-5.0])]).any()
    with pytest.raises(ValueError, match="exactly 2 clusters"):
        distance_analysis(np.r_[labels, 2], np.r_[reduced, [[1.0]]], [np.array([9.0])])


def test_spectral_signatures_scores_and_quantile() -> None:
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 1, (85, 20))
    direction = np.zeros(20)
    direction[3] = 1.0
    poison = rng.normal(0, 1, (15, 20)) + 6 * direction
    x = np.vstack([clean, poison])
    est = SpectralSignatures(expected_poison_rate=0.15, eps_multiplier=1.5).fit(x)
    centred = x - x.mean(0)
    np.testing.assert_allclose(est.score_, (centred @ est.direction_) ** 2)
    assert abs(est.direction_ @ direction) > 0.9
    # flags the top 1.5 * 15 % = 22.5 % of the scores, all the poison among them
    assert est.threshold_ == pytest.approx(np.quantile(est.score_, 1 - 0.225))
    assert est.flagged_.sum() in (22, 23) and est.flagged_[85:].all()
    assert SpectralSignatures(expected_poison_rate=0.9).fit(x).flagged_.sum() == 99
    with pytest.raises(ValueError, match="expected_poison_rate must lie in"):
        SpectralSignatures(expected_poison_rate=0).fit(x)


def test_raw_pixels_cluster_grayscale_images() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(90, 110, size=(40, 8, 8, 3)).astype(np.uint8)
    images[30:, 5:8, 5:8] = [245, 255, 0]  # sticker
    gray = to_grayscale(images)
    assert gray.shape == (40, 64) and gray.min() >= 0 and gray.max() <= 1
    assert gray[0, 0] == pytest.approx(images[0, 0, 0] @ [0.299, 0.587, 0.114] / 255)
    est = RawPixelClustering(nb_dims=5).fit(images)
    assert np.array_equal(est.flagged_, np.arange(40) >= 30)
    with pytest.raises(ValueError, match="shape \\(n, H, W, 3\\)"):
        to_grayscale(images[..., 0])
