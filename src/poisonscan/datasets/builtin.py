"""The two datasets poisonscan had before the registry: the embedded synthetic signs and GTSRB.

Their loaders stay where they were (:mod:`poisonscan.data`, :mod:`poisonscan.gtsrb`); these
functions adapt them to a ``dataset`` config section.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from poisonscan.datasets._base import DatasetError, Inspection
from poisonscan.storage import ImageDataset

__all__ = ["inspect_gtsrb", "inspect_synthetic", "load_gtsrb", "load_synthetic"]


def load_synthetic(section: Mapping[str, Any]) -> ImageDataset:
    """:func:`poisonscan.data.make_synthetic_signs` with the section's counts, seed and size."""
    from poisonscan import data

    return data.make_synthetic_signs(
        n_train_per_class=section["n_train_per_class"],
        n_test_per_class=section["n_test_per_class"],
        seed=section["seed"],
        image_size=section["image_size"],
    )


def inspect_synthetic(section: Mapping[str, Any]) -> Inspection:
    from poisonscan import data

    n = len(data.CLASS_NAMES)
    return Inspection(list(data.CLASS_NAMES), np.full(n, section["n_train_per_class"], np.int64))


def load_gtsrb(section: Mapping[str, Any]) -> ImageDataset:
    """:func:`poisonscan.gtsrb.load_gtsrb`; its track ids are the near-duplicate groups."""
    from poisonscan import gtsrb

    ds = gtsrb.load_gtsrb(section["path"], section["image_size"], section["crop_roi"])
    return ds


def inspect_gtsrb(section: Mapping[str, Any]) -> Inspection:
    """43 classes; images per class from the npz labels (read alone) or the class folders.

    Counts are None if the files are not in a form this reads (the dataset step then
    reports it).

    Raises
    ------
    DatasetError
        If ``path`` does not exist.
    """
    from poisonscan import gtsrb

    path, n_classes = Path(str(section.get("path"))), len(gtsrb.CLASS_NAMES)
    if not path.exists():
        raise DatasetError(
            f"config key 'dataset.path': {path} does not exist (expected the GTSRB npz "
            "file or the folder holding GTSRB/Final_Training/Images)"
        )
    names = list(gtsrb.CLASS_NAMES)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                labels = np.asarray(f["y_train"], dtype=np.int64)  # only this member is read
        except (OSError, ValueError, KeyError, TypeError, EOFError):
            return Inspection(names)
        labels = labels[(labels >= 0) & (labels < n_classes)]
        return Inspection(names, np.bincount(labels, minlength=n_classes))
    for root in (path / "GTSRB", path):
        images = root / "Final_Training" / "Images"
        if images.is_dir():
            counts = [len(list((images / f"{c:05d}").glob("*.ppm"))) for c in range(n_classes)]
            return Inspection(names, np.array(counts, dtype=np.int64))
    return Inspection(names)
