"""Tests of the GTSRB loader (poisonscan.gtsrb) on small trees written in the official layout."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from poisonscan.datasets.split import group_split
from poisonscan.gtsrb import CLASS_NAMES, load_gtsrb, write_official_layout
from poisonscan.storage import ImageDataset

GTSRB_NPZ = Path(__file__).resolve().parents[1].parent / "shared/data/gtsrb/gtsrb32.npz"

CLASSES = (0, 2, 14)
TRACKS_PER_CLASS = 2
FRAMES = 3


def tiny_dataset(seed: int = 0) -> tuple[ImageDataset, np.ndarray]:
    """Random images: 3 classes x 2 tracks x 3 frames, frames of tracks interleaved."""
    rng = np.random.default_rng(seed)
    y, tracks = [], []
    for c in CLASSES:
        for _ in range(FRAMES):
            for t in range(TRACKS_PER_CLASS):
                y.append(c)
                tracks.append(1000 * c + 7 * t + 3)  # arbitrary ids, renumbered on writing
    y_train = np.array(y, dtype=np.int64)
    y_test = np.array([2, 0, 14, 2, 0], dtype=np.int64)
    data = ImageDataset(
        x_train=rng.integers(0, 256, size=(y_train.size, 32, 32, 3), dtype=np.uint8),
        y_train=y_train,
        x_test=rng.integers(0, 256, size=(y_test.size, 32, 32, 3), dtype=np.uint8),
        y_test=y_test,
        class_names=list(CLASS_NAMES),
    )
    return data, np.array(tracks, dtype=np.int64)


def match_rows(loaded: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Index into ``original`` of each loaded image (images are unique random noise)."""
    flat = original.reshape(len(original), -1)
    index = []
    for image in loaded.reshape(len(loaded), -1):
        hits = np.flatnonzero((flat == image).all(axis=1))
        assert hits.size == 1
        index.append(int(hits[0]))
    return np.array(index)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[ImageDataset, np.ndarray, Path]:
    data, tracks = tiny_dataset()
    gtsrb = write_official_layout(data, tmp_path / "archive", tracks, roi_margin=0)
    return data, tracks, gtsrb


def test_class_names() -> None:
    assert len(CLASS_NAMES) == 43
    assert len(set(CLASS_NAMES)) == 43
    assert CLASS_NAMES[0] == "speed limit 20"
    assert CLASS_NAMES[2] == "speed limit 50"
    assert CLASS_NAMES[5] == "speed limit 80"
    assert CLASS_NAMES[14] == "stop"
    assert CLASS_NAMES[42] == "end of no passing by vehicles over 3.5 t"


def test_layout_written(tree: tuple[ImageDataset, np.ndarray, Path]) -> None:
    _, _, gtsrb = tree
    assert gtsrb.name == "GTSRB"
    class_dir = gtsrb / "Final_Training" / "Images" / "00002"
    names = sorted(p.name for p in class_dir.glob("*.ppm"))
    assert names == [f"{t:05d}_{f:05d}.ppm" for t in range(2) for f in range(3)]
    header = (class_dir / "GT-00002.csv").read_text().splitlines()[0]
    assert header == "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
    assert (gtsrb / "Final_Test" / "Images" / "GT-final_test.csv").is_file()


@pytest.mark.parametrize("point_at_gtsrb", [False, True])
def test_round_trip(tree: tuple[ImageDataset, np.ndarray, Path], point_at_gtsrb: bool) -> None:
    data, tracks, gtsrb = tree
    path = gtsrb if point_at_gtsrb else gtsrb.parent
    loaded = load_gtsrb(path)
    assert loaded.x_train.shape == data.x_train.shape
    assert loaded.x_train.dtype == np.uint8
    assert loaded.y_train.dtype == np.int64
    assert loaded.class_names == list(CLASS_NAMES)
    assert loaded.meta == {
        "name": "gtsrb",
        "source": "archive",
        "image_size": 32,
        "crop_roi": False,
        "path": str(path),
    }
    # Same images (exactly) with the same labels, in class-folder order.
    idx = match_rows(loaded.x_train, data.x_train)
    assert sorted(idx) == list(range(len(data.x_train)))
    np.testing.assert_array_equal(loaded.y_train, data.y_train[idx])
    assert list(loaded.y_train) == sorted(loaded.y_train)
    # The test split keeps its order.
    np.testing.assert_array_equal(loaded.x_test, data.x_test)
    np.testing.assert_array_equal(loaded.y_test, data.y_test)
    # Track ids: int64, global (class * 100000 + track), same grouping as the original.
    got = loaded.extra["group_train"]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got // 100_000, loaded.y_train)
    original = tracks[idx]
    assert len(np.unique(got)) == len(np.unique(original)) == len(CLASSES) * TRACKS_PER_CLASS
    for t in np.unique(got):
        assert len(np.unique(original[got == t])) == 1
        assert (got == t).sum() == FRAMES


