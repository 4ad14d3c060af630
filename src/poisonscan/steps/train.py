"""Rule train."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan import training
from poisonscan.steps.common import PathLike, log, set_threads, write_json
from poisonscan.storage import read_dataset


def train(
    dataset: PathLike,
    checkpoint: PathLike,
    metrics: PathLike,
    model: Mapping[str, Any],
    params: Mapping[str, Any],
    threads: int = 1,
) -> None:
    """Train the configured model; write the checkpoint and a metrics JSON.

    Metrics: clean test accuracy, per-class accuracy, attack success rate
    (share of triggered source-class test images predicted as the target),
    per-epoch history, seconds.
    """
    set_threads(threads)
    ds = read_dataset(dataset)
    device = training.select_device()
    log.info("training %s on %s (%d images)", model["name"], device, len(ds.y_train))
    result = training.train_model(
        ds, model["name"], training.TrainParams.from_config(params), device
    )
    pred = training.predict(result.model, result.normalization, ds.x_test)
    per_class = {str(c): float(np.mean(pred[ds.y_test == c] == c)) for c in np.unique(ds.y_test)}
    target = int(ds.meta.get("attack", {}).get("target", -1))
    triggered = ds.extra.get("x_test_triggered")
    asr, asr_per_class = float("nan"), {}
    if triggered is not None and target >= 0:
        asr, asr_per_class = training.attack_success_rates(
            training.predict(result.model, result.normalization, triggered),
            ds.extra["y_test_triggered_original"],
            target,
        )
    out = {
        "clean_acc": float(np.mean(pred == ds.y_test)),
        "per_class_acc": per_class,
        "asr": asr,
        "asr_per_class": asr_per_class,
        "epochs": len(result.history),
        "seconds": result.seconds,
        "device": str(device),
        "history": result.history,
    }
    log.info("clean test accuracy %.4f, attack success rate %.4f", out["clean_acc"], asr)
    training.save_checkpoint(
        checkpoint, result.model, model["name"], ds, result.normalization,
        extra={"training": dict(params), "dataset_meta": ds.meta},
    )  # fmt: skip
    write_json(metrics, out)
