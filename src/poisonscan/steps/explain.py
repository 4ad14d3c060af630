"""Rule explain."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import explain, training
from poisonscan.steps.common import PathLike, log, set_threads
from poisonscan.storage import read_dataset


def explain_target(
    dataset: PathLike,
    checkpoint: PathLike,
    out: PathLike,
    scenario: Mapping[str, Any],
    params: Mapping[str, Any],
    threads: int = 1,
) -> None:
    """LRP heatmaps and activations of every training image labelled as the target class."""
    set_threads(threads)
    ds = read_dataset(dataset)
    model, norm, meta = training.load_checkpoint(checkpoint)
    cls = int(scenario["target"])
    idx = np.flatnonzero(ds.y_train == cls)
    poison = ds.extra.get("poison_mask", np.zeros(len(ds.y_train), dtype=bool))[idx]
    log.info("explaining %d images of class %d (%d poisoned)", idx.size, cls, int(poison.sum()))
    explain.explain_class(
        model, norm, ds.x_train[idx], ds.y_train[idx], idx, poison, out, params,
        attrs={"class": cls, "model_sha256": meta.get("weights_sha256", "")},
    )  # fmt: skip
