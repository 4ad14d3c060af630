"""Report figures of one detection method on one analysed class.

Two PNGs per method (:func:`save_method_figures`):

- **analysis**: the method's own diagnostic (SpRAy: eigenvalue spectrum with
  the gap after the k used marked and the spectral embedding; GW k-means: an MDS
  embedding of each barycentre's support; others: the poison score by ground
  truth), a 2-D t-SNE of the heatmaps coloured by ground truth and by cluster,
  and the confusion table;
- **clusters**: one row per cluster (flagged ones first and marked, then the
  largest): the cluster's mean heatmap, then sample images with their heatmaps.

The t-SNE is computed once per class (:func:`heatmap_tsne`) and shared by the
methods, so that their clusterings are drawn on the same map.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan.explain.montage import spread_picks, upsample_heatmap
from poisonscan.storage import atomic_path

__all__ = ["heatmap_tsne", "save_method_figures"]

PathLike = str | os.PathLike[str]
_TRUTH_COLOURS = {False: "tab:blue", True: "tab:red"}


def heatmap_tsne(heatmaps: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of flattened heatmaps (PCA to at most 50 dims first, as usual for t-SNE).

    Parameters
    ----------
    heatmaps : ndarray of shape (n, H, W)
    seed : int

    Returns
    -------
    ndarray of shape (n, 2); all zeros for fewer than 4 heatmaps or identical ones.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(heatmaps)
    flat = np.asarray(heatmaps, dtype=np.float64).reshape(n, -1)
    if not np.isfinite(flat).all():
        bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
        raise ValueError(f"heatmaps {bad[:10].tolist()} hold NaN or inf")
    # too few points, or all heatmaps equal (t-SNE would divide by a zero spread)
    if n < 4 or not np.ptp(flat, axis=0).any():
        return np.zeros((n, 2))
    dims = min(50, n - 1, flat.shape[1])
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(flat)
    perplexity = float(min(30.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(reduced)


def _confusion(ax: Any, poison: np.ndarray, flagged: np.ndarray) -> None:
    tp = int(np.sum(flagged & poison))
    fp = int(np.sum(flagged & ~poison))
    fn = int(np.sum(~flagged & poison))
    tn = int(np.sum(~flagged & ~poison))
    cells = [[str(tp), str(fn)], [str(fp), str(tn)]]
    table = ax.table(cellText=cells, rowLabels=["poisoned", "clean"],
                     colLabels=["flagged", "kept"], loc="center", cellLoc="center")  # fmt: skip
    table.scale(1.0, 2.2)
    tpr = tp / (tp + fn) if tp + fn else float("nan")
    tnr = tn / (tn + fp) if tn + fp else float("nan")
    ax.set_title(f"confusion: TPR {tpr:.3f}, TNR {tnr:.3f}", fontsize=9)
    ax.axis("off")


def _scatter(ax: Any, xy: np.ndarray, colours: list[str], title: str) -> None:
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=4, linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _cluster_colours(labels: np.ndarray) -> list[str]:
    """One colour per cluster (tab20); HDBSCAN's noise label -1 in grey."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    values = {v: i for i, v in enumerate(v for v in np.unique(labels) if v != -1)}
    return [
        "#b0b0b0" if v == -1 else matplotlib.colors.to_hex(cmap(values[v] % 20)) for v in labels
    ]


def _spectrum(ax: Any, eigenvalues: np.ndarray, k: int) -> None:
    idx = np.arange(1, len(eigenvalues) + 1)
    ax.plot(idx, eigenvalues, "o-", ms=3)
    if 1 <= k < len(eigenvalues):
        ax.axvspan(k + 0.1, k + 0.9, color="tab:orange", alpha=0.3,
                   label=f"gap after k = {k}")  # fmt: skip
        ax.legend(fontsize=8)
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue of L_sym")
    ax.set_title("SpRAy eigenvalue spectrum", fontsize=9)


