"""One function per workflow rule: paths and plain config dicts in, files out.

The Snakemake scripts in ``workflow/scripts/`` only unpack ``snakemake.*`` and
call these, so every step can also run (and be tested) without Snakemake.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from poisonscan import clustering, data, distances, evaluate, explain, gtsrb, training
from poisonscan.attacks import attack_from_config
from poisonscan.parallel import dask_client
from poisonscan.storage import atomic_path, read_dataset, write_dataset

__all__ = [
    "cluster_activations",
    "cluster_distances",
    "distances_euclidean",
    "distances_gw",
    "evaluate_scenario",
    "explain_target",
    "make_dataset",
    "poison_dataset",
    "setup_logging",
    "summarize",
    "train",
]

log = logging.getLogger("poisonscan")

PathLike = str | os.PathLike[str]


def setup_logging(path: PathLike | None = None, level: int = logging.INFO) -> None:
    """Send poisonscan's log and Python warnings to ``path`` (and stderr when no path)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(path, mode="w")]
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)


def _write_json(path: PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def _set_threads(threads: int) -> None:
    torch.set_num_threads(max(1, int(threads)))


# ---------------------------------------------------------------------------
# data and attacks
# ---------------------------------------------------------------------------


def make_dataset(out: PathLike, params: Mapping[str, Any], montage: PathLike | None = None) -> None:
    """Generate or import the dataset described by the ``dataset`` config section."""
    t0 = time.perf_counter()
    if params["name"] == "synthetic":
        ds = data.make_synthetic_signs(
            n_train_per_class=params["n_train_per_class"],
            n_test_per_class=params["n_test_per_class"],
            seed=params["seed"],
            image_size=params["image_size"],
        )
    elif params["name"] == "gtsrb":
        ds = gtsrb.load_gtsrb(params["path"], params["image_size"], params["crop_roi"])
    else:
        raise ValueError(f"unknown dataset {params['name']!r}; available: ['synthetic', 'gtsrb']")
    log.info(
        "%s: %d train / %d test images of %d classes in %.1f s", params["name"],
        len(ds.y_train), len(ds.y_test), ds.n_classes, time.perf_counter() - t0,
    )  # fmt: skip
    write_dataset(out, ds)
    if montage is not None:
        data.save_montage(ds, montage)


def poison_dataset(clean: PathLike, out: PathLike, scenario: Mapping[str, Any]) -> None:
    """Apply the scenario's attack to the clean dataset."""
    attack = attack_from_config(scenario)
    poisoned = attack.poison(read_dataset(clean))
    log.info(
        "%s: %d of %d training images poisoned (class %d -> %d), %d triggered test images",
        type(attack).__name__, int(poisoned.extra["poison_mask"].sum()), len(poisoned.y_train),
        attack.source, attack.target, len(poisoned.extra["x_test_triggered"]),
    )  # fmt: skip
    write_dataset(out, poisoned)


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def train(
    dataset: PathLike,
    checkpoint: PathLike,
    metrics: PathLike,
    model: Mapping[str, Any],
    params: Mapping[str, Any],
    threads: int = 1,
) -> None:
    """Train the configured model; write the checkpoint and a metrics JSON.

    Metrics: clean test accuracy, per-class accuracy, attack success rate
    (share of triggered source-class test images predicted as the target),
    per-epoch history, seconds.
    """
    _set_threads(threads)
    ds = read_dataset(dataset)
    device = training.select_device()
    log.info("training %s on %s (%d images)", model["name"], device, len(ds.y_train))
    result = training.train_model(
        ds, model["name"], training.TrainParams.from_config(params), device
    )
    pred = training.predict(result.model, result.normalization, ds.x_test)
    per_class = {str(c): float(np.mean(pred[ds.y_test == c] == c)) for c in np.unique(ds.y_test)}
    target = int(ds.meta.get("attack", {}).get("target", -1))
    triggered = ds.extra.get("x_test_triggered")
    asr = float("nan")
    if triggered is not None and target >= 0:
        asr = training.attack_success_rate(
            training.predict(result.model, result.normalization, triggered), target
        )
    out = {
        "clean_acc": float(np.mean(pred == ds.y_test)),
        "per_class_acc": per_class,
        "asr": asr,
        "epochs": len(result.history),
        "seconds": result.seconds,
        "device": str(device),
        "history": result.history,
    }
    log.info("clean test accuracy %.4f, attack success rate %.4f", out["clean_acc"], asr)
    training.save_checkpoint(
        checkpoint, result.model, model["name"], ds, result.normalization,
        extra={"training": dict(params), "dataset_meta": ds.meta},
    )  # fmt: skip
    _write_json(metrics, out)


# ---------------------------------------------------------------------------
# explanations
# ---------------------------------------------------------------------------


def explain_target(
    dataset: PathLike,
    checkpoint: PathLike,
    out: PathLike,
    scenario: Mapping[str, Any],
    params: Mapping[str, Any],
    threads: int = 1,
) -> None:
    """LRP heatmaps and activations of every training image labelled as the target class."""
    _set_threads(threads)
    ds = read_dataset(dataset)
    model, norm, meta = training.load_checkpoint(checkpoint)
    cls = int(scenario["target"])
    idx = np.flatnonzero(ds.y_train == cls)
    poison = ds.extra.get("poison_mask", np.zeros(len(ds.y_train), dtype=bool))[idx]
    log.info("explaining %d images of class %d (%d poisoned)", idx.size, cls, int(poison.sum()))
    explain.explain_class(
        model, norm, ds.x_train[idx], ds.y_train[idx], idx, poison, out, params,
        attrs={"class": cls, "model_sha256": meta.get("weights_sha256", "")},
    )  # fmt: skip


# ---------------------------------------------------------------------------
# distances
# ---------------------------------------------------------------------------


def distances_euclidean(explanations: PathLike, out: PathLike) -> None:
    """Euclidean distance matrix of the flattened heatmaps."""
    hm = zarr.open_group(str(explanations), mode="r")["heatmaps"][...]
    d = distances.euclidean_distances(hm)
    with atomic_path(out) as tmp:
        distances.write_distance_store(str(tmp), d, {"method": "euclidean"})
    log.info("euclidean distances of %d heatmaps written", len(d))


def distances_gw(
    explanations: PathLike,
    out: PathLike,
    params: Mapping[str, Any],
    cluster: Mapping[str, Any],
    threads: int = 1,
    performance_report: PathLike | None = None,
) -> None:
    """GW distance matrix over a Dask cluster, resumable across interruptions.

    Tiles are written to ``out + ".partial"`` (not a declared output, so
    Snakemake keeps it when the job fails) and the store is moved to ``out``
    once complete; a rerun resumes from the finished tiles.
    """
    from distributed import performance_report as dask_report

    cfg = dict(params)
    tile = int(cfg.pop("tile"))
    gw = distances.GWParams.from_config(cfg)
    work = f"{out}.partial"
    if Path(work).exists():
        attrs = zarr.open_group(work, mode="r").attrs
        found = {"params": attrs.get("params"), "tile": attrs.get("tile")}
        if found != {"params": gw.to_dict(), "tile": tile}:
            log.warning("discarding %s: made with other parameters %s", work, found)
            shutil.rmtree(work)
        else:
            log.info("resuming from %s", work)
    report = str(performance_report) if performance_report else os.devnull
    with dask_client(cluster, n_workers=threads) as client:
        log.info("dask cluster: %s", client)
        with dask_report(filename=report):
            distances.gw_distance_matrix(str(explanations), work, gw, client, tile=tile, log=log)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if Path(out).exists():
        shutil.rmtree(out)
    os.replace(work, out)


# ---------------------------------------------------------------------------
# clustering and evaluation
# ---------------------------------------------------------------------------


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
    _write_json(out, rows)


def summarize(evaluations: Sequence[PathLike], out: PathLike) -> str:
    """Collect the per-scenario evaluations into one CSV; return it as a text table."""
    rows = [row for path in evaluations for row in json.loads(Path(path).read_text())]
    evaluate.write_summary(out, rows)
    cols = ("scenario", "method", "n", "n_poison", "tn", "fp", "fn", "tp", "acc", "tpr", "tnr",
            "f1", "clean_acc", "asr")  # fmt: skip
    return evaluate.format_table(rows, cols)
