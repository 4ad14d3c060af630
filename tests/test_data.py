"""Tests of the procedural traffic-sign dataset (poisonscan.data)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from poisonscan.data import CLASS_NAMES, make_synthetic_signs, render_sign, save_montage
from poisonscan.storage import ImageDataset


@pytest.fixture(scope="module")
def small() -> ImageDataset:
    return make_synthetic_signs(6, 3, seed=7)


def test_class_names() -> None:
    assert len(CLASS_NAMES) >= 12
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert CLASS_NAMES[2] == "speed limit 50"
    assert CLASS_NAMES[5] == "speed limit 80"
    assert CLASS_NAMES[8] == "stop"


def test_shapes_and_dtypes(small: ImageDataset) -> None:
    k = len(CLASS_NAMES)
    assert small.x_train.shape == (6 * k, 32, 32, 3)
    assert small.x_test.shape == (3 * k, 32, 32, 3)
    assert small.x_train.dtype == np.uint8
    assert small.x_test.dtype == np.uint8
    assert small.y_train.dtype == np.int64
    assert small.y_test.dtype == np.int64
    assert small.class_names == list(CLASS_NAMES)
    assert small.image_shape == (32, 32, 3)
    assert small.meta["generator"] == "synthetic_signs"
    assert small.meta["seed"] == 7
    assert small.meta["n_train_per_class"] == 6
    assert small.meta["n_test_per_class"] == 3
    assert small.meta["image_size"] == 32


def test_counts_and_label_range(small: ImageDataset) -> None:
    k = len(CLASS_NAMES)
    assert np.array_equal(np.bincount(small.y_train, minlength=k), np.full(k, 6))
    assert np.array_equal(np.bincount(small.y_test, minlength=k), np.full(k, 3))
    for y in (small.y_train, small.y_test):
        assert y.min() >= 0
        assert y.max() < k


def test_train_is_shuffled(small: ImageDataset) -> None:
    assert not np.all(np.diff(small.y_train) >= 0)


def test_images_vary(small: ImageDataset) -> None:
    x = small.x_train.astype(np.float64)
    assert x.std() > 20  # not blank
    flat = small.x_train.reshape(len(x), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)  # no duplicates


def test_deterministic() -> None:
    a = make_synthetic_signs(3, 2, seed=11)
    b = make_synthetic_signs(3, 2, seed=11)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = make_synthetic_signs(3, 2, seed=12)
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.x_test, c.x_test)


def test_render_sign_deterministic() -> None:
    x1 = render_sign(5, np.random.default_rng(3))
    x2 = render_sign(5, np.random.default_rng(3))
    assert x1.shape == (32, 32, 3)
    assert x1.dtype == np.uint8
    assert np.array_equal(x1, x2)
    assert not np.array_equal(x1, render_sign(5, np.random.default_rng(4)))


def test_subset_keeps_ids_and_images(small: ImageDataset) -> None:
    sub = make_synthetic_signs(6, 3, seed=7, classes=[5, 2])
    assert sub.class_names == list(CLASS_NAMES)
    assert sorted(np.unique(sub.y_train).tolist()) == [2, 5]
    assert np.array_equal(np.bincount(sub.y_train, minlength=6)[[2, 5]], [6, 6])
    assert sub.meta["classes"] == [5, 2]
    # an image does not depend on which other classes are generated
    for c in (2, 5):
        assert np.array_equal(sub.x_test[sub.y_test == c], small.x_test[small.y_test == c])


def test_other_image_size() -> None:
    d = make_synthetic_signs(2, 1, seed=0, image_size=48, classes=[0, 9])
    assert d.x_train.shape == (4, 48, 48, 3)
    assert d.x_test.shape == (2, 48, 48, 3)


def test_50_and_80_not_separable_by_mean_but_different() -> None:
    d = make_synthetic_signs(60, 60, seed=3, classes=[2, 5])
    ids = np.array([2, 5])

    def flat(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float64)

    # nearest class mean on raw pixels is close to chance
    means = np.stack([flat(d.x_train)[d.y_train == c].mean(0) for c in ids])
    dist = ((flat(d.x_test)[:, None, :] - means[None]) ** 2).sum(-1)
    acc_pixels = np.mean(ids[dist.argmin(1)] == d.y_test)
    assert acc_pixels < 0.95
    # and so is nearest class mean on the mean colour
    col_tr = d.x_train.reshape(len(d.x_train), -1, 3).mean(1)
    col_te = d.x_test.reshape(len(d.x_test), -1, 3).mean(1)
    cmeans = np.stack([col_tr[d.y_train == c].mean(0) for c in ids])
    dist_c = ((col_te[:, None, :] - cmeans[None]) ** 2).sum(-1)
    assert np.mean(ids[dist_c.argmin(1)] == d.y_test) < 0.95

    # the same random draw renders differently for 50 and 80 (only the digit differs)
    for s in range(5):
        a = render_sign(2, np.random.default_rng(s)).astype(np.int64)
        b = render_sign(5, np.random.default_rng(s)).astype(np.int64)
        assert np.abs(a - b).sum() > 0


def test_speed_limit_signs_share_layout() -> None:
    # with the same draw, two speed limits differ only in the digits (centre of the sign)
    a = render_sign(2, np.random.default_rng(0), image_size=64).astype(np.int64)
    b = render_sign(5, np.random.default_rng(0), image_size=64).astype(np.int64)
    diff = np.abs(a - b).sum(-1)
    assert diff.sum() > 0
    rows = np.nonzero(diff > 30)[0]
    assert rows.size > 0
    # the differing pixels are a small part of the image
    assert rows.size < 0.2 * diff.size


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train_per_class": 0}, "n_train_per_class.*0"),
        ({"n_train_per_class": -3}, "n_train_per_class.*-3"),
        ({"n_test_per_class": -1}, "n_test_per_class.*-1"),
        ({"image_size": 8}, "image_size.*8"),
        ({"classes": [0, 99]}, "class id 99"),
        ({"classes": [-1]}, "class id -1"),
        ({"classes": [1, 1]}, r"repeated class ids \[1\]"),
        ({"classes": []}, "at least one class"),
        ({"seed": -5}, "seed.*-5"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"n_train_per_class": 1, "n_test_per_class": 1, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_synthetic_signs(**args)  # type: ignore[arg-type]


def test_render_sign_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="class id 12"):
        render_sign(12, rng)
    with pytest.raises(ValueError, match="image_size.*15"):
        render_sign(0, rng, image_size=15)


def test_zero_test_images() -> None:
    d = make_synthetic_signs(1, 0, seed=0, classes=[3])
    assert d.x_test.shape == (0, 32, 32, 3)
    assert d.y_test.shape == (0,)


def test_montage(tmp_path, small: ImageDataset) -> None:
    out = tmp_path / "sub" / "montage.png"
    save_montage(small, out, per_class=4)
    assert out.is_file()
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size[0] > 100
        assert img.size[1] > 100
    assert [p.name for p in out.parent.iterdir()] == ["montage.png"]  # no temporaries left


def test_montage_bad_per_class(tmp_path, small: ImageDataset) -> None:
    with pytest.raises(ValueError, match="per_class.*0"):
        save_montage(small, tmp_path / "m.png", per_class=0)
