from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import random_dataset

from poisonscan.storage import (
    StoreError,
    atomic_path,
    create_array,
    read_array,
    read_dataset,
    write_dataset,
)


def test_dataset_round_trip(tmp_path: Path) -> None:
    ds = random_dataset()
    ds.extra["poison_mask"] = np.arange(len(ds.y_train)) % 7 == 0
    ds.meta["attack"] = {"name": "sticker", "window": [1, 2, 3, 4]}
    write_dataset(tmp_path / "d.h5", ds)
    back = read_dataset(tmp_path / "d.h5")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(back, name), getattr(ds, name))
    assert np.array_equal(back.extra["poison_mask"], ds.extra["poison_mask"])
    assert back.class_names == ds.class_names and back.meta == ds.meta


def test_read_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset file not found: .*missing.h5"):
        read_dataset(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="junk.h5 is not a readable HDF5"):
        read_dataset(tmp_path / "junk.h5")
    ds = random_dataset()
    write_dataset(tmp_path / "ok.h5", ds)
    data = (tmp_path / "ok.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated.h5"):
        read_dataset(tmp_path / "truncated.h5")


def test_atomic_path_keeps_old_output_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(tmp_path / "store") as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    assert (tmp_path / "store" / "a").read_text() == "1"


def _store(tmp_path: Path) -> tuple[Path, list[Path]]:
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    create_array(root, "x", data=np.zeros((40, 4), np.float32), chunks=(10, 4))
    chunks = sorted(p for p in (tmp_path / "s.zarr" / "x").rglob("*") if p.is_file()
                    and p.name != "zarr.json")  # fmt: skip
    return tmp_path / "s.zarr", chunks


def test_read_array_round_trip_keeps_all_zero_chunks(tmp_path: Path) -> None:
    store, chunks = _store(tmp_path)
    assert len(chunks) == 4  # zarr would skip all four all-zero chunks by default
    assert np.array_equal(read_array(store, "x"), np.zeros((40, 4), np.float32))


def test_read_array_reports_missing_and_corrupted_chunks(tmp_path: Path) -> None:
    store, chunks = _store(tmp_path)
    chunks[1].unlink()
    with pytest.raises(StoreError, match=r"only 3 of 4 chunks present.*delete .*s.zarr"):
        read_array(store, "x")
    store, chunks = _store(tmp_path)
    chunks[2].write_bytes(b"garbage")
    with pytest.raises(StoreError, match=r"s.zarr/x: a chunk is corrupted"):
        read_array(zarr.open_group(str(store), mode="r"), "x")
    with pytest.raises(StoreError, match="cannot open array 'y'"):
        read_array(store, "y")
    with pytest.raises(StoreError, match="cannot open array"):
        read_array(tmp_path / "absent.zarr", "x")


def test_atomic_path_removes_what_a_killed_attempt_left(tmp_path: Path) -> None:
    (tmp_path / ".store.zarr.deadbeef.tmp").mkdir()
    (tmp_path / ".store.zarr.deadbeef.tmp" / "a").write_text("half")
    (tmp_path / ".other.zarr.deadbeef.tmp").write_text("not ours")
    with atomic_path(tmp_path / "store.zarr") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.zarr.deadbeef.tmp", "store.zarr"]
