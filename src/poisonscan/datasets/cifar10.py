"""CIFAR-10 (Krizhevsky 2009) from one ``.npz`` file: the dataset ``cifar10``.

The file holds the official split as ``x_train`` (n, 32, 32, 3) uint8, ``y_train`` (n,)
class ids 0..9, ``x_test`` and ``y_test`` likewise, and the 10 class ``names`` (index =
class id); e.g. the class-balanced subset ``cifar10_30k.npz`` of the shared data (its
README gives the layout). Images are resized to ``dataset.image_size`` if it is not 32,
as GTSRB's are (:func:`poisonscan.gtsrb.resize_images`). CIFAR-10 has no near-duplicate
tracks: every training image is its own group (``extra["group_train"]``).

References
----------
A. Krizhevsky, "Learning multiple layers of features from tiny images", technical report,
University of Toronto, 2009.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from poisonscan.datasets._base import DatasetError, Inspection
from poisonscan.storage import ImageDataset

__all__ = ["N_CLASSES", "inspect_cifar10", "load_cifar10"]

N_CLASSES = 10
SIDE = 32
_KEYS = ("x_train", "y_train", "x_test", "y_test", "names")


def _path(section: Mapping[str, Any]) -> Path:
    path = Path(str(section.get("path")))
    if not path.is_file():
        raise DatasetError(
            f"config key 'dataset.path': {path} does not exist or is not a file (expected the "
            "CIFAR-10 .npz file with x_train, y_train, x_test, y_test and names)"
        )
    return path


def _fail(path: Path, what: str) -> DatasetError:
    return DatasetError(f"config key 'dataset.path': {path}: {what}")


def _read(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the npz file (only these are decompressed)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise _fail(path, f"lacks the arrays {missing}; expected {list(_KEYS)}")
            return {k: npz[k] for k in keys}
    except (OSError, ValueError, EOFError, AttributeError) as err:
        if isinstance(err, DatasetError):
            raise
        raise _fail(path, f"not a readable .npz file ({err})") from err


def _names(names: np.ndarray, path: Path) -> list[str]:
    if names.shape != (N_CLASSES,) or names.dtype.kind not in "US":
        raise _fail(
            path, f"names has shape {names.shape} and dtype {names.dtype}; expected "
            f"({N_CLASSES},) strings"
        )  # fmt: skip
    return [str(n) for n in names.astype(str)]


def _labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise _fail(path, f"{key} has shape {y.shape} and dtype {y.dtype}; expected ({n},) ints")
    if y.size and (y.min() < 0 or y.max() >= N_CLASSES):
        raise _fail(path, f"{key} holds class ids outside 0..{N_CLASSES - 1}")
    return y.astype(np.int64)


def _images(x: np.ndarray, path: Path, key: str) -> None:
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (SIDE, SIDE, 3):
        raise _fail(
            path, f"{key} has shape {x.shape} and dtype {x.dtype}; expected (n, {SIDE}, "
            f"{SIDE}, 3) uint8"
        )  # fmt: skip


def load_cifar10(section: Mapping[str, Any]) -> ImageDataset:
    """The official split of the npz file at ``section["path"]``, at ``image_size``.

    Raises
    ------
    DatasetError
        If the file is missing or unreadable, lacks an array, or an array has the wrong
        shape, dtype or class ids; the message names ``dataset.path`` and the file.
    """
    from poisonscan.gtsrb import resize_images

    path = _path(section)
    a = _read(path, _KEYS)
    names = _names(a["names"], path)
    size = int(section.get("image_size", SIDE))
    split: dict[str, np.ndarray] = {}
    for part in ("train", "test"):
        x = a[f"x_{part}"]
        _images(x, path, f"x_{part}")
        split[f"y_{part}"] = _labels(a[f"y_{part}"], len(x), path, f"y_{part}")
        split[f"x_{part}"] = resize_images(x, size)
    return ImageDataset(
        x_train=split["x_train"],
        y_train=split["y_train"],
        x_test=split["x_test"],
        y_test=split["y_test"],
        class_names=names,
        meta={"name": "cifar10", "path": str(path), "image_size": size},
        extra={"group_train": np.arange(len(split["y_train"]), dtype=np.int64)},
    )


def inspect_cifar10(section: Mapping[str, Any]) -> Inspection:
    """The class names and training images per class, from ``names`` and ``y_train`` alone.

    Raises
    ------
    DatasetError
        As :func:`load_cifar10`, for these two arrays.
    """
    path = _path(section)
    a = _read(path, ("y_train", "names"))
    names = _names(a["names"], path)
    y = _labels(a["y_train"], len(a["y_train"]), path, "y_train")
    return Inspection(names, np.bincount(y, minlength=N_CLASSES))
