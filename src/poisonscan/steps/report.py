"""Rules aggregate, embed and figures (rules/report.smk): the tables over repetitions,
a t-SNE map per scenario and the figures of every detection method."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from poisonscan import experiments
from poisonscan.detectors import read_detection
from poisonscan.explain.store import read_group_array
from poisonscan.storage import atomic_path, read_dataset, read_npz, write_csv, write_npz

__all__ = ["aggregate_summary", "embed_class", "method_figures"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def aggregate_summary(
    summary: PathLike, table_csv: PathLike, table_md: PathLike, methods: Sequence[str]
) -> None:
    """Fold the summary rows of repeated scenarios into mean ± sd per grid point and method."""
    with open(summary, newline="") as f:
        rows = list(csv.DictReader(f))
    agg = experiments.aggregate(rows)
    write_csv(table_csv, agg, None if agg else ["matrix_block", "grid_point", "method", "n"])
    with atomic_path(table_md) as tmp:
        Path(tmp).write_text(experiments.markdown_tables(agg, methods))
    log.info("%d summary rows -> %d aggregated rows", len(rows), len(agg))


def embed_class(explanations: PathLike, out: PathLike, seed: int = 0) -> None:
    """2-D t-SNE of one class's heatmaps (shared by the figures of every method)."""
    from poisonscan.figures import heatmap_tsne

    heatmaps = read_group_array(explanations, "heatmaps")
    log.info("t-SNE of %d heatmaps", len(heatmaps))
    write_npz(out, tsne=heatmap_tsne(heatmaps, seed=seed))


def method_figures(
    detection: PathLike,
    explanations: PathLike,
    dataset: PathLike,
    tsne: PathLike,
    analysis_png: PathLike,
    clusters_png: PathLike,
    title: str,
) -> None:
    """The analysis and clusters figures of one method (:mod:`poisonscan.figures`)."""
    from poisonscan.figures import save_method_figures

    result = read_detection(detection)
    index = read_group_array(explanations, "index")
    images = read_dataset(dataset).x_train[index]
    save_method_figures(result, read_group_array(explanations, "poison").astype(bool),
                        read_group_array(explanations, "heatmaps"), images,
                        read_npz(tsne)["tsne"], analysis_png, clusters_png, title)  # fmt: skip
    log.info("%s: figures written", result["method"])
