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

Integrity
---------
Every stored array carries checksums, and a read that fails one raises
:class:`StoreError` naming the file or store, the array and the chunk:

- zarr arrays (:func:`create_array`) end their codec chain with crc32c, so every
  chunk file is checked when it is decoded; :func:`seal_store` records each
  chunk's checksum in the array's attributes (``chunk_crc32c``) once the store is
  complete, so a chunk moved to another position (a swap) is detected too.
- HDF5 datasets (:func:`write_dataset`) use the Fletcher32 filter on every chunk
  and record the CRC-32 of each chunk's values (attribute ``chunk_crc32``).
- ``.npz`` members carry the zip format's CRC-32 (checked by :func:`read_npz`).

A :class:`StoreError` carries the output to recompute (``path``); inside the
workflow :func:`poisonscan.rulelog.rule_log` moves that output aside
(:func:`quarantine`), so that running Snakemake again recomputes it.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import os
import shutil
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

# zarr skips chunks equal to the fill value and reads a missing chunk back as the fill
# value, so a lost chunk would pass for zeros. This setting is a runtime option, not
# stored with the array: set it for every array this process opens for writing.
zarr.config.set({"array.write_empty_chunks": True})

__all__ = [
    "ImageDataset",
    "ProvenanceError",
    "StoreError",
    "atomic_path",
    "create_array",
    "file_sha256",
    "quarantine",
    "read_array",
    "read_dataset",
    "read_npz",
    "read_sidecar",
    "seal_store",
    "store_root",
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
    """Every array of an ``.npz`` file (no pickles), each checked against its zip CRC-32.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    StoreError
        If it is not a readable ``.npz`` file, or an array fails its CRC-32 (the
        message names the file and the array).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"file not found: {p}")
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile)
    try:
        f = np.load(p, allow_pickle=False)
    except unreadable as err:
        raise StoreError(f"{p} is not a readable .npz file ({err})", p) from err
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise StoreError(f"{p} is not a readable .npz file (a single array)", p)
    out = {}
    with f:
        for name in f.files:
            try:  # zipfile checks the member's CRC-32 once it is read to the end
                out[name] = f[name]
            except unreadable as err:
                raise StoreError(f"{p}: array {name!r} is corrupted ({err})", p) from err
    return out


PathLike = str | os.PathLike[str]

# HDF5 datasets are chunked along the first axis in about this many bytes per chunk.
_H5_CHUNK_BYTES = 1 << 20


def _h5_rows(arr: np.ndarray) -> int:
    """Rows per chunk of a dataset of ``arr`` (the whole array if it is empty or 0-d)."""
    if arr.ndim == 0 or arr.shape[0] == 0:
        return 1
    row_bytes = max(1, arr.nbytes // arr.shape[0])
    return max(1, min(arr.shape[0], _H5_CHUNK_BYTES // row_bytes))


def _chunk_crc32(arr: np.ndarray, rows: int) -> np.ndarray:
    """CRC-32 of the values of each block of ``rows`` rows, shape (n_chunks,) uint32.

    An empty or 0-d array counts as one chunk."""
    if arr.ndim == 0 or arr.shape[0] == 0:
        return np.array([zlib.crc32(np.ascontiguousarray(arr).tobytes())], dtype=np.uint32)
    return np.array(
        [zlib.crc32(np.ascontiguousarray(arr[i : i + rows]).tobytes())
         for i in range(0, arr.shape[0], rows)],
        dtype=np.uint32,
    )  # fmt: skip


def write_dataset(path: str | os.PathLike[str], data: ImageDataset) -> None:
    """Write ``data`` to one HDF5 file at ``path`` (atomically).

    Every non-empty dataset is chunked along its first axis (about 1 MiB per chunk),
    images gzip-compressed, every chunk with the Fletcher32 checksum filter; the
    attribute ``chunk_crc32`` holds the CRC-32 of each chunk's values, so that
    :func:`read_dataset` also detects a chunk written to another position.
    """
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
            rows = _h5_rows(arr)
            if arr.ndim and arr.size:
                dset = f.create_dataset(
                    name,
                    data=arr,
                    chunks=(rows, *arr.shape[1:]),
                    compression="gzip" if arr.ndim >= 3 else None,
                    fletcher32=True,
                )
            else:  # nothing to chunk: the CRC alone covers it
                dset = f.create_dataset(name, data=arr)
            dset.attrs["chunk_crc32"] = _chunk_crc32(arr, rows)
            if text:
                dset.attrs["text"] = "utf-8"
        f.attrs["class_names"] = json.dumps(list(data.class_names))
        f.attrs["meta"] = json.dumps(data.meta, sort_keys=True)


def _read_h5_dataset(f: h5py.File, name: str, path: Path) -> np.ndarray:
    """Read dataset ``name`` of a file of :func:`write_dataset`, checking every chunk."""
    dset = f[name]
    expected = dset.attrs.get("chunk_crc32")
    if expected is None:
        raise StoreError(
            f"{path}: dataset {name!r} has no chunk checksums (written by an older poisonscan)",
            path,
        )
    rows = dset.chunks[0] if dset.chunks else 1
    n = dset.shape[0] if dset.ndim else 1
    try:
        value = dset[()]
    except (OSError, ValueError, RuntimeError) as err:
        for i, lo in enumerate(range(0, n, rows)):  # which chunk: read them one by one
            try:
                dset[lo : lo + rows]
            except (OSError, ValueError, RuntimeError) as chunk_err:
                raise StoreError(
                    f"{path}: dataset {name!r}, chunk {i} (rows {lo}:{min(lo + rows, n)}) "
                    f"fails its Fletcher32 checksum or does not decompress ({chunk_err})",
                    path,
                ) from chunk_err
        raise StoreError(f"{path}: dataset {name!r} is unreadable ({err})", path) from err
    found = _chunk_crc32(np.asarray(value), rows)
    expected = np.asarray(expected, dtype=np.uint32).reshape(-1)
    if found.shape != expected.shape:
        raise StoreError(
            f"{path}: dataset {name!r} has {found.size} chunks, {expected.size} were written",
            path,
        )
    bad = np.flatnonzero(found != expected)
    if bad.size:
        i = int(bad[0])
        raise StoreError(
            f"{path}: dataset {name!r}, chunk {i} (rows {i * rows}:{min((i + 1) * rows, n)}) "
            "holds other values than were written there (a chunk swapped or overwritten; "
            f"{bad.size} chunk(s) differ)",
            path,
        )
    if dset.attrs.get("text") == "utf-8":  # str arrays (file paths) were stored as UTF-8
        return np.char.decode(value, "utf-8")
    return value


def read_dataset(path: str | os.PathLike[str]) -> ImageDataset:
    """Read an :class:`ImageDataset` written by :func:`write_dataset`, checking every chunk.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    StoreError
        If the file is not HDF5, lacks one of the core arrays, or a chunk fails its
        Fletcher32 checksum or its recorded CRC-32 (the message names the file, the
        dataset and the chunk).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset file not found: {p}")
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise StoreError(f"{p} is not a readable HDF5 dataset file ({err})", p) from err
    try:
        with f:
            missing = [k for k in _CORE if k not in f]
            if missing:
                raise StoreError(f"{p} lacks the arrays {missing}; expected {list(_CORE)}", p)
            core = {k: _read_h5_dataset(f, k, p) for k in _CORE}
            extra = {k: _read_h5_dataset(f, k, p) for k in f if k not in _CORE}
            class_names = json.loads(f.attrs.get("class_names", "[]"))
            meta = json.loads(f.attrs.get("meta", "{}"))
    except StoreError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as err:  # damaged HDF5 metadata
        raise StoreError(f"{p} is a damaged HDF5 dataset file ({err})", p) from err
    return ImageDataset(
        x_train=core["x_train"],
        y_train=core["y_train"].astype(np.int64),
        x_test=core["x_test"],
        y_test=core["y_test"].astype(np.int64),
        class_names=class_names,
        meta=meta,
        extra=extra,
    )


def file_sha256(path: PathLike) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sidecar(path: PathLike, required: Sequence[str] = ("weights_sha256",)) -> dict[str, Any]:
    """The JSON sidecar of a checkpoint (:func:`poisonscan.checkpoints.save_checkpoint`).

    Parameters
    ----------
    path : path
        The sidecar, ``<checkpoint>.json``.
    required : sequence of str
        Keys it must have: a missing hash is an error, never a skipped check.

    Raises
    ------
    FileNotFoundError
        If it does not exist.
    StoreError
        If it is not a JSON object (e.g. truncated) or lacks a required key; the
        message names the file, ``path`` is the sidecar.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {p}")
    try:
        meta = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreError(f"checkpoint sidecar {p} is not valid JSON ({err})", p) from err
    if not isinstance(meta, dict):
        raise StoreError(f"checkpoint sidecar {p} is not a JSON object", p)
    missing = [k for k in required if not meta.get(k)]
    if missing:
        raise StoreError(f"checkpoint sidecar {p} lacks {missing}", p)
    return meta


def recompute_advice(path: PathLike) -> str:
    """What to do about a damaged output ``path`` outside the workflow's own handling."""
    return (
        f"recompute it: delete {path} and run the workflow again (Snakemake recomputes a "
        "missing output and everything computed from it)"
    )


class StoreError(ValueError):
    """A stored output is incomplete, corrupted, or not the one its consumer recorded.

    The message is ``f"{detail}; {advice}"``.

    Attributes
    ----------
    detail : str
        What is wrong, naming the file or store and, where known, the array and the chunk.
    path : str
        The output to recompute: a file, or the root directory of a zarr store.
    advice : str
        What to do (default :func:`recompute_advice`; inside the workflow,
        :func:`poisonscan.rulelog.rule_log` replaces it).
    """

    def __init__(self, detail: str, path: PathLike, advice: str | None = None) -> None:
        self.detail = detail
        self.path = str(path)
        self.advice = recompute_advice(self.path) if advice is None else advice
        super().__init__(f"{detail}; {self.advice}")

    def __reduce__(self) -> tuple[Any, ...]:  # Dask sends a worker's exception to the client
        return type(self), (self.detail, self.path, self.advice)

    def with_advice(self, advice: str) -> StoreError:
        """The same error with other advice."""
        return type(self)(self.detail, self.path, advice)


class ProvenanceError(StoreError):
    """An input is not the file whose sha256 its consumer recorded (replaced or swapped).

    ``path`` is the upstream file: recomputing it recomputes everything after it."""


def quarantine(path: PathLike) -> Path | None:
    """Move a damaged output aside to ``<path>.damaged`` (replacing an older one).

    Snakemake then finds the output missing and recomputes it, and everything
    computed from it, on its next run. Returns the new path, or None if ``path``
    does not exist (e.g. another job moved it first).
    """
    src = Path(path)
    if not src.exists():
        return None
    dst = src.with_name(f"{src.name}.damaged")
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst, ignore_errors=True)
    elif dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        return None
    return dst