def test_crop_roi_and_resize(tmp_path: Path) -> None:
    data, tracks = tiny_dataset(1)
    gtsrb = write_official_layout(data, tmp_path, tracks, roi_margin=1)
    # With a 1-pixel margin, the ROI is the inner 30x30 block; at size 30 no resampling.
    cropped = load_gtsrb(gtsrb, image_size=30, crop_roi=True)
    assert cropped.x_train.shape == (len(data.x_train), 30, 30, 3)
    idx = match_rows(cropped.x_train, data.x_train[:, 1:31, 1:31])
    np.testing.assert_array_equal(cropped.y_train, data.y_train[idx])
    np.testing.assert_array_equal(cropped.x_test, data.x_test[:, 1:31, 1:31])
    assert cropped.meta["crop_roi"] is True
    # Cropped and resized to another size.
    small = load_gtsrb(gtsrb, image_size=16, crop_roi=True)
    assert small.x_train.shape == (len(data.x_train), 16, 16, 3)
    assert small.x_test.shape == (len(data.x_test), 16, 16, 3)
    assert small.x_train.dtype == np.uint8
    # Without crop_roi, the ROI is ignored and the whole image comes back.
    whole = load_gtsrb(gtsrb)
    match_rows(whole.x_train, data.x_train)


def test_test_csv_beside_gtsrb_and_unlisted_images(
    tree: tuple[ImageDataset, np.ndarray, Path],
) -> None:
    data, _, gtsrb = tree
    test_csv = gtsrb / "Final_Test" / "Images" / "GT-final_test.csv"
    shutil.move(test_csv, gtsrb.parent / "GT-final_test.csv")
    stray = gtsrb / "Final_Training" / "Images" / "00000" / "00099_00000.ppm"
    shutil.copy(gtsrb / "Final_Training" / "Images" / "00000" / "00000_00000.ppm", stray)
    for path in (gtsrb.parent, gtsrb):
        loaded = load_gtsrb(path)
        assert len(loaded.x_train) == len(data.x_train)
        np.testing.assert_array_equal(loaded.y_test, data.y_test)


def test_progress_logged(
    tree: tuple[ImageDataset, np.ndarray, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="poisonscan.gtsrb"):
        load_gtsrb(tree[2])
    assert any("GTSRB images" in r.getMessage() for r in caplog.records)


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        load_gtsrb(missing)
    assert "npz" in str(info.value)
    assert "GTSRB/Final_Training/Images" in str(info.value)
    with pytest.raises(FileNotFoundError, match="GTSRB/Final_Training/Images"):
        load_gtsrb(tmp_path)


def test_missing_class_csv(tree: tuple[ImageDataset, np.ndarray, Path]) -> None:
    _, _, gtsrb = tree
    (gtsrb / "Final_Training" / "Images" / "00002" / "GT-00002.csv").unlink()
    with pytest.raises(ValueError, match="GT-00002.csv") as info:
        load_gtsrb(gtsrb)
    assert "GTSRB/Final_Training/Images/000CC" in str(info.value)


def test_csv_names_missing_image(tree: tuple[ImageDataset, np.ndarray, Path]) -> None:
    _, _, gtsrb = tree
    (gtsrb / "Final_Training" / "Images" / "00014" / "00001_00002.ppm").unlink()
    with pytest.raises(ValueError, match="00001_00002.ppm") as info:
        load_gtsrb(gtsrb)
    assert "GT-00014.csv" in str(info.value)
    assert "expected" in str(info.value)


def test_missing_test_csv(tree: tuple[ImageDataset, np.ndarray, Path]) -> None:
    _, _, gtsrb = tree
    (gtsrb / "Final_Test" / "Images" / "GT-final_test.csv").unlink()
    with pytest.raises(ValueError, match="GT-final_test.csv") as info:
        load_gtsrb(gtsrb.parent)
    assert "GTSRB/Final_Test/Images" in str(info.value)


def test_test_csv_without_class_ids(tree: tuple[ImageDataset, np.ndarray, Path]) -> None:
    _, _, gtsrb = tree
    csv = gtsrb / "Final_Test" / "Images" / "GT-final_test.csv"
    lines = [line.rsplit(";", 1)[0] for line in csv.read_text().splitlines()]
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="ClassId"):
        load_gtsrb(gtsrb)


