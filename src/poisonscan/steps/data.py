"""Rules make_dataset and poison."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from poisonscan import data, gtsrb
from poisonscan.attacks import attack_from_config
from poisonscan.steps.common import PathLike, log
from poisonscan.storage import read_dataset, write_dataset


def make_dataset(out: PathLike, params: Mapping[str, Any], montage: PathLike | None = None) -> None:
    """Generate or import the dataset described by the ``dataset`` config section."""
    t0 = time.perf_counter()
    if params["name"] == "synthetic":
        ds = data.make_synthetic_signs(
            n_train_per_class=params["n_train_per_class"],
            n_test_per_class=params["n_test_per_class"],
            seed=params["seed"],
            image_size=params["image_size"],
        )
    elif params["name"] == "gtsrb":
        ds = gtsrb.load_gtsrb(params["path"], params["image_size"], params["crop_roi"])
    else:
        raise ValueError(f"unknown dataset {params['name']!r}; available: ['synthetic', 'gtsrb']")
    log.info(
        "%s: %d train / %d test images of %d classes in %.1f s", params["name"],
        len(ds.y_train), len(ds.y_test), ds.n_classes, time.perf_counter() - t0,
    )  # fmt: skip
    write_dataset(out, ds)
    if montage is not None:
        data.save_montage(ds, montage)


def poison_dataset(clean: PathLike, out: PathLike, scenario: Mapping[str, Any]) -> None:
    """Apply the scenario's attack to the clean dataset."""
    attack = attack_from_config(scenario)
    poisoned = attack.poison(read_dataset(clean))
    log.info(
        "%s: %d of %d training images poisoned (class %d -> %d), %d triggered test images",
        type(attack).__name__, int(poisoned.extra["poison_mask"].sum()), len(poisoned.y_train),
        attack.source, attack.target, len(poisoned.extra["x_test_triggered"]),
    )  # fmt: skip
    write_dataset(out, poisoned)
