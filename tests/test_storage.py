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
    quarantine,
    read_array,
    read_dataset,
    read_npz,
    seal_store,
    store_root,
    write_dataset,
    write_npz,
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
    with pytest.raises(StoreError, match="junk.h5 is not a readable HDF5"):
        read_dataset(tmp_path / "junk.h5")
    ds = random_dataset()
    write_dataset(tmp_path / "ok.h5", ds)
    data = (tmp_path / "ok.h5").read_bytes()
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match="truncated.h5") as err:
        read_dataset(tmp_path / "truncated.h5")
    assert err.value.path == str(tmp_path / "truncated.h5")


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


def _store(tmp_path: Path, sealed: bool = True) -> tuple[Path, list[Path]]:
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    create_array(root, "x", data=np.zeros((40, 4), np.float32), chunks=(10, 4))
    if sealed:
        seal_store(root)
    chunks = sorted(p for p in (tmp_path / "s.zarr" / "x").rglob("*") if p.is_file()
                    and p.name != "zarr.json")  # fmt: skip
    return tmp_path / "s.zarr", chunks


def test_read_array_round_trip_keeps_all_zero_chunks(tmp_path: Path) -> None:
    store, chunks = _store(tmp_path)
    assert len(chunks) == 4  # zarr would skip all four all-zero chunks by default
    assert np.array_equal(read_array(store, "x"), np.zeros((40, 4), np.float32))


@pytest.mark.parametrize("sealed", [True, False])
def test_read_array_reports_missing_and_corrupted_chunks(tmp_path: Path, sealed: bool) -> None:
    store, chunks = _store(tmp_path, sealed)
    chunks[1].unlink()
    missing = r"chunk \(1, 0\): missing" if sealed else "only 3 of 4 chunks present"
    with pytest.raises(StoreError, match=rf"store .*s.zarr: array x.*{missing}.*delete .*s.zarr"):
        read_array(store, "x", sealed=sealed)
    store, chunks = _store(tmp_path, sealed)
    data = bytearray(chunks[2].read_bytes())
    data[0] ^= 1  # a bit of the compressed data: its crc32c no longer matches
    chunks[2].write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"array x, chunk \(2, 0\): fails its crc32c") as err:
        read_array(zarr.open_group(str(store), mode="r"), "x", sealed=sealed)
    assert err.value.path == str(store)
    with pytest.raises(StoreError, match="cannot open array 'y'"):
        read_array(store, "y")
    with pytest.raises(StoreError, match="cannot open array"):
        read_array(tmp_path / "absent.zarr", "x")


def test_read_array_detects_swapped_chunks_of_a_sealed_store(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    create_array(root.create_group("5"), "x", data=np.arange(40.0).reshape(10, 4), chunks=(5, 4))
    seal_store(tmp_path / "s.zarr")
    a, b = (tmp_path / "s.zarr/5/x/c/0/0", tmp_path / "s.zarr/5/x/c/1/0")
    first, second = a.read_bytes(), b.read_bytes()
    a.write_bytes(second)
    b.write_bytes(first)  # both chunks pass their own crc32c
    with pytest.raises(StoreError, match=r"s.zarr: array 5/x, chunk \(0, 0\): not the chunk"):
        read_array(tmp_path / "s.zarr" / "5", "x")
    assert store_root(tmp_path / "s.zarr" / "5") == tmp_path / "s.zarr"


def test_read_array_of_a_sealed_store_needs_its_checksums(tmp_path: Path) -> None:
    store, _ = _store(tmp_path, sealed=False)
    with pytest.raises(StoreError, match="no recorded chunk checksums"):
        read_array(store, "x")
    root = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    root.create_array("x", data=np.zeros(4))  # without create_array's codec
    with pytest.raises(StoreError, match="no chunk checksums"):
        read_array(root, "x")
    with pytest.raises(ValueError, match="no crc32c codec"):
        seal_store(root)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_read_dataset_names_the_chunk_that_fails_its_checksum(tmp_path: Path) -> None:
    import h5py

    ds = random_dataset(n_train=200)
    write_dataset(tmp_path / "d.h5", ds)
    with h5py.File(tmp_path / "d.h5", "r") as f:
        x = f["x_train"]
        assert x.fletcher32 and x.id.get_num_chunks() == 3
        info = x.id.get_chunk_info(1)
    _flip(tmp_path / "d.h5", info.byte_offset + info.size // 2)
    with pytest.raises(StoreError, match=r"'x_train', chunk 1 \(rows 341:682\) fails"):
        read_dataset(tmp_path / "d.h5")
    write_dataset(tmp_path / "d.h5", ds)
    with h5py.File(tmp_path / "d.h5", "r+") as f:  # move chunk 0's stored bytes to chunk 2
        x = f["x_train"]
        mask, raw = x.id.read_direct_chunk((0, 0, 0, 0))
        x.id.write_direct_chunk((682, 0, 0, 0), raw, mask)
    with pytest.raises(StoreError, match=r"'x_train', chunk 2 \(rows 682:800\) holds other"):
        read_dataset(tmp_path / "d.h5")


def test_read_npz_names_the_corrupted_array(tmp_path: Path) -> None:
    import zipfile

    write_npz(tmp_path / "r.npz", labels=np.arange(100), flagged=np.ones(100, bool))
    with zipfile.ZipFile(tmp_path / "r.npz") as z:
        member = z.getinfo("flagged.npy")
    _flip(tmp_path / "r.npz", member.header_offset + 30 + len(member.filename) + 150)
    with pytest.raises(StoreError, match=r"r.npz: array 'flagged' is corrupted.*CRC-32"):
        read_npz(tmp_path / "r.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(StoreError, match="junk.npz is not a readable .npz"):
        read_npz(tmp_path / "junk.npz")


def test_quarantine_moves_the_output_aside(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    (tmp_path / "s.zarr.damaged").mkdir()  # an older one is replaced
    assert quarantine(store) == tmp_path / "s.zarr.damaged"
    assert not store.exists() and (tmp_path / "s.zarr.damaged" / "x").is_dir()
    assert quarantine(store) is None
    (tmp_path / "f.h5").write_text("x")
    assert quarantine(tmp_path / "f.h5") == tmp_path / "f.h5.damaged"


def test_store_error_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(StoreError("broken", "a.zarr", "do this")))
    assert (err.detail, err.path, str(err)) == ("broken", "a.zarr", "broken; do this")


def test_atomic_path_removes_what_a_killed_attempt_left(tmp_path: Path) -> None:
    (tmp_path / ".store.zarr.deadbeef.tmp").mkdir()
    (tmp_path / ".store.zarr.deadbeef.tmp" / "a").write_text("half")
    (tmp_path / ".other.zarr.deadbeef.tmp").write_text("not ours")
    with atomic_path(tmp_path / "store.zarr") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.zarr.deadbeef.tmp", "store.zarr"]
