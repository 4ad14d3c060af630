"""Rules make_dataset, train_proxy and poison."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import data, gtsrb, training
from poisonscan.attacks import Proxy, attack_from_config, save_attack_montage
from poisonscan.steps.common import PathLike, log, set_threads, write_json
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


def train_proxy(
    clean: PathLike,
    checkpoint: PathLike,
    metrics: PathLike,
    model: Mapping[str, Any],
    params: Mapping[str, Any],
    threads: int = 1,
) -> None:
    """Train the clean proxy model that the label-consistent attack runs PGD against.

    Same architecture and training parameters as the attacked model (the
    ``model`` and ``training`` config sections), on the clean dataset; writes
    the checkpoint (+ sidecar) and a metrics JSON with the clean test accuracy.
    """
    set_threads(threads)
    ds = read_dataset(clean)
    device = training.select_device()
    log.info("training proxy %s on %s (%d clean images)", model["name"], device, len(ds.y_train))
    result = training.train_model(
        ds, model["name"], training.TrainParams.from_config(params), device
    )
    pred = training.predict(result.model, result.normalization, ds.x_test)
    clean_acc = float(np.mean(pred == ds.y_test))
    log.info("proxy clean test accuracy %.4f", clean_acc)
    training.save_checkpoint(
        checkpoint, result.model, model["name"], ds, result.normalization,
        extra={"training": dict(params), "dataset_meta": ds.meta, "role": "proxy"},
    )  # fmt: skip
    write_json(
        metrics,
        {"clean_acc": clean_acc, "epochs": len(result.history), "seconds": result.seconds,
         "device": str(device), "history": result.history},
    )  # fmt: skip


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
    set_threads(threads)
    attack = attack_from_config(scenario)
    ds = read_dataset(clean)
    proxy_model = None
    if attack.needs_proxy:
        if proxy is None:
            raise ValueError(f"attack {attack.name!r} needs a proxy checkpoint, none given")
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
