"""The zarr distance store: create, reopen for resuming, write whole, read checked.

Distance store (zarr group)
    ``distances`` (n, n) float64, chunks (tile, tile), fill NaN;
    ``done`` (n_t, n_t) bool, chunks (1, 1), fill False, n_t = ceil(n / tile);
    attributes ``method``, ``n``, ``tile`` and ``params`` (a dict); the workflow adds
    ``heatmaps_sha256`` (:func:`poisonscan.explain.store.heatmaps_sha256` of the
    heatmaps it was computed from) and ``model_sha256``.
    Both arrays carry a crc32c per chunk; a complete store is sealed
    (:func:`poisonscan.storage.seal_store`).
    Only the upper-triangle flags ``done[bi, bj]`` (bi <= bj) are used.
    A sparse (kNN) store holds ``+inf`` where a pair was not evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from poisonscan.storage import create_array, read_array, seal_store

__all__ = [
    "check_complete",
    "create_store",
    "open_or_create",
    "read_distance_store",
    "tile_pairs",
    "tile_plan",
    "write_distance_store",
]


def tile_plan(n: int, tile: int) -> list[tuple[int, int]]:
    """Upper-triangle tiles of an n x n matrix cut into tile x tile blocks.

    Parameters
    ----------
    n : int
        Matrix size.
    tile : int
        Block size; the last block row/column may be smaller.

    Returns
    -------
    list of (bi, bj)
        All block indices with ``bi <= bj``, row-major.
    """
    if n < 0 or tile < 1:
        raise ValueError(f"need n >= 0 and tile >= 1, got n={n}, tile={tile}")
    n_t = -(-n // tile)
    return [(bi, bj) for bi in range(n_t) for bj in range(bi, n_t)]


def tile_pairs(n: int, tile: int, bi: int, bj: int) -> int:
    """Number of pairs (i < j) in tile (bi, bj)."""
    rows = min((bi + 1) * tile, n) - bi * tile
    cols = min((bj + 1) * tile, n) - bj * tile
    return rows * (rows - 1) // 2 if bi == bj else rows * cols


def create_store(out_store: str, n: int, tile: int, attrs: Mapping[str, Any]) -> zarr.Group:
    """Create (overwrite) an empty distance store of an n x n matrix in tile x tile chunks."""
    n_t = -(-n // tile)
    group = zarr.open_group(out_store, mode="w", attributes={**attrs, "n": n, "tile": tile})
    create_array(  # every chunk written, so a lost one is detected on reading
        group,
        "distances",
        shape=(n, n),
        chunks=(max(1, min(tile, n)),) * 2,
        dtype="float64",
        fill_value=np.nan,
        dimension_names=("i", "j"),
    )
    done = create_array(group, "done", shape=(n_t, n_t), chunks=(1, 1), dtype="bool",
                        fill_value=False)  # fmt: skip
    done[...] = False  # every chunk written: a lost flag is detected, not read as "not done"
    return group


def open_or_create(
    out_store: str, n: int, tile: int, attrs: Mapping[str, Any]
) -> tuple[zarr.Group, bool]:
    """Open a matching distance store or create a new one; return ``(group, reopened)``.

    A store matches if its ``n``, ``tile`` and every key of ``attrs`` are equal.

    Raises
    ------
    ValueError
        If a store exists at ``out_store`` but was made with other attributes.
    """
    try:
        group = zarr.open_group(out_store, mode="r")
    except FileNotFoundError:
        group = None
    if group is None or "done" not in group or "distances" not in group:
        return create_store(out_store, n, tile, attrs), False
    wanted = {"n": n, "tile": tile, **attrs}
    found = {k: group.attrs.get(k) for k in wanted}
    if found != wanted:
        diff = sorted(k for k in wanted if found[k] != wanted[k])
        raise ValueError(
            f"the distance store {out_store} was made with different {diff} "
            f"(found {found}, wanted {wanted}); delete it to recompute"
        )
    return zarr.open_group(out_store, mode="r+"), True


def check_complete(
    group: zarr.Group, path: str, tile: int, n: int, *, sealed: bool = True
) -> np.ndarray:
    """Read the matrix of a store and check it: every tile done, no NaN, symmetric, zero diagonal.

    ``sealed``: the store is finished (its chunk checksums are recorded); False while
    the tiles are being written.

    Raises
    ------
    StoreError
        If a chunk is missing, misplaced or corrupted (:func:`~poisonscan.storage.read_array`).
    RuntimeError
        On any other failed check.
    """
    done = read_array(group, "done", sealed=sealed)
    missing = [t for t in tile_plan(n, tile) if not done[t]]
    if missing:
        raise RuntimeError(
            f"distance store {path} is incomplete: {len(missing)} tile(s) not done, "
            f"e.g. {missing[:5]}; rerun the computation to finish it"
        )
    d = np.asarray(read_array(group, "distances", sealed=sealed), dtype=np.float64)
    if np.isnan(d).any():
        raise RuntimeError(f"distance store {path} contains NaN entries ({np.isnan(d).sum()})")
    if not np.array_equal(d, d.T):
        raise RuntimeError(f"distance matrix in {path} is not symmetric")
    if np.any(np.diag(d) != 0.0):
        raise RuntimeError(f"distance matrix in {path} has a non-zero diagonal")
    return d


def write_distance_store(
    out_store: str,
    distances: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
    tile: int = 256,
) -> None:
    """Write a complete distance store from an in-memory matrix.

    Parameters
    ----------
    out_store : str
        Path of the zarr group to (over)write.
    distances : ndarray of shape (n, n)
        Symmetric matrix with a zero diagonal, e.g. from :func:`euclidean_distances`;
        ``+inf`` marks pairs that were not evaluated (sparse kNN mode).
    attrs : mapping, optional
        JSON-serialisable attributes (e.g. ``{"method": "euclidean"}``); ``n`` and
        ``tile`` are added.
    tile : int, default 256
        Chunk size.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {d.shape}")
    if np.isnan(d).any():
        raise ValueError("distance matrix contains NaN")
    n = d.shape[0]
    group = create_store(str(out_store), n, tile, dict(attrs or {}))
    group["distances"][...] = d
    group["done"][...] = True
    seal_store(group)


def read_distance_store(path: str) -> np.ndarray:
    """Read the matrix of a complete distance store.

    Parameters
    ----------
    path : str
        Distance store written by :func:`gw_distance_matrix`, :func:`gw_knn_matrix` or
        :func:`write_distance_store`.

    Returns
    -------
    ndarray of shape (n, n), float64
        ``+inf`` marks pairs a sparse (kNN) store did not evaluate.

    Raises
    ------
    FileNotFoundError
        If there is no store at ``path``.
    ValueError
        If the group is not a distance store.
    StoreError
        If a chunk is missing, misplaced or corrupted.
    RuntimeError
        If a tile is not done or the matrix has NaN / is not symmetric / has a
        non-zero diagonal.
    """
    group = zarr.open_group(str(path), mode="r")
    if "distances" not in group or "done" not in group:
        raise ValueError(f"{path} is not a distance store (needs 'distances' and 'done')")
    n = int(group["distances"].shape[0])
    tile = int(group.attrs.get("tile", group["distances"].chunks[0]))
    return check_complete(group, str(path), tile, n)
