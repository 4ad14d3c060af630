"""Rule scan (rules/scan.smk): SpRAy on every class, the classes ranked by suspicion."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import clustering, distances
from poisonscan.explain.store import check_model, class_group_path, read_group_array, store_classes
from poisonscan.storage import atomic_path, write_csv

__all__ = ["SCAN_COLUMNS", "plot_scan", "scan_classes"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

SCAN_COLUMNS: tuple[str, ...] = (
    "class", "is_target", "rank", "separation", "flagged_share", "n", "n_poison", "k",
    "n_groups", "eigengap", "min_share", "silhouette",
)  # fmt: skip


def scan_classes(
    explanations: PathLike,
    out_csv: PathLike,
    out_png: PathLike | None,
    spray: Mapping[str, Any],
    decision: Mapping[str, Any],
    target: int | None = None,
    sidecar: PathLike | None = None,
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
    spray, decision : mapping
        The ``clustering.spray`` and ``clustering.decision`` sections; the eigengap
        always chooses k.
    target : int, optional
        The attacked class, to report its rank.
    sidecar : path, optional
        The checkpoint's sidecar, checked against the store's ``model_sha256``.

    Returns
    -------
    int or None
        Rank of ``target`` (None without a target or if it has no group).
    """
    if sidecar is not None:
        check_model(explanations, sidecar)
    rows = []
    for cls in store_classes(explanations):
        group = class_group_path(explanations, cls)
        heatmaps = read_group_array(group, "heatmaps")
        row: dict[str, Any] = {
            "class": cls,
            "n_poison": int(read_group_array(group, "poison").sum()),
        }
        d = distances.euclidean_distances(heatmaps) if len(heatmaps) else np.zeros((0, 0))
        row.update(clustering.class_suspicion(heatmaps, d, spray, decision))
        row["is_target"] = target is not None and cls == int(target)
        rows.append(row)
        log.info("class %d: n=%d k=%d flagged=%.3f separation=%.3f", cls, row["n"], row["k"],
                 row["flagged_share"], row["separation"])  # fmt: skip
    ranked = sorted(clustering.rank_classes(rows), key=lambda r: r["rank"])
    write_csv(out_csv, ranked, SCAN_COLUMNS)
    target_rank = next((r["rank"] for r in ranked if r["is_target"]), None)
    log.info("target class %s ranks %s of %d", target, target_rank, len(ranked))
    if out_png is not None:
        plot_scan(ranked, out_png, target_rank)
    return target_rank


def plot_scan(rows: list[dict[str, Any]], out: PathLike, target_rank: int | None = None) -> None:
    """Bar plot of the scan criteria per class (separation first); the target class in red."""
    from matplotlib.figure import Figure

    rows = sorted(rows, key=lambda r: r["class"])
    classes = [str(r["class"]) for r in rows]
    colours = ["tab:red" if r["is_target"] else "tab:blue" for r in rows]
    panels = (("separation", "separation of the flagged mean heatmap (ranks the classes)"),
              ("flagged_share", "share of the class flagged"),
              ("eigengap", "eigengap at the chosen k"),
              ("silhouette", "silhouette of the SpRAy clusters"))  # fmt: skip
    fig = Figure(figsize=(max(6.0, 0.3 * len(rows)), 9))
    axes = fig.subplots(len(panels), 1, sharex=True)
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
