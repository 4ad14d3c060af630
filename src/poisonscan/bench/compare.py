"""``compare RUN_A RUN_B``: is every stored result of two workflow runs identical?

Walks ``results/`` of both working directories and compares every array of
every zarr store (all groups), HDF5 file and ``.npz`` file, the bytes of every
checkpoint, every JSON value except wall-clock measurements, every CSV and
markdown table, and the pixels of every PNG figure. Logs and benchmark files
are skipped. Prints one row per item that differs or exists on one side only,
then a summary row; used to check that a change keeps the results bit-identical
and that an interrupted, resumed or re-platformed run ends where a plain run does.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TIMING_KEYS", "add_parser", "compare_runs", "result_values"]

# JSON keys that hold wall-clock measurements or the machine, not results.
TIMING_KEYS = ("seconds", "time", "device")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="are two runs' stored results identical?")
    p.add_argument("run_a", type=Path, help="working directory holding results/")
    p.add_argument("run_b", type=Path)
    p.add_argument("--no-figures", action="store_true", help="skip the PNG pixels")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    differ, equal = compare_runs(args.run_a, args.run_b, figures=not args.no_figures)
    return [{"differs": name} for name in differ] + [{"equal": equal, "differ": len(differ)}]


def _drop_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_timing(v) for k, v in obj.items() if not any(t in k for t in TIMING_KEYS)}
    if isinstance(obj, list):
        return [_drop_timing(v) for v in obj]
    return obj


def _zarr_arrays(path: Path, rel: str) -> Iterator[tuple[str, Any]]:
    import zarr

    def walk(group: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        for name, arr in sorted(group.arrays(), key=lambda kv: kv[0]):
            yield f"{prefix}/{name}", arr[...]
        for name, sub in sorted(group.groups(), key=lambda kv: kv[0]):
            yield from walk(sub, f"{prefix}/{name}")

    yield from walk(zarr.open_group(str(path), mode="r"), rel)


def result_values(root: Path, figures: bool = True) -> Iterator[tuple[str, Any]]:
    """Every stored result under ``root/results``: (relative name, value)."""
    results = Path(root) / "results"
    for path in sorted(results.rglob("*")):
        rel = str(path.relative_to(results))
        if rel.startswith(("logs", "benchmarks")) or ".zarr/" in rel or path.name.startswith("."):
            continue
        if path.suffix == ".zarr":
            yield from _zarr_arrays(path, rel)
        elif path.suffix == ".h5":
            import h5py

            with h5py.File(path, "r") as f:
                for name in sorted(f):
                    yield f"{rel}/{name}", f[name][()]
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                for name in sorted(f.files):
                    yield f"{rel}/{name}", f[name]
        elif path.suffix == ".safetensors":
            yield rel, path.read_bytes()
        elif path.suffix == ".json":
            yield rel, _drop_timing(json.loads(path.read_text()))
        elif path.suffix == ".csv":
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            keep = [i for i, c in enumerate(rows[0] if rows else []) if c not in TIMING_KEYS]
            yield rel, [[row[i] for i in keep if i < len(row)] for row in rows]
        elif path.suffix == ".md":
            yield rel, path.read_text()
        elif path.suffix == ".png" and figures:
            from PIL import Image

            with Image.open(path) as img:
                yield rel, np.asarray(img)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        floats = np.issubdtype(a.dtype, np.floating)  # NaN only where it can be
        return bool(np.array_equal(a, b, equal_nan=floats))
    return bool(a == b)


def compare_runs(a: Path, b: Path, figures: bool = True) -> tuple[list[str], int]:
    """Names of the results that differ between two runs (or exist in one only), and how
    many are equal. JSON keys and CSV columns of timings (:data:`TIMING_KEYS`) are left out."""
    va, vb = dict(result_values(a, figures)), dict(result_values(b, figures))
    differ = sorted(set(va) ^ set(vb))
    differ += sorted(n for n in set(va) & set(vb) if not _equal(va[n], vb[n]))
    return differ, len(set(va) & set(vb)) - (len(differ) - len(set(va) ^ set(vb)))
