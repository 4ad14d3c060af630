"""Rules distances_l2 and distances_gw (rules/distances.smk)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr

from poisonscan import distances
from poisonscan.explain.store import (
    array_sha256,
    check_model,
    class_group_path,
    heatmap_group,
    heatmaps_sha256,
    read_group_array,
    store_classes,
)
from poisonscan.parameters import merge_performance
from poisonscan.storage import StoreError, atomic_path, store_root, write_json

__all__ = ["GW_MODES", "distances_euclidean", "distances_gw", "distances_gw_classes"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

GW_MODES = ("full", "knn")


def _checked_heatmaps(
    explanations: PathLike, sidecar: PathLike | None
) -> tuple[str, Any, dict[str, str]]:
    """The heatmap group, its checked heatmaps and their provenance (attributes of the
    distance store: what detectors compare with the explanation store)."""
    group = heatmap_group(explanations)
    if sidecar is not None:
        check_model(group, sidecar)
    hm = read_group_array(group, "heatmaps")
    model = zarr.open_group(str(store_root(group)), mode="r").attrs.get("model_sha256", "")
    return group, hm, {"heatmaps_sha256": array_sha256(hm), "model_sha256": model}


def distances_euclidean(
    explanations: PathLike, out: PathLike, sidecar: PathLike | None = None
) -> None:
    """Euclidean distance matrix of the flattened heatmaps.

    ``explanations``: a zarr group holding ``heatmaps`` (n, H, W), or an explanation
    store (then its target class group is used). ``sidecar``: the checkpoint's
    sidecar, checked against the store's ``model_sha256``
    (:func:`~poisonscan.explain.store.check_model`).
    """
    _, hm, provenance = _checked_heatmaps(explanations, sidecar)
    d = distances.euclidean_distances(hm)
    with atomic_path(out) as tmp:
        distances.write_distance_store(str(tmp), d, {"method": "euclidean", **provenance})
    log.info("euclidean distances of %d heatmaps written", len(d))


def _split_gw_config(params: Mapping[str, Any]) -> tuple[int, str, dict[str, Any], Any]:
    cfg = dict(params)
    tile = int(cfg.pop("tile"))
    mode = cfg.pop("mode", "full")
    if mode not in GW_MODES:
        raise ValueError(f"distances.gw.mode must be one of {GW_MODES}, got {mode!r}")
    knn = distances.KNNParams.from_config(cfg.pop("knn", None))
    return tile, mode, knn.to_dict(), distances.GWParams.from_config(cfg)


def distances_gw(
    explanations: PathLike,
    out: PathLike,
    params: Mapping[str, Any],
    cluster: Mapping[str, Any],
    threads: int = 1,
    performance_report: PathLike | None = None,
    *,
    performance: Mapping[str, Any] | None = None,
    sidecar: PathLike | None = None,
) -> None:
    """GW distance matrix over a Dask cluster.

    ``explanations``: a zarr group holding ``heatmaps`` (n, H, W), or an explanation
    store (then its target class group is used). ``params`` is the ``distances.gw``
    config section: the fields of :class:`~poisonscan.distances.GWParams` plus
    ``tile``, ``mode`` and ``knn``; ``performance`` (dotted config keys, see
    :data:`poisonscan.parameters.PERFORMANCE`) puts the performance knobs the
    workflow passes as resources back into it. ``sidecar``: the checkpoint's
    sidecar, checked against the store's ``model_sha256``.

    ``mode="full"``: every pair; tiles are written to ``out + ".partial"`` (not a
    declared output, so Snakemake keeps it when the job fails) and the store is
    moved to ``out`` once complete; a rerun resumes from the finished tiles, unless
    the partial store was made from other heatmaps or parameters, or is damaged (then
    it is removed and the error says to run again).
    ``mode="knn"``: only the pairs needed for the kNN graph
    (:func:`~poisonscan.distances.gw_knn_matrix`); the others are ``+inf`` in the
    store (a consumer must read ``+inf`` as "not a neighbour"). Not resumable.
    """
    from distributed import performance_report as dask_report

    from poisonscan.parallel import dask_client

    params = merge_performance(params, "distances.gw", performance)
    tile, mode, knn, gw = _split_gw_config(params)
    # every heatmap chunk checked once here: the Dask tasks read them again by slices
    group, _, provenance = _checked_heatmaps(explanations, sidecar)
    report = str(performance_report) if performance_report else os.devnull
    if mode == "knn":
        knn_params = distances.KNNParams.from_config(knn)
        with dask_client(cluster, n_workers=threads) as client:
            log.info("dask cluster: %s", client)
            with dask_report(filename=report):
                d, info = distances.gw_knn_matrix(group, gw, knn_params, client, log)
        attrs = {"method": "gromov_wasserstein_knn", "params": gw.to_dict(), "knn": knn,
                 "info": info, **provenance}  # fmt: skip
        with atomic_path(out) as tmp:
            distances.write_distance_store(str(tmp), d, attrs, tile=tile)
        return

    work = f"{out}.partial"
    if Path(work).exists():
        attrs = zarr.open_group(work, mode="r").attrs
        wanted = {"params": gw.to_dict(), "tile": tile, **provenance}
        found = {k: attrs.get(k) for k in wanted}
        if found != wanted:
            log.warning("discarding %s: made with other parameters or heatmaps %s", work, found)
            shutil.rmtree(work)
        else:
            log.info("resuming from %s", work)
    try:
        with dask_client(cluster, n_workers=threads) as client:
            log.info("dask cluster: %s", client)
            with dask_report(filename=report):
                distances.gw_distance_matrix(group, work, gw, client, tile=tile, log=log,
                                             attrs=provenance)  # fmt: skip
    except StoreError as err:
        if Path(err.path).resolve() != Path(work).resolve():
            raise
        # the job's own resume store is damaged: drop it, the next run starts afresh
        shutil.rmtree(work, ignore_errors=True)
        raise StoreError(
            err.detail, work, f"removed {work}; run the same command again to recompute it"
        ) from err
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if Path(out).exists():
        shutil.rmtree(out)
    os.replace(work, out)


def distances_gw_classes(
    explanations: PathLike,
    out: PathLike,
    params: Mapping[str, Any],
    cluster: Mapping[str, Any],
    threads: int = 1,
    performance_report: PathLike | None = None,
    *,
    performance: Mapping[str, Any] | None = None,
    sidecar: PathLike | None = None,
) -> None:
    """GW kNN matrices of every class of an explanation store, in one Dask computation.

    ``params`` is the ``distances.gw`` section (its ``mode`` is ignored: every class is
    searched in kNN mode, :func:`~poisonscan.distances.gw_knn_matrices`); ``performance``
    and ``sidecar`` as in :func:`distances_gw`. ``out`` gets one distance store per class
    (``out/<class>``, ``+inf`` for the pairs not solved) with the heatmaps' sha256 each.

    Resumable: every finished task's pairs are kept in ``out + ".partial"`` (not a
    declared output, so Snakemake keeps it when the job fails); a rerun with the same
    heatmaps and parameters takes them instead of solving them again, otherwise the
    folder is discarded. It is removed once ``out`` is written.
    """
    from distributed import performance_report as dask_report

    from poisonscan.parallel import dask_client

    params = merge_performance(params, "distances.gw", performance)
    _, _, knn, gw = _split_gw_config(params)
    if sidecar is not None:
        check_model(explanations, sidecar)
    groups = {cls: class_group_path(explanations, cls) for cls in store_classes(explanations)}
    provenance = {str(cls): heatmaps_sha256(g) for cls, g in groups.items()}
    # pairs_per_task cuts the tasks, so finished tasks are reusable only with the same value
    wanted = {"params": gw.to_dict(), "knn": knn, "heatmaps_sha256": provenance}
    work = Path(f"{out}.partial")
    meta = work / "meta.json"
    if work.exists() and (not meta.exists() or json.loads(meta.read_text()) != wanted):
        log.warning("discarding %s: made with other parameters or heatmaps", work)
        shutil.rmtree(work)
    elif work.exists():
        log.info("resuming from %s", work)
    work.mkdir(parents=True, exist_ok=True)
    write_json(meta, wanted)
    report = str(performance_report) if performance_report else os.devnull
    knn_params = distances.KNNParams.from_config(knn)
    with dask_client(cluster, n_workers=threads) as client:
        log.info("dask cluster: %s", client)
        with dask_report(filename=report):
            found = distances.gw_knn_matrices(groups, gw, knn_params, client, log, resume=work)
    model = zarr.open_group(str(store_root(explanations)), mode="r").attrs.get("model_sha256", "")
    with atomic_path(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update({"method": "gromov_wasserstein_knn", "params": gw.to_dict(),
                           "knn": knn, "model_sha256": model})  # fmt: skip
        for cls, (d, info) in found.items():
            attrs = {"method": "gromov_wasserstein_knn", "params": gw.to_dict(), "knn": knn,
                     "info": info, "heatmaps_sha256": provenance[str(cls)],
                     "model_sha256": model}  # fmt: skip
            distances.write_distance_store(str(tmp / str(cls)), d, attrs)
    shutil.rmtree(work, ignore_errors=True)
