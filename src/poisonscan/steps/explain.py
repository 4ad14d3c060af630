"""Rule explain (rules/explain.smk)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import checkpoints, devices, explain
from poisonscan.parameters import merge_performance
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
    performance: Mapping[str, Any] | None = None,
) -> None:
    """Heatmaps and activations of the training images of the configured classes.

    ``params["classes"]`` (default ``all``) selects the classes; the scenario's
    target class is always among them and is the store's default group. With
    ``montage``, also draw the target class's images, heatmaps and overlays.
    ``performance`` (dotted config keys) puts the knobs the workflow passes as
    resources (``explain.batch_size``) back into ``params``.
    """
    devices.set_threads(threads)
    p = explain.ExplainParams.from_config(merge_performance(params, "explain", performance))
    ds = read_dataset(dataset)
    # the checkpoint must have been trained on this very dataset file (its sidecar's sha256)
    model, norm, meta = checkpoints.load_checkpoint(checkpoint, dataset=dataset)
    # the audit of a user's dataset has no target class: every class is analysed
    target = None if scenario.get("target") is None else int(scenario["target"])
    poison = ds.extra.get("poison_mask", np.zeros(len(ds.y_train), dtype=bool))
    if target is not None:
        in_target = ds.y_train == target
        log.info("target class %d: %d images (%d poisoned)", target, int(in_target.sum()),
                 int(poison[in_target].sum()))  # fmt: skip
    explain.explain_classes(
        model, norm, ds.x_train, ds.y_train, poison, out, p, target_class=target,
        attrs={"model_sha256": meta["weights_sha256"],
               "architecture": meta.get("architecture", "")},
    )  # fmt: skip
    if montage is not None:
        # without a target class (an audit): the montage of the first class
        shown = target if target is not None else int(np.min(ds.y_train))
        explain.save_montage(out, ds.x_train, montage, cls=shown)
