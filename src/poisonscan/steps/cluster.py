"""Rules cluster_distances, cluster_activations, evaluate and summary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from poisonscan import clustering, distances, evaluate
from poisonscan.steps.common import PathLike, log, write_json
from poisonscan.storage import atomic_path


def _save_clusters(out: PathLike, method: str, labels: np.ndarray, **arrays: Any) -> None:
    flagged = clustering.smaller_cluster(labels)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, labels=labels, flagged=flagged, **arrays)
    sizes = np.unique(labels, return_counts=True)[1].tolist()
    log.info("%s: cluster sizes %s, %d flagged", method, sizes, int(flagged.sum()))


def cluster_distances(distance_store: PathLike, out: PathLike, params: Mapping[str, Any]) -> None:
    """SpRAy spectral clustering of a distance matrix; the smaller cluster is flagged."""
    d = distances.read_distance_store(str(distance_store))
    est = clustering.SpectralRelevanceAnalysis(
        n_neighbors=params["n_neighbors"],
        n_clusters=params["n_clusters"],
        n_eigenvalues=params["n_eigenvalues"],
        random_state=params["seed"],
    ).fit(d)
    log.info("smallest eigenvalues of L_sym: %s", np.round(est.eigenvalues_[:8], 4).tolist())
    _save_clusters(
        out, "spray", est.labels_, eigenvalues=est.eigenvalues_, embedding=est.embedding_
    )


def cluster_activations(explanations: PathLike, out: PathLike, params: Mapping[str, Any]) -> None:
    """Activation Clustering baseline: PCA of penultimate activations, k-means."""
    act = zarr.open_group(str(explanations), mode="r")["activations"][...]
    est = clustering.ActivationClustering(
        n_components=params["n_components"],
        n_clusters=params["n_clusters"],
        random_state=params["seed"],
    ).fit(act)
    _save_clusters(out, "ac", est.labels_, embedding=est.embedding_)


def evaluate_scenario(
    explanations: PathLike,
    metrics: PathLike,
    clusters: Mapping[str, PathLike],
    out: PathLike,
    context: Mapping[str, Any],
) -> None:
    """Score every method's flags against the ground truth; one row per method."""
    poison = zarr.open_group(str(explanations), mode="r")["poison"][...].astype(bool)
    train_metrics = json.loads(Path(metrics).read_text())
    rows = []
    for method, path in sorted(clusters.items()):
        with np.load(path) as f:
            flagged = f["flagged"]
        rows.append(
            {
                **context,
                "method": method,
                "n": int(poison.size),
                "n_poison": int(poison.sum()),
                **evaluate.detection_metrics(flagged, poison),
                "clean_acc": train_metrics["clean_acc"],
                "asr": train_metrics["asr"],
            }
        )
    write_json(out, rows)


def summarize(evaluations: Sequence[PathLike], out: PathLike) -> str:
    """Collect the per-scenario evaluations into one CSV; return it as a text table."""
    rows = [row for path in evaluations for row in json.loads(Path(path).read_text())]
    evaluate.write_summary(out, rows)
    cols = ("scenario", "method", "n", "n_poison", "tn", "fp", "fn", "tp", "acc", "tpr", "tnr",
            "f1", "clean_acc", "asr")  # fmt: skip
    return evaluate.format_table(rows, cols)
