"""The dataset registry (poisonscan.datasets): image folders, npz files, bad input, held-out split.

Image folders are written in tmp from the synthetic generator, as PNG and JPEG files of mixed
sizes and modes (grayscale, RGBA, 16-bit, palette).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO
from PIL import Image

from poisonscan.config import ConfigError, load_schema, validate_config
from poisonscan.data import make_synthetic_signs
from poisonscan.datasets import (
    DATASETS,
    BadInputError,
    DatasetError,
    check_input,
    inspect_dataset,
    load_dataset,
)
from poisonscan.datasets.split import dhash, duplicate_groups, holdout_split
from poisonscan.storage import read_dataset, write_dataset

SCHEMA = load_schema(REPO / "config" / "schema.yaml")
DEFAULTS = {k: v["default"] for k, v in SCHEMA["properties"]["dataset"]["properties"].items()
            if "default" in v}  # fmt: skip
CLASSES = ("stop", "speed 20", "yield")  # sorted: "speed 20", "stop", "yield"
SYNTHETIC_ID = {"speed 20": 0, "stop": 8, "yield": 9}  # other names: general caution (11)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POISONSCAN_CACHE_DIR", str(tmp_path / "cache"))


def section(**values: Any) -> dict[str, Any]:
    """A ``dataset`` section with the schema's defaults."""
    return {**copy.deepcopy(DEFAULTS), **values}


def signs(n: int, cls: str, seed: int = 0) -> np.ndarray:
    return make_synthetic_signs(n, 0, seed, 32, classes=[SYNTHETIC_ID.get(cls, 11)]).x_train


def save(image: np.ndarray, path: Path, kind: str) -> None:
    """Save ``image`` (32, 32, 3) as ``kind``: png, jpeg, gray (L, 40 px), rgba (48 px),
    gray16 (I;16), palette (P, 24 px)."""
    img = Image.fromarray(image)
    if kind == "png":
        img.save(path, format="PNG")
    elif kind == "jpeg":
        img.save(path, format="JPEG", quality=95)
    elif kind == "gray":
        img.convert("L").resize((40, 40)).save(path, format="PNG")
    elif kind == "rgba":
        img.convert("RGBA").resize((48, 48)).save(path, format="PNG")
    elif kind == "gray16":
        wide = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(wide).save(path, format="PNG")
    elif kind == "palette":
        img.convert("P").resize((24, 24)).save(path, format="PNG")
    else:
        raise ValueError(kind)


KINDS = ("png", "jpeg", "gray", "rgba", "gray16", "palette")
EXT = {"jpeg": ".jpg"}


def write_folder(root: Path, n: int = 12, classes: tuple[str, ...] = CLASSES) -> Path:
    """One subfolder per class, ``n`` images each, cycling through :data:`KINDS`."""
    for cls in classes:
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(signs(n, cls)):
            kind = KINDS[i % len(KINDS)]
            save(image, folder / f"img{i:03d}{EXT.get(kind, '.png')}", kind)
    return root


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- registry


def test_registry_names_every_dataset_and_the_schema_lists_them() -> None:
    assert set(DATASETS) == {"synthetic", "gtsrb", "cifar10", "folder", "npz"}
    assert SCHEMA["properties"]["dataset"]["properties"]["name"]["enum"] == list(DATASETS)
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        load_dataset(section(name="nope"))


def test_synthetic_entry_equals_the_generator() -> None:
    ds = load_dataset(section(name="synthetic", n_train_per_class=10, n_test_per_class=1))
    ref = make_synthetic_signs(10, 1, 0, 32)
    assert np.array_equal(ds.x_train, ref.x_train) and np.array_equal(ds.y_test, ref.y_test)
    assert inspect_dataset(section(name="synthetic")).counts.tolist() == [400] * 12


# --------------------------------------------------------------------------- image folder


