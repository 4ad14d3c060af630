"""The all-pairs GW matrix, tile by tile on a Dask cluster, resumable through the store.

The upper triangle is cut into tile x tile blocks (:func:`tile_plan`). Each block is
one task (:func:`compute_tile`): it reads its heatmap rows from the zarr store itself
(only paths and indices travel), solves all pairs of the block in one solver call
(for the batched solver: a few batched calls), writes the block and its mirror into
the zarr chunks it owns and finally sets its ``done`` flag. A rerun after a kill
computes only the blocks not marked done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from poisonscan.distances._params import GWParams
from poisonscan.distances._solvers import prepare_spaces, solve_pairs
from poisonscan.distances._store import check_complete, open_or_create, tile_pairs, tile_plan
from poisonscan.rulelog import PROGRESS
from poisonscan.storage import read_array, seal_store

if TYPE_CHECKING:
    import distributed

__all__ = ["Progress", "compute_tile", "gw_distance_matrix", "n_heatmaps"]

logger = logging.getLogger("poisonscan.distances")


def n_heatmaps(heatmap_store: str, log: logging.Logger | None = None) -> int:
    """Number of heatmaps in ``heatmap_store/heatmaps`` (n, H, W); warns about empty ones.

    Raises
    ------
    ValueError
        If the group has no ``heatmaps`` array of shape (n, H, W).
    """
    group = zarr.open_group(heatmap_store, mode="r")
    if "heatmaps" not in group:
        raise ValueError(f"{heatmap_store} has no 'heatmaps' array")
    arr = group["heatmaps"]
    if len(arr.shape) != 3:
        raise ValueError(f"{heatmap_store}/heatmaps must have shape (n, H, W), got {arr.shape}")
    if log is not None and arr.shape[0]:
        step = max(1, 2**24 // max(1, arr.shape[1] * arr.shape[2]))
        empty = sum(
            int((np.nan_to_num(arr[s : s + step]).reshape(-1, arr.shape[1] * arr.shape[2])
                 .max(axis=1) <= 0).sum())
            for s in range(0, arr.shape[0], step)
        )  # fmt: skip
        if empty:
            log.warning(
                "%d of %d heatmaps have no positive relevance; GW treats each as the "
                "uniform measure on all cells",
                empty,
                arr.shape[0],
            )
    return int(arr.shape[0])


def compute_tile(
    heatmap_store: str,
    out_store: str,
    bi: int,
    bj: int,
    tile: int,
    params: GWParams,
) -> tuple[int, int, int, float]:
    """Compute and store one tile of the GW matrix (runs inside a Dask worker).

    Reads only heatmap rows ``bi*tile:(bi+1)*tile`` and ``bj*tile:(bj+1)*tile``,
    prepares each heatmap's space once, solves every pair of the tile (only
    ``i < j`` on a diagonal tile) in one solver call, writes block (bi, bj) and its
    transpose at (bj, bi) of ``distances`` and finally sets ``done[bi, bj]``. Each
    write covers whole zarr chunks owned by this tile only.

    Parameters
    ----------
    heatmap_store : str
        Path of a zarr group with a ``heatmaps`` array of shape (n, H, W).
    out_store : str
        Distance store created by :func:`gw_distance_matrix`.
    bi, bj : int
        Block indices, ``bi <= bj``.
    tile : int
        Block size (equal to the zarr chunk size of ``distances``).
    params : GWParams
        GW parameters.

    Returns
    -------
    (bi, bj, n_pairs, seconds)
        The tile, the number of GW problems solved and the wall time.
    """
    start = time.perf_counter()
    if bi > bj:
        raise ValueError(f"tile ({bi}, {bj}) is below the diagonal")
    heatmaps = zarr.open_group(heatmap_store, mode="r")["heatmaps"]
    n = heatmaps.shape[0]
    r0, r1 = bi * tile, min((bi + 1) * tile, n)
    c0, c1 = bj * tile, min((bj + 1) * tile, n)
    diagonal = bi == bj
    rows = prepare_spaces(heatmaps[r0:r1], params)
    cols = rows if diagonal else prepare_spaces(heatmaps[c0:c1], params)
    pairs = [(a, b) for a in range(r1 - r0) for b in range(a + 1 if diagonal else 0, c1 - c0)]
    values = solve_pairs(rows, cols, pairs, params, labels=[(r0 + a, c0 + b) for a, b in pairs])

    block = np.zeros((r1 - r0, c1 - c0))
    if pairs:
        ia, ib = np.array(pairs).T
        block[ia, ib] = values
    if diagonal:
        block = block + block.T

    out = zarr.open_group(out_store, mode="r+")
    distances = out["distances"]
    distances[r0:r1, c0:c1] = block
    if not diagonal:
        distances[c0:c1, r0:r1] = block.T
    out["done"][bi, bj] = True
    return bi, bj, len(pairs), time.perf_counter() - start


class Progress:
    """Log ``done/total``, pairs per second and the ETA at most every ``every`` seconds
    (and at every 5 % of the tasks and at the end)."""

    def __init__(self, log: logging.Logger, n_tasks: int, n_pairs: int, every: float = 10.0):
        self.log, self.n_tasks, self.n_pairs, self.every = log, n_tasks, n_pairs, every
        self.start = self.last_time = time.perf_counter()
        self.tasks = self.pairs = self.last_tasks = 0

    def update(self, pairs: int, what: str = "tiles") -> None:
        """Record one finished task that solved ``pairs`` pairs."""
        self.tasks += 1
        self.pairs += pairs
        now = time.perf_counter()
        k = self.n_tasks
        if (
            self.tasks == k
            or (self.tasks - self.last_tasks) * 20 >= k
            or (now - self.last_time >= self.every)
        ):
            rate = self.pairs / max(now - self.start, 1e-9)
            eta = (self.n_pairs - self.pairs) / rate if rate > 0 else float("inf")
            self.log.info("%s %d/%d, pairs/s %.1f, ETA %.0f s", what, self.tasks, k, rate, eta,
                          extra=PROGRESS)  # fmt: skip
            self.last_tasks, self.last_time = self.tasks, now

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def gw_distance_matrix(
    heatmap_store: str,
    out_store: str,
    params: GWParams,
    client: distributed.Client,
    tile: int = 32,
    log: logging.Logger | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """All-pairs GW matrix of the heatmaps in a store, tiled over a Dask cluster.

    Creates the distance store at ``out_store`` (or reopens it when it was made
    with the same n, tile and params), submits every tile not yet marked done
    as one task (:func:`compute_tile`; only paths and indices are sent; each task is
    retried twice, e.g. after its worker died) and logs progress. A rerun after an
    interruption computes only the missing tiles.

    Parameters
    ----------
    heatmap_store : str
        Path of a zarr group with ``heatmaps`` of shape (n, H, W) (e.g. one class group
        of an explanation store); must be readable from the workers under this path.
    out_store : str
        Distance store path (zarr group), readable and writable by the workers.
    params : GWParams
        GW parameters.
    client : distributed.Client
        Client of the cluster doing the work.
    tile : int, default 32
        Tile (and zarr chunk) size.
    log : logging.Logger, optional
        Where progress goes (default: this package's logger).
    attrs : mapping, optional
        Further attributes of the store (e.g. the provenance of the heatmaps); a
        store is resumed only if they are equal.

    Returns
    -------
    ndarray of shape (n, n), float64
        Symmetric GW losses with a zero diagonal.

    Raises
    ------
    ValueError
        If an existing store was made with other parameters, n or tile.
    RuntimeError
        If the final matrix is incomplete or inconsistent.
    """
    from distributed import as_completed

    log = log or logger
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    heatmap_store, out_store = str(heatmap_store), str(out_store)
    n = n_heatmaps(heatmap_store, log)
    attrs = {**dict(attrs or {}), "method": "gromov_wasserstein", "params": params.to_dict()}
    group, reopened = open_or_create(out_store, n, tile, attrs)
    done = read_array(group, "done", sealed=False)
    plan = tile_plan(n, tile)
    todo = [t for t in plan if not done[t]]
    total_pairs = sum(tile_pairs(n, tile, *t) for t in todo)
    log.info(
        "GW matrix n=%d, tile=%d: %d tiles, %d already done (%s store), %d to compute "
        "(%d pairs); params %s",
        n,
        tile,
        len(plan),
        len(plan) - len(todo),
        "reopened" if reopened else "new",
        len(todo),
        total_pairs,
        params.to_dict(),
    )

    if todo:
        k = len(todo)
        # Big tiles first, so the last tasks are short and the workers finish together.
        todo.sort(key=lambda t: -tile_pairs(n, tile, *t))
        futures = client.map(
            compute_tile,
            [heatmap_store] * k,
            [out_store] * k,
            [t[0] for t in todo],
            [t[1] for t in todo],
            [tile] * k,
            [params] * k,
            retries=2,
            pure=False,
        )
        progress = Progress(log, k, total_pairs)
        try:
            for future in as_completed(futures):
                progress.update(future.result()[2])
        except BaseException:
            # Tiles already written stay done; the rest is recomputed on the next run.
            client.cancel(futures)
            raise
        log.info("computed %d tiles (%d pairs) in %.1f s", k, progress.pairs, progress.seconds)

    d = check_complete(group, out_store, tile, n, sealed=False)
    seal_store(group)  # complete: record the chunk checksums
    return d