def store_root(path: PathLike) -> Path:
    """The root directory of the zarr store holding ``path`` (a group or array directory):
    the outermost of ``path`` and its parents that holds a ``zarr.json``."""
    p = Path(path)
    root = p
    for parent in p.parents:
        if not (parent / "zarr.json").is_file():
            break
        root = parent
    return root


def create_array(group: zarr.Group, name: str, **kwargs: Any) -> zarr.Array:
    """``group.create_array`` with a crc32c checksum on every chunk, writing every chunk.

    The codec chain ends with crc32c (after zstd, unless ``compressors`` is given),
    so every chunk is checked when it is read. zarr skips chunks equal to the fill
    value by default, and reads a missing chunk back as the fill value: a lost or
    deleted chunk would then pass for zeros. Writing all chunks lets
    :func:`read_array` tell "complete" from "damaged".
    """
    compressors = list(kwargs.pop("compressors", None) or [ZstdCodec(level=0)])
    if not any(isinstance(c, Crc32cCodec) for c in compressors):
        compressors.append(Crc32cCodec())
    return group.create_array(
        name, compressors=compressors, config={"write_empty_chunks": True}, **kwargs
    )


def _arrays(group: zarr.Group) -> Iterator[zarr.Array]:
    """Every array of ``group`` and of its subgroups."""
    for _, arr in sorted(group.arrays(), key=lambda kv: kv[0]):
        yield arr
    for _, sub in sorted(group.groups(), key=lambda kv: kv[0]):
        yield from _arrays(sub)