def test_folder_reads_mixed_sizes_and_modes_into_rgb(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    info = check_input(section(name="folder", path=str(root)))
    assert info.class_names == sorted(CLASSES) and info.counts.tolist() == [12, 12, 12]
    assert info.problems == []
    assert info.converted == {"L": 6, "RGBA": 6, "I;16": 6, "P": 6}  # accepted, converted
    ds = load_dataset(section(name="folder", path=str(root)))
    assert ds.class_names == ["speed 20", "stop", "yield"]
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.x_train.dtype == np.uint8
    assert len(ds.y_train) + len(ds.y_test) == 36
    paths = np.concatenate([ds.extra["path_train"], ds.extra["path_test"]])
    assert sorted(paths) == sorted(str(p) for p in root.glob("*/*"))
    # every image is where its path says: labels from the folder names
    for p, y in zip(ds.extra["path_train"], ds.y_train, strict=True):
        assert Path(p).parent.name == ds.class_names[y]
    # an RGB PNG of the right size is read unchanged; 16-bit grey is scaled, not clipped
    first = str(root / "stop" / "img000.png")
    i = list(ds.extra["path_train"]).index(first) if first in ds.extra["path_train"] else None
    x = ds.x_train[i] if i is not None else ds.x_test[list(ds.extra["path_test"]).index(first)]
    assert np.array_equal(x, signs(12, "stop")[0])
    j = next(k for k, p in enumerate(ds.extra["path_train"]) if p.endswith("img004.png"))
    grey = np.asarray(Image.fromarray(signs(12, ds.class_names[ds.y_train[j]])[4]).convert("L"))
    assert np.array_equal(ds.x_train[j][..., 0], grey)  # 65535 -> 255 scaling, exact for 257 x v


def test_paths_and_groups_round_trip_through_the_dataset_file(tmp_path: Path) -> None:
    ds = load_dataset(section(name="folder", path=str(write_folder(tmp_path / "data"))))
    write_dataset(tmp_path / "dataset.h5", ds)
    back = read_dataset(tmp_path / "dataset.h5")
    for key in ("path_train", "path_test", "group_train"):
        assert np.array_equal(back.extra[key], ds.extra[key]), key
    assert back.extra["path_train"].dtype.kind == "U"


def test_given_test_folder_is_used_and_unknown_test_classes_are_reported(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "train")
    test = write_folder(tmp_path / "test", n=3, classes=("stop", "yield"))
    ds = load_dataset(section(name="folder", path=str(root), test_path=str(test)))
    assert ds.meta["split"] == "given" and len(ds.y_train) == 36 and len(ds.y_test) == 6
    assert all(p.startswith(str(test)) for p in ds.extra["path_test"])
    write_folder(tmp_path / "test", n=2, classes=("speed 20", "cats"))
    with pytest.raises(BadInputError, match=r"test class 'cats' has no class folder"):
        check_input(section(name="folder", path=str(root), test_path=str(test)))


# --------------------------------------------------------------------------- bad input


def problems_of(root: Path, **kw: Any) -> str:
    with pytest.raises(BadInputError) as err:
        check_input(section(name="folder", path=str(root), **kw))
    return str(err.value)


def test_truncated_and_unreadable_images_are_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    whole = png_bytes(signs(1, "stop")[0])
    (root / "stop" / "cut.png").write_bytes(whole[: len(whole) // 2])
    jpeg = (root / "yield" / "img001.jpg").read_bytes()
    (root / "yield" / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    (root / "yield" / "garbage.png").write_bytes(b"not an image at all")
    text = problems_of(root)
    assert text.startswith("3 problems in ")
    assert f"{root / 'stop' / 'cut.png'}: unreadable or truncated image" in text
    assert f"{root / 'yield' / 'cut.jpg'}: unreadable or truncated image" in text
    assert f"{root / 'yield' / 'garbage.png'}: unreadable or truncated image" in text


def test_empty_class_folder(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    (root / "cats").mkdir()
    assert f"{root / 'cats'}/: empty class folder" in problems_of(root)


def test_single_class_stops_even_when_skipping(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", classes=("stop",))
    assert "only the class 'stop'" in problems_of(root)
    text = problems_of(root, on_bad_input="skip")
    assert "only the class 'stop'" in text and "skipping bad files and classes cannot" in text


def test_class_with_three_images_is_below_the_minimum(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", classes=("stop", "yield"))
    write_folder(root, n=3, classes=("speed 20",))
    text = problems_of(root)
    assert text.startswith("1 problem in")
    assert (f"{root / 'speed 20'}/: class 'speed 20' has 3 usable image(s), fewer than "
            "dataset.min_images_per_class = 10") in text  # fmt: skip
    assert DEFAULTS["min_images_per_class"] == 10
    # the minimum is a config key
    assert (
        check_input(section(name="folder", path=str(root), min_images_per_class=3)).problems == []
    )


def test_duplicate_file_names_within_a_class(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    save(signs(1, "stop", seed=5)[0], root / "stop" / "IMG000.jpg", "jpeg")
    # sorted, IMG000.jpg comes first: the later img000.png is the duplicate
    expected = (f"{root / 'stop' / 'img000.png'}: duplicate file name: same name as "
                f"{root / 'stop' / 'IMG000.jpg'} apart from case or extension")  # fmt: skip
    assert expected in problems_of(root)


def test_non_image_file_and_stray_files_are_named(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    (root / "stop" / "notes.txt").write_text("labels checked by Bob")
    (root / "labels.csv").write_text("a,b")
    (root / "stop" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    (root / "yield" / "more").mkdir()
    text = problems_of(root)
    assert text.startswith("3 problems")
    assert f"{root / 'stop' / 'notes.txt'}: not an image file" in text
    assert f"{root / 'labels.csv'}: file outside any class folder" in text
    assert f"{root / 'yield' / 'more'}/: folder inside a class folder" in text


def test_every_problem_is_listed_at_once_and_skip_leaves_them_out(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    (root / "stop" / "notes.txt").write_text("x")
    (root / "yield" / "cut.png").write_bytes(png_bytes(signs(1, "yield")[0])[:60])
    (root / "cats").mkdir()
    (root / "dogs").mkdir()
    save(signs(1, "stop")[0], root / "dogs" / "a.png", "png")
    assert problems_of(root).startswith("4 problems")  # notes, cut, cats/ empty, dogs tiny
    skip = section(name="folder", path=str(root), on_bad_input="skip")
    info = check_input(skip)
    assert info.class_names == sorted(CLASSES) and len(info.problems) == 4
    ds = load_dataset(skip)
    assert ds.class_names == sorted(CLASSES)
    used = set(ds.extra["path_train"]) | set(ds.extra["path_test"])
    assert str(root / "yield" / "cut.png") not in used and len(used) == 36


def test_config_validation_reports_bad_input_before_any_work(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    (root / "stop" / "notes.txt").write_text("x")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["dataset"] = {"name": "folder", "path": str(root)}
    cfg["scenarios"] = {"control": {"attack": "clean", "target": 0}}
    cfg["clustering"] = {"methods": ["hc_l2", "ac"], "spray": {"n_neighbors": 5}}
    cfg["distances"] = {"methods": ["l2"]}
    cfg["removal"] = {"methods": []}
    with pytest.raises(ConfigError, match=r"(?s)config key 'dataset.path': 1 problem in .*"
                       r"notes.txt: not an image file"):  # fmt: skip
        validate_config(cfg, SCHEMA)
    cfg["dataset"]["on_bad_input"] = "skip"
    assert validate_config(cfg, SCHEMA)["dataset"]["test_fraction"] == 0.2
    cfg["dataset"]["path"] = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"config key 'dataset.path': .*nope does not exist"):
        validate_config(cfg, SCHEMA)
    cfg["dataset"]["path"] = str(root)
    cfg["scenarios"]["control"]["target"] = 3
    with pytest.raises(ConfigError, match=r"class 3 does not exist in dataset 'folder'.*0\.\.2"):
        validate_config(cfg, SCHEMA)


def test_checked_files_are_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    from poisonscan.datasets import folder

    root = write_folder(tmp_path / "data")
    check_input(section(name="folder", path=str(root)))
    folder._MEMO.clear()
    assert len(list((tmp_path / "cache" / "input-checks").glob("*.json"))) == 1
    (root / "stop" / "img000.png").write_bytes(b"broken now")
    assert "img000.png: unreadable" in problems_of(root)  # a changed file is checked again


# --------------------------------------------------------------------------- npz


def test_npz_with_x_y_and_names_holds_out_a_test_split(tmp_path: Path) -> None:
    ref = make_synthetic_signs(15, 0, 0, 32, classes=[0, 8, 9])
    y = np.searchsorted([0, 8, 9], ref.y_train)
    np.savez(tmp_path / "d.npz", x=ref.x_train.astype(np.float32) / 255.0, y=y,
             names=np.array(["a", "b", "c"]))  # fmt: skip
    ds = load_dataset(section(name="npz", path=str(tmp_path / "d.npz")))
    assert ds.class_names == ["a", "b", "c"] and ds.meta["split"] == "held_out"
    assert len(ds.y_train) + len(ds.y_test) == 45
    assert np.bincount(ds.y_test).tolist() == [3, 3, 3]  # 20 % of 15 per class
    i = int(ds.extra["path_train"][0].rpartition("[")[2][:-1])
    assert ds.extra["path_train"][0] == f"{tmp_path / 'd.npz'}#x[{i}]"
    assert np.array_equal(ds.x_train[0], ref.x_train[i])  # float [0, 1] -> uint8 exactly


def test_npz_with_given_splits_channels_first_and_one_hot(tmp_path: Path) -> None:
    ref = make_synthetic_signs(10, 2, 0, 32, classes=[0, 8])
    y = (ref.y_train == 8).astype(int)
    np.savez(tmp_path / "d.npz", x_train=np.moveaxis(ref.x_train, -1, 1), y_train=np.eye(2)[y],
             x_test=ref.x_test, y_test=(ref.y_test == 8).astype(int))  # fmt: skip
    ds = load_dataset(section(name="npz", path=str(tmp_path / "d.npz"), image_size=16))
    assert ds.meta["split"] == "given" and ds.x_train.shape == (20, 16, 16, 3)
    assert ds.class_names == ["0", "1"] and np.array_equal(ds.y_train, y)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 8, 8, 2), np.uint8), "y": np.zeros(4, int)},
         r"x has shape \(4, 8, 8, 2\)"),
        ({"x": np.zeros((4, 8, 8, 3)), "y": np.zeros(3, int)}, r"y has shape \(3,\)"),
        ({"x": np.zeros((4, 8, 8, 3)), "y": -np.ones(4, int)}, "negative class ids"),
        ({"images": np.zeros((4, 8, 8, 3))}, "expected x and y, or x_train"),
        ({"x": np.zeros((4, 8, 8, 3)), "y": np.arange(4), "names": np.array(["a"])},
         "names holds 1 class names, but the labels go up to 3"),
    ],
)  # fmt: skip
def test_bad_npz_files_name_the_array(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DatasetError, match=message):
        inspect_dataset(section(name="npz", path=str(tmp_path / "d.npz")))


def test_npz_small_classes_are_problems_and_skipped_classes_renumbered(tmp_path: Path) -> None:
    x = make_synthetic_signs(12, 0, 0, 32, classes=[0, 8]).x_train
    y = np.r_[np.zeros(12, int), np.ones(3, int), np.full(12, 2)]
    np.savez(tmp_path / "d.npz", x=np.concatenate([x[:12], x[:3], x[12:]]), y=y)
    with pytest.raises(BadInputError, match=r"class '1' \(id 1\) has 3 image\(s\)"):
        check_input(section(name="npz", path=str(tmp_path / "d.npz")))
    ds = load_dataset(section(name="npz", path=str(tmp_path / "d.npz"), on_bad_input="skip"))
    assert ds.class_names == ["0", "2"] and set(np.unique(ds.y_train)) == {0, 1}
    assert not any("#x[1" in p and int(p[p.index("[") + 1 : -1]) in (12, 13, 14)
                   for p in ds.extra["path_train"])  # fmt: skip


# --------------------------------------------------------------------------- split


def test_near_duplicates_and_exact_copies_form_groups() -> None:
    x = make_synthetic_signs(8, 0, 0, 32, classes=[0, 8]).x_train
    y = np.r_[np.zeros(8, int), np.ones(8, int)]
    shrunk = np.asarray(Image.fromarray(x[0]).resize((30, 30)).resize((32, 32)))
    xs = np.concatenate([x, shrunk[None], x[9][None]])  # a near copy (class 0), an exact one
    ys = np.r_[y, 0, 0]  # ... the exact copy of a class-1 image labelled 0
    assert int(np.bitwise_count(dhash(shrunk[None]) ^ dhash(x[:1]))[0]) <= 4
    groups = duplicate_groups(xs, ys, 4)
    assert groups[16] == groups[0] and groups[17] == groups[9]
    assert len(np.unique(groups)) == 16
    assert len(np.unique(duplicate_groups(xs, ys, -1))) == 17  # exact copies only


def test_holdout_is_stratified_and_keeps_groups_whole() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [100, 60, 40])
    groups = np.concatenate([rng.integers(0, 30, 100), 100 + rng.integers(0, 20, 60),
                             200 + rng.integers(0, 10, 40)])  # fmt: skip
    test = holdout_split(labels, groups, 0.2, seed=0)
    for g in np.unique(groups):
        assert len(set(test[groups == g])) == 1, g  # whole groups only
    for c, n in ((0, 100), (1, 60), (2, 40)):
        assert abs(test[labels == c].sum() - 0.2 * n) <= max(np.bincount(groups[labels == c])), c
    assert np.array_equal(test, holdout_split(labels, groups, 0.2, seed=0))
    # a class that is one group stays in training (and says so)
    one = holdout_split(np.r_[labels, [3] * 5], np.r_[groups, [999] * 5], 0.2, seed=0)
    assert not one[-5:].any()


def test_folder_split_keeps_copies_of_an_image_on_one_side(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", n=15)
    base = signs(1, "yield", seed=3)[0]
    for k in range(6):  # six copies of one image, some re-encoded: one group
        save(base, root / "yield" / f"copy{k}{'.jpg' if k % 2 else '.png'}",
             "jpeg" if k % 2 else "png")  # fmt: skip
    ds = load_dataset(section(name="folder", path=str(root), seed=1))
    copies_train = [p for p in ds.extra["path_train"] if "copy" in p]
    copies_test = [p for p in ds.extra["path_test"] if "copy" in p]
    assert sorted(copies_train + copies_test) == sorted(str(p) for p in root.glob("yield/copy*"))
    assert not (copies_train and copies_test)
    group = {ds.extra["group_train"][i] for i, p in enumerate(ds.extra["path_train"])
             if "copy" in p}  # fmt: skip
    assert len(group) <= 1


def test_make_dataset_lists_skipped_input_and_writes_nothing_when_it_stops(tmp_path: Path) -> None:
    import csv

    from poisonscan.steps.data import BAD_INPUT_COLUMNS, make_dataset

    root = write_folder(tmp_path / "data")
    (root / "stop" / "notes.txt").write_text("x")
    results = tmp_path / "results"
    with pytest.raises(BadInputError, match="notes.txt: not an image file"):
        make_dataset(results / "dataset.h5", section(name="folder", path=str(root)),
                     bad_input=results / "bad_input.csv")  # fmt: skip
    assert not results.exists() or not any(results.iterdir())  # nothing half-written
    make_dataset(results / "dataset.h5", section(name="folder", path=str(root),
                 on_bad_input="skip"), bad_input=results / "bad_input.csv")  # fmt: skip
    with open(results / "bad_input.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == BAD_INPUT_COLUMNS
    assert rows == [{"path": str(root / "stop" / "notes.txt"), "class": "stop", "split": "train",
                     "problem": rows[0]["problem"], "action": "skipped"}]  # fmt: skip
    assert sorted(p.name for p in results.iterdir()) == ["bad_input.csv", "dataset.h5"]
    assert len(read_dataset(results / "dataset.h5").class_names) == 3


# --------------------------------------------------------------------------- CIFAR-10

CIFAR10_NPZ = REPO.parent / "shared" / "data" / "cifar10" / "cifar10_30k.npz"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]  # fmt: skip


def cifar10_arrays(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Small random arrays in the layout of ``cifar10_30k.npz``."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        "y_train": np.arange(n_train, dtype=np.int64) % 10,
        "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        "y_test": np.arange(n_test, dtype=np.int64) % 10,
        "names": np.array(CIFAR10_NAMES),
    }


def test_cifar10_reads_the_shared_subset() -> None:
    if not CIFAR10_NPZ.is_file():
        pytest.skip(f"{CIFAR10_NPZ} is not there")
    sec = section(name="cifar10", path=str(CIFAR10_NPZ))
    info = inspect_dataset(sec)
    assert info.class_names == CIFAR10_NAMES and info.counts.tolist() == [3000] * 10
    ds = load_dataset(sec)
    assert ds.x_train.shape == (30000, 32, 32, 3) and ds.x_test.shape == (5000, 32, 32, 3)
    assert ds.x_train.dtype == ds.x_test.dtype == np.uint8
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert np.bincount(ds.y_test).tolist() == [500] * 10
    assert ds.class_names == CIFAR10_NAMES
    assert np.array_equal(ds.extra["group_train"], np.arange(30000))
    with np.load(CIFAR10_NPZ) as f:  # the official order, pixels unchanged
        assert np.array_equal(ds.x_test, f["x_test"]) and np.array_equal(ds.y_train, f["y_train"])


def test_cifar10_is_resized_to_image_size_like_gtsrb(tmp_path: Path) -> None:
    from poisonscan.gtsrb import resize_images

    arrays = cifar10_arrays()
    np.savez(tmp_path / "c.npz", **arrays)
    same = load_dataset(section(name="cifar10", path=str(tmp_path / "c.npz")))
    assert np.array_equal(same.x_train, arrays["x_train"])
    big = load_dataset(section(name="cifar10", path=str(tmp_path / "c.npz"), image_size=64))
    assert big.x_train.shape == (20, 64, 64, 3) and big.x_test.shape == (10, 64, 64, 3)
    assert np.array_equal(big.x_test, resize_images(arrays["x_test"], 64))
    assert big.meta["image_size"] == 64 and big.class_names == CIFAR10_NAMES


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_train": np.zeros((20, 28, 28, 3), np.uint8)},
         r"x_train has shape \(20, 28, 28, 3\) and dtype uint8; expected \(n, 32, 32, 3\)"),
        ({"x_test": np.zeros((10, 32, 32, 3), np.float32)}, r"x_test .* dtype float32"),
        ({"y_train": np.zeros(19, np.int64)}, r"y_train has shape \(19,\)"),
        ({"y_test": np.full(10, 10)}, r"y_test holds class ids outside 0..9"),
        ({"names": np.array(["a", "b"])}, r"names has shape \(2,\)"),
        ({"names": None}, r"lacks the arrays \['names'\]"),
    ],
)  # fmt: skip
def test_bad_cifar10_files_name_the_key_and_the_file(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    arrays = {**cifar10_arrays(), **change}
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    sec = section(name="cifar10", path=str(path))
    with pytest.raises(DatasetError, match=rf"config key 'dataset.path': {path}: {message}"):
        load_dataset(sec)
    if "names" in change:  # the inspection reads names and y_train only
        with pytest.raises(DatasetError, match=message):
            inspect_dataset(sec)


def test_cifar10_needs_an_existing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    for check in (inspect_dataset, load_dataset):
        with pytest.raises(DatasetError, match=rf"'dataset.path': {missing} does not exist"):
            check(section(name="cifar10", path=str(missing)))
    (tmp_path / "junk.npz").write_text("not an npz")
    with pytest.raises(DatasetError, match=r"junk.npz: not a readable .npz file"):
        load_dataset(section(name="cifar10", path=str(tmp_path / "junk.npz")))
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["dataset"] = {"name": "cifar10"}
    with pytest.raises(ConfigError, match="path"):
        validate_config(cfg, SCHEMA)