def _classical_mds(dissimilarity: np.ndarray) -> np.ndarray:
    """2-D classical (Torgerson) MDS: top eigenvectors of the double-centred squared matrix."""
    n = len(dissimilarity)
    centre = np.eye(n) - np.full((n, n), 1.0 / n)
    gram = -0.5 * centre @ (dissimilarity**2) @ centre
    vals, vecs = np.linalg.eigh(gram)
    top = np.argsort(vals)[::-1][:2]
    xy = vecs[:, top] * np.sqrt(np.clip(vals[top], 0.0, None))
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))


def _barycentres(ax: Any, barycentres: np.ndarray, sizes: np.ndarray) -> None:
    """MDS embedding of each barycentre's support (its cost matrix as dissimilarities)."""
    for j, (cost, size) in enumerate(zip(barycentres, sizes, strict=True)):
        c = np.asarray(cost[:size, :size], dtype=np.float64)
        c = np.clip((c + c.T) / 2, 0.0, None)  # barycentre costs are symmetric up to rounding
        np.fill_diagonal(c, 0.0)
        xy = _classical_mds(c)
        ax.scatter(xy[:, 0], xy[:, 1], s=20, label=f"centre {j} ({size} points)")
    ax.legend(fontsize=7)
    ax.set_title("GW barycentres: MDS of their support", fontsize=9)


def _score_by_truth(ax: Any, score: np.ndarray, poison: np.ndarray, name: str) -> None:
    finite = np.isfinite(score)
    bins = np.histogram_bin_edges(score[finite], bins=40) if finite.any() else 10
    for truth, label in ((False, "clean"), (True, "poisoned")):
        sel = finite & (poison == truth)
        if sel.any():
            ax.hist(score[sel], bins=bins, alpha=0.6, color=_TRUTH_COLOURS[truth], label=label)
    ax.set_xlabel(name or "poison score")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    ax.set_title("poison score by ground truth", fontsize=9)


def _analysis(result: Mapping[str, Any], poison: np.ndarray, tsne: np.ndarray, title: str) -> Any:
    """Two rows of three panels (readable at the report's width): the method's own
    diagnostic, the t-SNE maps by ground truth and by the method's result, the score
    histogram and the confusion table."""
    from matplotlib.figure import Figure

    labels = np.asarray(result["labels"])
    flagged = np.asarray(result["flagged"], dtype=bool)
    score = np.asarray(result["score"], dtype=np.float64)
    truth = [_TRUTH_COLOURS[bool(p)] for p in poison]
    clusters = result.get("k", -1) is not None  # Spectral Signatures (k None) has no clusters
    fig = Figure(figsize=(10.5, 6.6), layout="constrained")
    axes = fig.subplots(2, 3)
    first, second = axes[0, 0], axes[0, 1]
    if "eigenvalues" in result:
        _spectrum(first, np.asarray(result["eigenvalues"]), int(result["k"] or 0))
        emb = np.asarray(result["embedding"])
        if emb.shape[1] >= 2:
            _scatter(second, emb[:, :2], truth, "spectral embedding (red: poisoned)")
        else:
            second.axis("off")
    elif "barycenters" in result:
        _barycentres(first, np.asarray(result["barycenters"]),
                     np.asarray(result["barycenter_sizes"]))  # fmt: skip
        second.axis("off")
    else:
        first.axis("off")
        second.axis("off")
    _scatter(axes[0, 2], tsne, truth, "t-SNE of heatmaps: ground truth (red: poisoned)")
    if clusters:
        _scatter(axes[1, 0], tsne, _cluster_colours(labels), "t-SNE of heatmaps: clusters")
    else:
        flags = [_TRUTH_COLOURS[bool(f)] for f in flagged]
        _scatter(axes[1, 0], tsne, flags, "t-SNE of heatmaps: flagged (red)")
    _score_by_truth(axes[1, 1], score, poison, str(result.get("score_name", "")))
    _confusion(axes[1, 2], poison, flagged)
    fig.suptitle(title, fontsize=10)
    return fig