def _chunk_file(arr: zarr.Array, coords: tuple[int, ...]) -> Path:
    root = getattr(arr.store, "root", None)
    if root is None:
        raise TypeError(f"chunk checksums need a store on disk, got {arr.store!r}")
    return Path(root) / arr.path / arr.metadata.encode_chunk_key(coords)


def _stored_crc(chunk: Path) -> int | None:
    """The crc32c a chunk file ends with (None if the file is missing or too short)."""
    try:
        with open(chunk, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 4:
                return None
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little")
    except FileNotFoundError:
        return None


def _has_crc(arr: zarr.Array) -> bool:
    return any(isinstance(c, Crc32cCodec) for c in arr.compressors)


def _chunk_key(coords: tuple[int, ...]) -> str:
    return ".".join(str(c) for c in coords)


def seal_store(store: zarr.Group | PathLike) -> None:
    """Record the checksum of every chunk of every array below ``store``.

    Call it once the store is complete, before it is moved to its final name. Each
    array's attribute ``chunk_crc32c`` maps ``"i.j..."`` (the chunk's grid
    position) to the crc32c its chunk file ends with; :func:`read_array` compares
    them, so a chunk moved to another position (whose own crc32c is valid) is
    detected.

    Raises
    ------
    ValueError
        If an array was not made with :func:`create_array` or a chunk is missing.
    """
    group = store if isinstance(store, zarr.Group) else zarr.open_group(str(store), mode="r+")
    for arr in _arrays(group):
        if not _has_crc(arr):
            raise ValueError(f"{arr.path}: no crc32c codec (create it with create_array)")
        crcs = {}
        for coords in itertools.product(*(range(n) for n in arr.cdata_shape)):
            crc = _stored_crc(_chunk_file(arr, coords))
            if crc is None:
                raise ValueError(f"{arr.path}: chunk {coords} is missing; cannot seal")
            crcs[_chunk_key(coords)] = crc
        arr.attrs["chunk_crc32c"] = crcs


def read_array(
    group: zarr.Group | str | os.PathLike[str], name: str, *, sealed: bool = True
) -> np.ndarray:
    """Read a whole array of a store written with :func:`create_array`, checking it.

    Checks that every chunk is present, that it is the chunk written at its
    position (``sealed``: the checksums recorded by :func:`seal_store`) and that
    it decodes (its crc32c).

    Parameters
    ----------
    group : zarr.Group or path
        The group holding the array.
    name : str
        The array's name in ``group``.
    sealed : bool, default True
        Require the crc32c codec and the recorded chunk checksums (a finished
        store). False for a store still being written (the partial GW store):
        then the checks of what is present run.

    Raises
    ------
    StoreError
        If the store or array is missing or unreadable, or a chunk is missing,
        misplaced or corrupted; the message names the store, the array and the
        chunk, ``path`` is the store's root directory.
    """
    where = str(group) if not isinstance(group, zarr.Group) else str(group.store_path)
    if where.startswith("file://"):
        where = where[len("file://") :]
    root = store_root(where)
    array = str((Path(where) / name).relative_to(root)) if Path(where).is_dir() else name
    label = f"store {root}: array {array}"
    try:
        if not isinstance(group, zarr.Group):
            group = zarr.open_group(str(group), mode="r")
        arr = group[name]
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise StoreError(f"{where}: cannot open array {name!r} ({err})", root) from err
    if not isinstance(arr, zarr.Array):
        raise StoreError(f"{where}: {name!r} is a group, not an array", root)
    recorded = arr.attrs.get("chunk_crc32c")
    if sealed and not _has_crc(arr):
        raise StoreError(f"{label} has no chunk checksums (written by an older poisonscan)", root)
    if sealed and recorded is None:
        raise StoreError(f"{label} has no recorded chunk checksums (an unfinished store)", root)
    grid = list(itertools.product(*(range(n) for n in arr.cdata_shape)))
    if recorded is not None:
        if len(recorded) != len(grid):
            raise StoreError(
                f"{label}: {len(recorded)} chunk checksums recorded for {len(grid)} chunks", root
            )
        for coords in grid:
            found = _stored_crc(_chunk_file(arr, coords))
            if found is None:
                raise StoreError(f"{label}, chunk {coords}: missing (a damaged store)", root)
            if found != recorded.get(_chunk_key(coords)):
                raise StoreError(
                    f"{label}, chunk {coords}: not the chunk written there (its checksum "
                    "differs from the recorded one: a chunk swapped, replaced or damaged)",
                    root,
                )
    else:
        present, total = arr.nchunks_initialized, arr.nchunks
        if present != total:
            raise StoreError(
                f"{label}: only {present} of {total} chunks present (a damaged or "
                "incomplete store)",
                root,
            )
    try:
        return np.asarray(arr[...])
    except Exception as err:  # zarr and its codecs raise several types
        for coords in grid:  # which chunk: decode them one by one
            try:
                arr.get_block_selection(coords)
            except Exception as chunk_err:
                raise StoreError(
                    f"{label}, chunk {coords}: fails its crc32c checksum or does not decode "
                    f"({chunk_err})",
                    root,
                ) from chunk_err
        raise StoreError(f"{label}: unreadable ({err})", root) from err
