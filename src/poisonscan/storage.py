"""On-disk formats: HDF5 image datasets and zarr stores, written atomically.

Every writer here follows one rule: a file or directory appears under its final
name only once it is complete. Writers fill a temporary sibling and rename it
into place, so an interrupted step never leaves an output that a later step
(or Snakemake) would take as finished.

Formats
-------
Image dataset (HDF5, one file)
    ``x_train`` (n, H, W, 3) uint8, ``y_train`` (n,) int64, ``x_test``, ``y_test``;
    poisoned datasets add ``y_train_original``, ``poison_mask`` (bool),
    ``trigger_position`` (n, 2) int64 (row, col of the trigger's top-left corner,
    -1 where none), ``x_test_triggered`` and ``y_test_triggered_original``.
    File attributes hold JSON strings: ``class_names``, ``meta`` (generator or
    attack parameters).
Explanation store (zarr group)
    ``heatmaps`` (n, H, W) float32, ``activations`` (n, D) float32, ``index`` (n,)
    int64 (position in the training set), ``label``, ``prediction`` (n,) int64,
    ``poison`` (n,) bool; group attributes describe the method.
Distance store (zarr group)
    ``distances`` (n, n) float64 chunked in (T, T) tiles and ``done`` (n_t, n_t)
    bool, one chunk per tile, so parallel writers never share a chunk.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

# zarr skips chunks equal to the fill value and reads a missing chunk back as the fill
# value, so a lost chunk would pass for zeros. This setting is a runtime option, not
# stored with the array: set it for every array this process opens for writing.
zarr.config.set({"array.write_empty_chunks": True})

__all__ = [
    "ImageDataset",
    "StoreError",
    "atomic_path",
    "create_array",
    "read_array",
    "read_dataset",
    "read_npz",
    "write_csv",
    "write_dataset",
    "write_json",
    "write_npz",
]


@dataclass
class ImageDataset:
    """Images in HWC uint8 with integer labels, plus optional poisoning ground truth.

    Attributes
    ----------
    x_train, x_test : ndarray of shape (n, H, W, 3), uint8
    y_train, y_test : ndarray of shape (n,), int64
    class_names : list of str
        Human-readable name per class id.
    meta : dict
        Generator or attack parameters (JSON-serialisable).
    extra : dict of str to ndarray
        Further arrays (poison mask, original labels, triggered test images ...).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)


_CORE = ("x_train", "y_train", "x_test", "y_test")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it to ``path`` only on success.

    Works for files and directories (zarr stores). On any exception the
    temporary is removed and ``path`` is left untouched; temporaries left by a
    killed earlier attempt are removed first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # A process killed with SIGKILL (or a lost node) cannot clean up: remove the
    # temporaries such a run left for this output (one writer per output).
    for stale in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink()
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON with sorted keys (NaN allowed), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_csv(
    path: str | os.PathLike[str],
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    extra_columns: bool = False,
) -> None:
    """Write ``rows`` as CSV, atomically.

    Parameters
    ----------
    columns : sequence of str, optional
        Columns in order; default: the keys of the rows in the order first seen.
        Keys of a row that are not columns are left out, unless ``extra_columns``.
    extra_columns : bool, default False
        Append the keys that are not in ``columns``, sorted.
    """
    rows = list(rows)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    names = list(columns) if columns is not None else keys
    if extra_columns:
        names += sorted(set(keys) - set(names))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_npz(path: str | os.PathLike[str], **arrays: Any) -> None:
    """Write ``arrays`` to an uncompressed ``.npz`` file, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a readable ``.npz`` file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as f:
            return {name: f[name] for name in f.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{p} is not a readable .npz file ({err})") from err


def write_dataset(path: str | os.PathLike[str], data: ImageDataset) -> None:
    """Write ``data`` to one HDF5 file at ``path`` (atomically, gzip-compressed)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        arrays: Mapping[str, np.ndarray] = {
            "x_train": data.x_train,
            "y_train": data.y_train,
            "x_test": data.x_test,
            "y_test": data.y_test,
            **data.extra,
        }
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            text = arr.dtype.kind == "U"  # HDF5 has no UCS-4 strings: fixed-length UTF-8 bytes
            if text:
                arr = np.char.encode(arr, "utf-8")
            chunked = arr.ndim >= 3 and arr.shape[0] > 0
            dset = f.create_dataset(
                name,
                data=arr,
                compression="gzip" if chunked else None,
                chunks=(min(256, arr.shape[0]), *arr.shape[1:]) if chunked else None,
            )
            if text:
                dset.attrs["text"] = "utf-8"
        f.attrs["class_names"] = json.dumps(list(data.class_names))
        f.attrs["meta"] = json.dumps(data.meta, sort_keys=True)


