"""Report figures of a detection method (poisonscan.figures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from poisonscan.figures import heatmap_tsne, save_method_figures

N = 40


@pytest.fixture(scope="module")
def class_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    poison = np.arange(N) >= 32
    heatmaps = rng.random((N, 8, 8))
    heatmaps[poison, 6:, 6:] += 5.0
    images = rng.integers(0, 256, size=(N, 32, 32, 3), dtype=np.uint8)
    return {"poison": poison, "heatmaps": heatmaps, "images": images}


def test_heatmap_tsne_separates_a_trigger_group_and_is_deterministic(
    class_data: dict[str, np.ndarray],
) -> None:
    xy = heatmap_tsne(class_data["heatmaps"], seed=1)
    assert xy.shape == (N, 2) and np.isfinite(xy).all()
    assert np.array_equal(xy, heatmap_tsne(class_data["heatmaps"], seed=1))
    poison = class_data["poison"]
    # the poisoned points' centre lies farther from the clean centre than their own spread
    gap = np.linalg.norm(xy[poison].mean(0) - xy[~poison].mean(0))
    assert gap > np.linalg.norm(xy[poison] - xy[poison].mean(0), axis=1).mean()
    assert heatmap_tsne(np.zeros((3, 4, 4))).shape == (3, 2)


def spectral_result(poison: np.ndarray) -> dict:
    labels = poison.astype(int)
    rng = np.random.default_rng(1)
    return {"labels": labels, "flagged": poison.copy(), "score": poison.astype(float),
            "k": 2, "method": "hc_l2", "eigenvalues": np.linspace(0, 1, 12) ** 2,
            "embedding": rng.random((len(poison), 2))}  # fmt: skip


def gw_kmeans_result(poison: np.ndarray) -> dict:
    bary = np.full((2, 4, 4), np.nan)
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    bary[0] = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    bary[1, :3, :3] = bary[0, :3, :3]
    return {"labels": poison.astype(int), "flagged": poison.copy(), "score": poison.astype(float),
            "k": 2, "method": "gw_kmeans", "barycenters": bary,
            "barycenter_sizes": np.array([4, 3])}  # fmt: skip


def ss_result(poison: np.ndarray) -> dict:
    flagged = np.arange(len(poison)) % 3 == 0
    return {"labels": flagged.astype(int), "flagged": flagged, "k": None, "method": "ss",
            "score": np.where(poison, 5.0, 1.0), "score_name": "projection"}  # fmt: skip


@pytest.mark.parametrize("make_result", [spectral_result, gw_kmeans_result, ss_result])
def test_save_method_figures_writes_both_pngs(
    make_result, class_data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    poison = class_data["poison"]
    xy = np.random.default_rng(2).random((N, 2))
    a, c = tmp_path / "a.png", tmp_path / "c.png"
    save_method_figures(make_result(poison), poison, class_data["heatmaps"],
                        class_data["images"], xy, a, c, "test")  # fmt: skip
    for path in (a, c):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_save_method_figures_rejects_misaligned_inputs(
    class_data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    poison = class_data["poison"]
    with pytest.raises(ValueError, match="tsne has 39 rows but the class has 40 samples"):
        save_method_figures(spectral_result(poison), poison, class_data["heatmaps"],
                            class_data["images"], np.zeros((N - 1, 2)), tmp_path / "a.png",
                            tmp_path / "c.png", "test")  # fmt: skip
    assert not (tmp_path / "a.png").exists()


def test_classical_mds_recovers_planar_points_up_to_isometry() -> None:
    from scipy.spatial.distance import pdist, squareform

    from poisonscan.figures import _classical_mds

    pts = np.random.default_rng(3).random((7, 2))
    d = squareform(pdist(pts))
    np.testing.assert_allclose(squareform(pdist(_classical_mds(d))), d, atol=1e-10)
    assert _classical_mds(np.zeros((1, 1))).shape == (1, 2)


def test_heatmap_tsne_of_identical_or_bad_heatmaps() -> None:
    # identical heatmaps: t-SNE would divide by a zero spread (sklearn crashes)
    assert not heatmap_tsne(np.ones((10, 4, 4))).any()
    bad = np.ones((10, 4, 4))
    bad[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"heatmaps \[3\] hold NaN"):
        heatmap_tsne(bad)


def test_clusters_figure_lists_flagged_clusters_first(
    class_data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    from poisonscan.figures import _clusters

    poison = class_data["poison"]
    # 13 labels: the noise label -1 is the largest cluster, then the flagged one (the
    # poison); a "largest first" montage would open with the noise
    labels = np.concatenate([np.repeat(np.arange(11), 2) + 1, np.full(10, -1), np.zeros(8)])
    result = {"labels": labels.astype(int), "flagged": poison.copy()}
    fig = _clusters(result, poison, class_data["heatmaps"], class_data["images"], "t", 1, 3)
    titles = [ax.get_title() for ax in fig.axes[::3]]
    assert titles[0].startswith("FLAGGED cluster 0") and len(titles) == 3