def _clusters(
    result: Mapping[str, Any],
    poison: np.ndarray,
    heatmaps: np.ndarray,
    images: np.ndarray,
    title: str,
    per_cluster: int,
    max_clusters: int,
) -> Any:
    from matplotlib.figure import Figure

    labels = np.asarray(result["labels"])
    flagged = np.asarray(result["flagged"], dtype=bool)
    values, counts = np.unique(labels, return_counts=True)
    # flagged clusters first (the ones a user checks), then the largest
    is_flagged = np.array([flagged[labels == v].any() for v in values])
    order = values[np.lexsort((-counts, ~is_flagged))][:max_clusters]
    cols = 1 + 2 * per_cluster
    fig = Figure(figsize=(1.1 * cols, 1.25 * len(order) + 0.6))
    axes = np.asarray(fig.subplots(len(order), cols, squeeze=False))
    for row, value in zip(axes, order, strict=True):
        members = np.flatnonzero(labels == value)
        n_poison = int(poison[members].sum())
        mark = "FLAGGED " if flagged[members].any() else ""
        mean = heatmaps[members].mean(axis=0)
        row[0].imshow(mean, cmap="hot")
        # a method without clusters (Spectral Signatures) has two groups: flagged and kept
        group = f"cluster {value}" if result.get("k", -1) is not None else ("" if mark else "kept")
        row[0].set_title(f"{mark}{group}\nn={members.size}, poisoned {n_poison}",
                         fontsize=6, color="tab:red" if mark else "black")  # fmt: skip
        picks = spread_picks(members, per_cluster)
        for j in range(per_cluster):
            ax_img, ax_hm = row[1 + 2 * j], row[2 + 2 * j]
            if j < picks.size:
                i = picks[j]
                ax_img.imshow(images[i])
                ax_hm.imshow(upsample_heatmap(heatmaps[i], images.shape[1:3]), cmap="hot")
                if poison[i]:
                    ax_img.set_title("poisoned", fontsize=6, color="tab:red")
        for ax in row:
            ax.axis("off")
    per = "per cluster" if result.get("k", -1) is not None else "of the flagged and the kept"
    fig.suptitle(f"{title}: mean heatmap and samples {per} (image, then its heatmap)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


def save_method_figures(
    result: Mapping[str, Any],
    poison: np.ndarray,
    heatmaps: np.ndarray,
    images: np.ndarray,
    tsne: np.ndarray,
    analysis_png: PathLike,
    clusters_png: PathLike,
    title: str,
    per_cluster: int = 4,
    max_clusters: int = 10,
) -> None:
    """Write the analysis and clusters figures of one method (atomically).

    Parameters
    ----------
    result : mapping
        The method's clusters file (:func:`poisonscan.steps.cluster.read_clusters`):
        ``labels``, ``flagged``, ``score``, ``k`` and the method's extras
        (``eigenvalues`` and ``embedding`` for SpRAy; ``barycenters`` and
        ``barycenter_sizes`` for GW k-means).
    poison : ndarray of shape (n,), bool
        Ground truth.
    heatmaps : ndarray of shape (n, h, w)
    images : ndarray of shape (n, H, W, C), uint8
        The analysed images, aligned with ``heatmaps``.
    tsne : ndarray of shape (n, 2)
        From :func:`heatmap_tsne`.
    analysis_png, clusters_png : path
    title : str
    per_cluster : int, default 4
        Sample images per cluster row.
    max_clusters : int, default 10
        Rows of the clusters figure (flagged clusters first, then the largest).
    """
    poison = np.asarray(poison, dtype=bool)
    n = poison.size
    for name, arr in (("labels", result["labels"]), ("heatmaps", heatmaps), ("images", images),
                      ("tsne", tsne)):  # fmt: skip
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} rows but the class has {n} samples")
    for fig, path in ((_analysis(result, poison, np.asarray(tsne), title), analysis_png),
                      (_clusters(result, poison, np.asarray(heatmaps), np.asarray(images), title,
                                 per_cluster, max_clusters), clusters_png)):  # fmt: skip
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
