"""Rules aggregate (mean and sd over repetitions, reference-style tables), embed and figures."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from poisonscan import experiments
from poisonscan.steps.common import PathLike, log
from poisonscan.storage import atomic_path


def aggregate_summary(
    summary: PathLike, table_csv: PathLike, table_md: PathLike, methods: Sequence[str]
) -> None:
    """Fold the summary rows of repeated scenarios into mean ± sd per grid point and method."""
    with open(summary, newline="") as f:
        rows = list(csv.DictReader(f))
    agg = experiments.aggregate(rows)
    with atomic_path(table_csv) as tmp, open(tmp, "w", newline="") as f:
        fields = list(agg[0]) if agg else ["matrix_block", "grid_point", "method", "n"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(agg)
    with atomic_path(table_md) as tmp:
        Path(tmp).write_text(experiments.markdown_tables(agg, methods))
    log.info("%d summary rows -> %d aggregated rows", len(rows), len(agg))


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
