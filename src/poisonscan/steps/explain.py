"""Rule explain (rules/explain.smk)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import explain, training
from poisonscan.storage import read_dataset

__all__ = ["explain_target"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def explain_target(
    dataset: PathLike,
    checkpoint: PathLike,
    out: PathLike,
    scenario: Mapping[str, Any],
    params: Mapping[str, Any],
    threads: int = 1,
    montage: PathLike | None = None,
) -> None:
    """Heatmaps and activations of the training images of the configured classes.

    ``params["classes"]`` (default ``all``) selects the classes; the scenario's
    target class is always among them and is the store's default group. With
    ``montage``, also draw the target class's images, heatmaps and overlays.
    """
    training.set_threads(threads)
    p = explain.ExplainParams.from_config(params)
    ds = read_dataset(dataset)
    model, norm, meta = training.load_checkpoint(checkpoint)
    target = int(scenario["target"])
    poison = ds.extra.get("poison_mask", np.zeros(len(ds.y_train), dtype=bool))
    in_target = ds.y_train == target
    log.info("target class %d: %d images (%d poisoned)", target, int(in_target.sum()),
             int(poison[in_target].sum()))  # fmt: skip
    explain.explain_classes(
        model, norm, ds.x_train, ds.y_train, poison, out, p, target_class=target,
        attrs={"model_sha256": meta.get("weights_sha256", ""),
               "architecture": meta.get("architecture", "")},
    )  # fmt: skip
    if montage is not None:
        explain.save_montage(out, ds.x_train, montage, cls=target)
