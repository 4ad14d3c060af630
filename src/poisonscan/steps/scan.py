"""Rules scan (whole-dataset scan), retrain_filtered and removal (removal and retraining)."""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from poisonscan import clustering, distances, removal
from poisonscan.steps.cluster import class_array, read_clusters
from poisonscan.steps.common import PathLike, log, write_json
from poisonscan.storage import atomic_path, read_dataset, write_dataset

__all__ = ["SCAN_COLUMNS", "plot_scan", "removal_table", "retrain_filtered", "scan_classes"]

SCAN_COLUMNS: tuple[str, ...] = (
    "class", "is_target", "rank", "separation", "flagged_share", "n", "n_poison", "k",
    "n_groups", "eigengap", "min_share", "silhouette",
)  # fmt: skip


def _write_csv(path: PathLike, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def scan_classes(
    explanations: PathLike,
    out_csv: PathLike,
    out_png: PathLike | None,
    params: Mapping[str, Any],
    target: int | None = None,
    decision: Mapping[str, Any] | None = None,
) -> int | None:
    """SpRAy on the Euclidean heatmap distances of every class; rank the classes.

    The rank follows the separation of the flagged samples' mean heatmap from
    the rest's (:func:`poisonscan.clustering.class_suspicion`).

    Parameters
    ----------
    explanations : path
        The explanation store (``explain.zarr``, one group per class).
    out_csv : path
        One row per class (:data:`SCAN_COLUMNS`), sorted by ``rank``
        (1 = most suspicious); ``is_target`` marks the scenario's target class.
    out_png : path or None
        Bar plot of the criteria per class (:func:`plot_scan`).
    params : mapping
        SpRAy hyper-parameters (the ``clustering`` section's SpRAy keys; ``seed``
        is the random state); the eigengap always chooses k.
    target : int, optional
        The attacked class, to report its rank.
    decision : mapping, optional
        The decision rule (``clustering`` keys ``decision_rule``, ``size_threshold``,
        ``silhouette_threshold``); default size-gap.

    Returns
    -------
    int or None
        Rank of ``target`` (None without a target or if it has no group).
    """
    from poisonscan.explain.store import class_group_path, store_classes

    p = {k: v for k, v in params.items() if k not in ("single_group_no_flag", "n_clusters")}
    no_flag_one_group = bool(params.get("single_group_no_flag", False))
    if "seed" in p:
        p["random_state"] = p.pop("seed")
    rows = []
    for cls in store_classes(explanations):
        group = class_group_path(explanations, cls)
        heatmaps = class_array(group, "heatmaps")
        row: dict[str, Any] = {"class": cls, "n_poison": int(class_array(group, "poison").sum())}
        d = distances.euclidean_distances(heatmaps) if len(heatmaps) else np.zeros((0, 0))
        row.update(clustering.class_suspicion(heatmaps, d, p, decision, no_flag_one_group))
        row["is_target"] = target is not None and cls == int(target)
        rows.append(row)
        log.info("class %d: n=%d k=%d flagged=%.3f separation=%.3f", cls, row["n"], row["k"],
                 row["flagged_share"], row["separation"])  # fmt: skip
    ranked = sorted(clustering.rank_classes(rows), key=lambda r: r["rank"])
    _write_csv(out_csv, ranked, SCAN_COLUMNS)
    target_rank = next((r["rank"] for r in ranked if r["is_target"]), None)
    log.info("target class %s ranks %s of %d", target, target_rank, len(ranked))
    if out_png is not None:
        plot_scan(ranked, out_png, target_rank)
    return target_rank


def plot_scan(rows: list[dict[str, Any]], out: PathLike, target_rank: int | None = None) -> None:
    """Bar plot of the scan criteria per class (separation first); the target class in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["class"])
    classes = [str(r["class"]) for r in rows]
    colours = ["tab:red" if r["is_target"] else "tab:blue" for r in rows]
    panels = (("separation", "separation of the flagged mean heatmap (ranks the classes)"),
              ("flagged_share", "share of the class flagged"),
              ("eigengap", "eigengap at the chosen k"),
              ("silhouette", "silhouette of the SpRAy clusters"))  # fmt: skip
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.3 * len(rows)), 9), sharex=True)
    for ax, (key, label) in zip(axes, panels, strict=True):
        ax.bar(classes, [float(r[key]) for r in rows], color=colours)
        ax.set_ylabel(key)
        ax.set_title(label, fontsize=9)
    axes[-1].set_xlabel("class")
    title = "Whole-dataset scan: SpRAy per class"
    if target_rank is not None:
        title += f" (target class in red, rank {target_rank} of {len(rows)})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def retrain_filtered(
    dataset: PathLike,
    out: PathLike,
    model: Mapping[str, Any],
    training: Mapping[str, Any],
    clusters: PathLike | None = None,
    explanations: PathLike | None = None,
    name: str | None = None,
    threads: int = 1,
) -> None:
    """Retrain on the training set minus the flagged samples (or minus the true poison).

    Parameters
    ----------
    dataset : path
        The poisoned training set (HDF5).
    out : path
        JSON: a row of :data:`poisonscan.removal.REMOVAL_COLUMNS` plus the
        retrained model's full metrics under ``metrics``.
    model, training : mapping
        The ``model`` and ``training`` config sections (as for rule train).
    clusters : path, optional
        A method's ``.npz``; its ``flagged`` samples are removed. Without it the
        *perfect filter* removes exactly the poison (``poison_mask``).
    explanations : path, optional
        Zarr group of the analysed class (``index``: the flagged samples'
        positions in the training set); required with ``clusters``.
    name : str, optional
        Filter name in the output (default: the method, or ``"perfect"``).
    """
    from poisonscan.steps.train import train

    ds = read_dataset(dataset)
    n = len(ds.y_train)
    poison = np.asarray(ds.extra.get("poison_mask", np.zeros(n, dtype=bool)), dtype=bool)
    if clusters is None:
        remove, name = poison.copy(), name or "perfect"
    else:
        if explanations is None:
            raise ValueError("retraining on a method's flags needs the class group (index)")
        res = read_clusters(clusters)
        index = class_array(str(explanations), "index")
        remove = removal.removal_mask(n, index, res["flagged"])
        name = name or res["method"]
    n_removed, n_hit = int(remove.sum()), int((remove & poison).sum())
    log.info("%s: removing %d of %d training samples (%d of %d poisoned)",
             name, n_removed, n, n_hit, int(poison.sum()))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="retrain-") as tmp:
        filtered = Path(tmp) / "filtered.h5"
        write_dataset(filtered, removal.filter_training_set(ds, remove))
        metrics_path = Path(tmp) / "metrics.json"
        train(filtered, Path(tmp) / "model.safetensors", metrics_path, model, training,
              threads=threads)  # fmt: skip
        metrics = json.loads(metrics_path.read_text())
    row = removal.removal_row(name, remove, poison, metrics)
    log.info("%s: clean accuracy %.4f, ASR %.4f after removal", name, row["clean_acc"], row["asr"])
    write_json(out, {**row, "metrics": metrics})


def removal_table(
    undefended: PathLike,
    dataset: PathLike,
    retrained: Mapping[str, PathLike],
    out: PathLike,
) -> list[dict[str, Any]]:
    """The removal table: undefended model, every retrained filter (perfect included).

    Parameters
    ----------
    undefended : path
        Metrics JSON of the model trained on the full poisoned set.
    dataset : path
        The poisoned training set (for the poison count of the undefended row).
    retrained : mapping of filter name to the JSON of :func:`retrain_filtered`
    out : path
        CSV with :data:`poisonscan.removal.REMOVAL_COLUMNS`.
    """
    ds = read_dataset(dataset)
    n = len(ds.y_train)
    poison = np.asarray(ds.extra.get("poison_mask", np.zeros(n, dtype=bool)), dtype=bool)
    metrics = json.loads(Path(undefended).read_text())
    rows = [removal.removal_row("none", np.zeros(n, dtype=bool), poison, metrics)]
    for name, path in retrained.items():
        row = json.loads(Path(path).read_text())
        rows.append({k: row[k] for k in removal.REMOVAL_COLUMNS} | {"filter": name})
    _write_csv(out, rows, removal.REMOVAL_COLUMNS)
    for r in rows:
        log.info("%-12s removed %5d (poison %4d of %4d): clean acc %.4f, ASR %.4f", r["filter"],
                 r["n_removed"], r["n_poison_removed"], r["n_poison"], r["clean_acc"],
                 r["asr"])  # fmt: skip
    return rows