def test_npz_errors(tmp_path: Path) -> None:
    data, tracks = tiny_dataset()
    good = {
        "x_train": data.x_train,
        "y_train": data.y_train.astype(np.uint8),
        "track_train": (tracks % 100).astype(np.int16),
        "x_test": data.x_test,
        "y_test": data.y_test.astype(np.uint8),
    }
    path = tmp_path / "tiny.npz"
    np.savez(path, **good)
    loaded = load_gtsrb(path)
    np.testing.assert_array_equal(loaded.x_train, data.x_train)
    assert loaded.meta["source"] == "npz"
    assert loaded.extra["group_train"].dtype == np.int64
    np.testing.assert_array_equal(
        loaded.extra["group_train"], data.y_train * 100_000 + tracks % 100
    )
    resized = load_gtsrb(path, image_size=24)
    assert resized.x_train.shape == (len(data.x_train), 24, 24, 3)
    assert resized.x_test.shape == (len(data.x_test), 24, 24, 3)
    with pytest.raises(ValueError, match="ROI"):
        load_gtsrb(path, crop_roi=True)
    np.savez(path, **{k: v for k, v in good.items() if k != "track_train"})
    with pytest.raises(ValueError, match="track_train"):
        load_gtsrb(path)
    np.savez(path, **{**good, "x_train": data.x_train.astype(np.float32)})
    with pytest.raises(ValueError, match="x_train"):
        load_gtsrb(path)
    np.savez(path, **{**good, "y_test": data.y_test[:-1]})
    with pytest.raises(ValueError, match="y_test"):
        load_gtsrb(path)


def test_group_split() -> None:
    rng = np.random.default_rng(3)
    tracks = np.repeat(rng.permutation(200) * 11, rng.integers(5, 40, size=200))
    rng.shuffle(tracks)
    train, val = group_split(tracks, 0.2, seed=1)
    assert train.dtype == np.bool_ and val.dtype == np.bool_
    assert not (train & val).any()
    assert (train | val).all()
    assert not set(tracks[train]) & set(tracks[val])
    assert abs(val.mean() - 0.2) < 0.03
    again_train, again_val = group_split(tracks, 0.2, seed=1)
    np.testing.assert_array_equal(again_val, val)
    np.testing.assert_array_equal(again_train, train)
    _, other = group_split(tracks, 0.2, seed=2)
    assert not np.array_equal(other, val)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            group_split(tracks, bad, seed=0)


def test_group_split_few_tracks() -> None:
    tracks = np.array([5, 5, 5, 9, 9, 9])
    train, val = group_split(tracks, 0.9, seed=0)
    assert train.sum() == 3 and val.sum() == 3


@pytest.mark.skipif(not GTSRB_NPZ.exists(), reason="shared GTSRB npz not available")
def test_shared_npz() -> None:
    data = load_gtsrb(GTSRB_NPZ)
    assert data.x_train.shape == (39209, 32, 32, 3)
    assert data.x_test.shape == (12630, 32, 32, 3)
    assert data.y_train.dtype == np.int64
    counts = np.bincount(data.y_train, minlength=43)
    assert (counts[1], counts[2], counts[5]) == (2220, 2250, 1860)
    assert data.n_classes == 43
    tracks = data.extra["group_train"]
    assert tracks.shape == (39209,)
    np.testing.assert_array_equal(tracks // 100_000, data.y_train)
    # Tracks are ~30 frames of one sign: far fewer tracks than images.
    assert 39209 // 60 < len(np.unique(tracks)) < 39209 // 10
    train, val = group_split(tracks, 0.1, seed=0)
    assert not set(tracks[train]) & set(tracks[val])
