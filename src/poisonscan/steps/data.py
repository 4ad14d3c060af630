"""Rules make_dataset and poison (rules/data.smk)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from poisonscan import data, datasets
from poisonscan.storage import read_dataset, write_csv, write_dataset

__all__ = ["BAD_INPUT_COLUMNS", "make_dataset", "poison_dataset"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Columns of bad_input.csv (rule make_dataset).
BAD_INPUT_COLUMNS = ("path", "class", "split", "problem", "action")


def make_dataset(
    out: PathLike,
    params: Mapping[str, Any],
    montage: PathLike | None = None,
    bad_input: PathLike | None = None,
) -> None:
    """Generate or import the dataset described by the ``dataset`` config section.

    The dataset comes from its registry entry (:func:`poisonscan.datasets.load_dataset`).
    With ``bad_input``, the bad files and classes of a user's dataset (all of them skipped:
    with ``on_bad_input: stop`` there are none, or loading stops) are written there as CSV
    (path, class, split, problem, action); header only when there are none.
    """
    t0 = time.perf_counter()
    problems: list[datasets.InputProblem] = []
    if datasets.DATASETS[params["name"]].user_data:
        problems = datasets.check_input(params).problems
        for p in problems:
            log.warning("skipped %s", p)
    ds = datasets.load_dataset(params)
    converted = ds.meta.get("converted") or {}
    if converted:
        log.info(
            "converted to RGB: %s", ", ".join(f"{n} {m}" for m, n in sorted(converted.items()))
        )
    log.info(
        "%s: %d train / %d test images of %d classes in %.1f s (%d bad files or classes skipped)",
        params["name"], len(ds.y_train), len(ds.y_test), ds.n_classes, time.perf_counter() - t0,
        len(problems),
    )  # fmt: skip
    write_dataset(out, ds)
    if bad_input is not None:
        write_csv(bad_input, datasets.bad_input_rows(problems, "skipped"), BAD_INPUT_COLUMNS)
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
        from poisonscan import checkpoints, devices

        if proxy is None:
            raise ValueError(f"attack {attack.name!r} needs a proxy checkpoint, none was given")
        devices.set_threads(threads)
        model, norm, meta = checkpoints.load_checkpoint(proxy, dataset=clean)
        info = {k: meta.get(k) for k in ("architecture", "n_classes", "weights_sha256")}
        proxy_model = Proxy(model, norm, info)
    t0 = time.perf_counter()
    poisoned = attack.poison(ds, proxy_model)
    extra = poisoned.extra
    log.info(
        "%s: %d of %d training images poisoned (target class %s), %d triggered test images, "
        "%.1f s", attack.name, int(extra["poison_mask"].sum()), len(poisoned.y_train),
        attack.target, len(extra.get("x_test_triggered", ())), time.perf_counter() - t0,
    )  # fmt: skip
    if "perturbation_norm" in extra:
        norms = extra["perturbation_norm"][extra["poison_mask"]]
        log.info("PGD perturbation norms: max %.3f, mean %.3f", norms.max(), norms.mean())
    write_dataset(out, poisoned)
    if montage is not None:
        save_attack_montage(ds, poisoned, montage)
