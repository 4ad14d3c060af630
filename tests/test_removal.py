"""Removal of flagged samples (poisonscan.removal)."""

from __future__ import annotations

import numpy as np
import pytest

from poisonscan.removal import REMOVAL_COLUMNS, filter_training_set, removal_mask, removal_row
from poisonscan.storage import ImageDataset


def dataset() -> ImageDataset:
    n = 10
    x = np.arange(n * 4 * 4 * 3, dtype=np.uint8).reshape(n, 4, 4, 3)
    y = np.arange(n) % 3
    poison = np.zeros(n, bool)
    poison[[2, 5]] = True
    extra = {"poison_mask": poison, "y_train_original": y + 10, "x_test_triggered": x[:4],
             "y_test_triggered_original": np.zeros(4, int)}  # fmt: skip
    return ImageDataset(x, y, x[:4], y[:4], ["a", "b", "c"], meta={"k": 1}, extra=extra)


def test_removal_mask_maps_class_flags_to_training_positions() -> None:
    mask = removal_mask(10, np.array([1, 4, 7]), np.array([True, False, True]))
    assert np.flatnonzero(mask).tolist() == [1, 7]
    with pytest.raises(ValueError, match="out of range"):
        removal_mask(5, np.array([1, 7]), np.array([True, True]))
    with pytest.raises(ValueError, match="shapes differ"):
        removal_mask(5, np.array([1]), np.array([True, True]))


def test_filter_training_set_keeps_aligned_extras_and_test_data() -> None:
    ds = dataset()
    remove = np.zeros(10, bool)
    remove[[2, 3]] = True
    out = filter_training_set(ds, remove)
    keep = ~remove
    np.testing.assert_array_equal(out.x_train, ds.x_train[keep])
    np.testing.assert_array_equal(out.y_train, ds.y_train[keep])
    np.testing.assert_array_equal(out.extra["poison_mask"], ds.extra["poison_mask"][keep])
    np.testing.assert_array_equal(out.extra["y_train_original"], ds.y_train[keep] + 10)
    # test data (even of length 10) untouched
    np.testing.assert_array_equal(out.x_test, ds.x_test)
    assert out.extra["x_test_triggered"].shape[0] == 4
    assert out.meta == {"k": 1, "removed": 2} and ds.meta == {"k": 1}
    with pytest.raises(ValueError, match="remove must have shape"):
        filter_training_set(ds, np.zeros(3, bool))


def test_removal_row_counts() -> None:
    poison = np.zeros(10, bool)
    poison[[2, 5]] = True
    remove = np.zeros(10, bool)
    remove[[2, 3]] = True
    row = removal_row("hc_l2", remove, poison, {"clean_acc": 0.9, "asr": 0.5})
    assert list(row) == list(REMOVAL_COLUMNS)
    assert (row["n_removed"], row["n_poison_removed"], row["n_clean_removed"]) == (2, 1, 1)
    assert row["n_poison_left"] == 1 and row["asr"] == 0.5
