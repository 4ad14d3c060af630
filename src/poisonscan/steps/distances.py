"""Rules distances_l2 and distances_gw."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr

from poisonscan import distances
from poisonscan.parallel import dask_client
from poisonscan.steps.common import PathLike, log
from poisonscan.storage import atomic_path


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
