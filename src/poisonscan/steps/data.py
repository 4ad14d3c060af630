"""Rules make_dataset and poison (rules/data.smk)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from poisonscan import data, gtsrb
from poisonscan.storage import read_dataset, write_dataset

__all__ = ["make_dataset", "poison_dataset"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


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


def poison_dataset(
    clean: PathLike,
    out: PathLike,
    scenario: Mapping[str, Any],
    montage: PathLike | None = None,
    proxy: PathLike | None = None,
    threads: int = 1,
) -> None:
    """Apply the scenario's attack to the clean dataset; optionally draw its montage.

    ``proxy`` is the clean proxy checkpoint, required by attacks with
    ``needs_proxy`` (label-consistent) and ignored by the others.
    """
    from poisonscan.attacks import Proxy, attack_from_config, save_attack_montage

    attack = attack_from_config(scenario)
    ds = read_dataset(clean)
    proxy_model = None
    if attack.needs_proxy:
        from poisonscan import training

        if proxy is None:
            raise ValueError(f"attack {attack.name!r} needs a proxy checkpoint, none was given")
        training.set_threads(threads)
        model, norm, meta = training.load_checkpoint(proxy)
        info = {k: meta.get(k) for k in ("architecture", "n_classes", "weights_sha256")}
        proxy_model = Proxy(model, norm, info)
    t0 = time.perf_counter()
    poisoned = attack.poison(ds, proxy_model)
    extra = poisoned.extra
    log.info(
        "%s: %d of %d training images poisoned (target class %d), %d triggered test images, "
        "%.1f s", attack.name, int(extra["poison_mask"].sum()), len(poisoned.y_train),
        attack.target, len(extra.get("x_test_triggered", ())), time.perf_counter() - t0,
    )  # fmt: skip
    if "perturbation_norm" in extra:
        norms = extra["perturbation_norm"][extra["poison_mask"]]
        log.info("PGD perturbation norms: max %.3f, mean %.3f", norms.max(), norms.mean())
    write_dataset(out, poisoned)
    if montage is not None:
        save_attack_montage(ds, poisoned, montage)
