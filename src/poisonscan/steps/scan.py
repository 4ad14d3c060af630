"""Rule scan (rules/scan.smk): SpRAy on every class, the classes ranked by suspicion."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import clustering, distances
from poisonscan.explain.store import (
    check_heatmaps,
    check_model,
    class_group_path,
    read_group_array,
    store_classes,
)
from poisonscan.storage import atomic_path, write_csv

__all__ = ["SCAN_COLUMNS", "plot_scan", "scan_classes"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

SCAN_COLUMNS: tuple[str, ...] = (
    "distance", "class", "is_target", "rank", "cluster_separation", "separation", "flagged_share",
    "n", "n_poison", "k", "n_groups", "eigengap", "min_share", "silhouette",
)  # fmt: skip


def scan_classes(
    explanations: PathLike,
    out_csv: PathLike,
    out_png: PathLike | None,
    spray: Mapping[str, Any],
    decision: Mapping[str, Any],
    target: int | None = None,
    sidecar: PathLike | None = None,
    gw: PathLike | None = None,
) -> dict[str, int | None]:
    """SpRAy on the heatmap distances of every class; rank the classes per distance.

    The rank follows the cluster separation: the largest separation of one minority
    SpRAy cluster's mean heatmap from the rest's
    (:func:`poisonscan.clustering.class_suspicion`), scaled by the class's median
    Euclidean heatmap distance for every distance. The separation of the decision
    rule's flags is reported beside it.

    Parameters
    ----------
    explanations : path
        The explanation store (``explain.zarr``, one group per class).
    out_csv : path
        One row per distance and class (:data:`SCAN_COLUMNS`), sorted by ``distance`` and
        ``rank`` (1 = most suspicious); ``is_target`` marks the scenario's target class.
    out_png : path or None
        Bar plot of the criteria per class (:func:`plot_scan`).
    spray, decision : mapping
        The ``clustering.spray`` and ``clustering.decision`` sections; the eigengap
        always chooses k.
    target : int, optional
        The attacked class, to report its rank.
    sidecar : path, optional
        The checkpoint's sidecar, checked against the store's ``model_sha256``.
    gw : path, optional
        The GW kNN matrices of every class (``distances/gw_classes.zarr``, rule
        ``distances_gw_classes``): the classes are then also ranked by SpRAy on GW.

    Returns
    -------
    dict
        Per distance (``"l2"``, and ``"gw"`` with ``gw``) the rank of ``target`` (None
        without a target or if it has no group).
    """
    if sidecar is not None:
        check_model(explanations, sidecar)
    rows: dict[str, list[dict[str, Any]]] = {"l2": []} | ({"gw": []} if gw is not None else {})
    for cls in store_classes(explanations):
        group = class_group_path(explanations, cls)
        heatmaps = read_group_array(group, "heatmaps")
        base: dict[str, Any] = {
            "class": cls,
            "n_poison": int(read_group_array(group, "poison").sum()),
            "is_target": target is not None and cls == int(target),
        }
        d = distances.euclidean_distances(heatmaps) if len(heatmaps) else np.zeros((0, 0))
        found = {"l2": clustering.class_suspicion(heatmaps, d, spray, decision)}
        if gw is not None:
            gw_class = f"{gw}/{cls}"
            check_heatmaps(gw_class, group)
            d_gw = distances.read_distance_store(gw_class)
            found["gw"] = clustering.class_suspicion(heatmaps, d_gw, spray, decision, euclidean=d)
        for name, row in found.items():
            rows[name].append({"distance": name, **base, **row})
            log.info("%s, class %d: n=%d k=%d cluster separation=%.3f flagged=%.3f "
                     "separation=%.3f", name, cls, row["n"], row["k"], row["cluster_separation"],
                     row["flagged_share"], row["separation"])  # fmt: skip
    ranked: list[dict[str, Any]] = []
    target_rank: dict[str, int | None] = {}
    for name, per_class in rows.items():
        ranks = sorted(clustering.rank_classes(per_class), key=lambda r: r["rank"])
        target_rank[name] = next((r["rank"] for r in ranks if r["is_target"]), None)
        log.info("%s: target class %s ranks %s of %d", name, target, target_rank[name],
                 len(ranks))  # fmt: skip
        ranked += ranks
    write_csv(out_csv, ranked, SCAN_COLUMNS)
    if out_png is not None:
        plot_scan(ranked, out_png, target_rank)
    return target_rank


def plot_scan(
    rows: list[dict[str, Any]], out: PathLike, target_rank: Mapping[str, int | None] | None = None
) -> None:
    """Bar plots of the scan criteria per class (the ranking's first), one column per distance;
    the target class in red."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(r["distance"] for r in rows))
    target_rank = target_rank or {}
    panels = (("cluster_separation", "largest separation of a minority cluster (ranks)"),
              ("separation", "separation of the decision rule's flags"),
              ("flagged_share", "share of the class flagged by the rule"),
              ("eigengap", "eigengap at the chosen k"),
              ("silhouette", "silhouette of the SpRAy clusters"))  # fmt: skip
    n_classes = len({r["class"] for r in rows})
    fig = Figure(figsize=(max(6.0, 0.3 * n_classes) * len(names), 2.25 * len(panels)))
    axes = fig.subplots(len(panels), len(names), sharex=True, squeeze=False)
    for col, name in enumerate(names):
        mine = sorted((r for r in rows if r["distance"] == name), key=lambda r: r["class"])
        classes = [str(r["class"]) for r in mine]
        colours = ["tab:red" if r["is_target"] else "tab:blue" for r in mine]
        for ax, (key, label) in zip(axes[:, col], panels, strict=True):
            ax.bar(range(len(mine)), [float(r[key]) for r in mine], color=colours)
            ax.set_ylabel(key)
            ax.set_title(f"{name}: {label}", fontsize=9)
        axes[-1, col].set_xticks(range(len(mine)), classes, fontsize=7)
        axes[-1, col].set_xlabel("class")
    ranks = ", ".join(f"{n} rank {r} of {n_classes}" for n, r in target_rank.items() if r)
    title = "Whole-dataset scan: SpRAy per class"
    if ranks:
        title += f" (target class in red: {ranks})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
