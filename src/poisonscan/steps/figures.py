"""Rules embed (a t-SNE map per scenario) and figures (per detection method)."""

from __future__ import annotations

import numpy as np

from poisonscan.steps.common import PathLike, log
from poisonscan.storage import atomic_path


def embed_class(explanations: PathLike, out: PathLike, seed: int = 0) -> None:
    """2-D t-SNE of one class's heatmaps (shared by the figures of every method)."""
    from poisonscan.figures import heatmap_tsne
    from poisonscan.steps.cluster import class_array

    heatmaps = class_array(explanations, "heatmaps")
    log.info("t-SNE of %d heatmaps", len(heatmaps))
    xy = heatmap_tsne(heatmaps, seed=seed)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, tsne=xy)


def method_figures(
    clusters: PathLike,
    explanations: PathLike,
    dataset: PathLike,
    tsne: PathLike,
    analysis_png: PathLike,
    clusters_png: PathLike,
    title: str,
) -> None:
    """The analysis and clusters figures of one method (:mod:`poisonscan.figures`)."""
    from poisonscan.figures import save_method_figures
    from poisonscan.steps.cluster import class_array, read_clusters
    from poisonscan.storage import read_dataset

    result = read_clusters(clusters)
    index = class_array(explanations, "index")
    images = read_dataset(dataset).x_train[index]
    with np.load(tsne) as f:
        xy = f["tsne"]
    save_method_figures(result, class_array(explanations, "poison").astype(bool),
                        class_array(explanations, "heatmaps"), images, xy, analysis_png,
                        clusters_png, title)  # fmt: skip
    log.info("%s: figures written", result["method"])