def _decoded(dset: h5py.Dataset) -> np.ndarray:
    value = dset[()]
    if dset.attrs.get("text") == "utf-8":  # str arrays (file paths) were stored as UTF-8
        return np.char.decode(value, "utf-8")
    return value


def read_dataset(path: str | os.PathLike[str]) -> ImageDataset:
    """Read an :class:`ImageDataset` written by :func:`write_dataset`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not HDF5 or lacks one of the core arrays.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset file not found: {p}")
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise ValueError(f"{p} is not a readable HDF5 dataset file ({err})") from err
    with f:
        missing = [k for k in _CORE if k not in f]
        if missing:
            raise ValueError(f"{p} lacks the arrays {missing}; expected {list(_CORE)}")
        core = {k: f[k][()] for k in _CORE}
        extra = {k: _decoded(f[k]) for k in f if k not in _CORE}
        class_names = json.loads(f.attrs.get("class_names", "[]"))
        meta = json.loads(f.attrs.get("meta", "{}"))
    return ImageDataset(
        x_train=core["x_train"],
        y_train=core["y_train"].astype(np.int64),
        x_test=core["x_test"],
        y_test=core["y_test"].astype(np.int64),
        class_names=class_names,
        meta=meta,
        extra=extra,
    )


class StoreError(ValueError):
    """A zarr store is incomplete or corrupted; the message says which and what to do."""


def create_array(group: zarr.Group, name: str, **kwargs: Any) -> zarr.Array:
    """``group.create_array`` that writes every chunk, even one equal to the fill value.

    zarr skips chunks equal to the fill value by default, and reads a missing
    chunk back as the fill value: a lost or deleted chunk would then pass for
    zeros. Writing all chunks lets :func:`read_array` tell "complete" from
    "damaged".
    """
    return group.create_array(name, config={"write_empty_chunks": True}, **kwargs)


def read_array(group: zarr.Group | str | os.PathLike[str], name: str) -> np.ndarray:
    """Read a whole array of a store written with :func:`create_array`, checking it.

    Raises
    ------
    StoreError
        If the store or array is missing or unreadable, a chunk is missing,
        or a chunk does not decompress; the message names the store and says
        to delete it so that the rule that writes it runs again.
    """
    where = str(group) if not isinstance(group, zarr.Group) else str(group.store_path)
    advice = f"delete {where} and rerun the rule that writes it"
    try:
        if not isinstance(group, zarr.Group):
            group = zarr.open_group(str(group), mode="r")
        arr = group[name]
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise StoreError(f"{where}: cannot open array {name!r} ({err}); {advice}") from err
    if not isinstance(arr, zarr.Array):
        raise StoreError(f"{where}: {name!r} is a group, not an array")
    present, total = arr.nchunks_initialized, arr.nchunks
    if present != total:
        raise StoreError(
            f"{where}/{name}: only {present} of {total} chunks present (damaged or "
            f"incomplete store); {advice}"
        )
    try:
        return np.asarray(arr[...])
    except (RuntimeError, ValueError, OSError) as err:
        raise StoreError(f"{where}/{name}: a chunk is corrupted ({err}); {advice}") from err
