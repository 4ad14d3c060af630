"""Rule train."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from poisonscan import training
from poisonscan.models import count_parameters
from poisonscan.steps.common import PathLike, log, set_threads, write_json
from poisonscan.storage import atomic_path, read_dataset

HISTORY_COLUMNS = ("epoch", "loss", "train_acc", "val_acc", "val_loss", "lr", "seconds")


def train(
    dataset: PathLike,
    checkpoint: PathLike,
    metrics: PathLike,
    model: Mapping[str, Any],
    params: Mapping[str, Any],
    threads: int = 1,
    *,
    curve_csv: PathLike | None = None,
    curve_png: PathLike | None = None,
) -> None:
    """Train the configured model; write the checkpoint, a metrics JSON and the training curve.

    Metrics: clean test accuracy and per-class accuracy, attack success rate
    (mean over the source classes of the share of triggered test images
    predicted as the target; mAER for an all-class trigger) and per source
    class, epochs run, best epoch, seconds, seconds per epoch, per-epoch history.

    Parameters
    ----------
    dataset : path
        The (poisoned) dataset file; its sha256 goes into the checkpoint sidecar.
    checkpoint, metrics : path
        Outputs: safetensors weights (plus ``checkpoint`` + ``.json``) and the metrics JSON.
    model, params : mapping
        The ``model`` and ``training`` config sections.
    threads : int, default 1
        Torch threads; with more than one thread, ``threads // 2`` DataLoader worker
        processes apply the augmentations.
    curve_csv, curve_png : path, optional
        Per-epoch history as CSV and as a plot of loss and accuracies.
    """
    set_threads(threads)
    train_params = training.TrainParams.from_config(params)
    ds = read_dataset(dataset)
    device = training.select_device()
    log.info("training %s on %s (%d images)", model["name"], device, len(ds.y_train))
    result = training.train_model(
        ds, model["name"], train_params, device, workers=threads // 2 if threads > 1 else 0
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
    epochs = len(result.history)
    best = result.history[result.best_epoch - 1]
    out = {
        "clean_acc": float(np.mean(pred == ds.y_test)),
        "per_class_acc": per_class,
        "asr": asr,
        "asr_per_class": asr_per_class,
        "model": model["name"],
        "n_parameters": count_parameters(result.model),
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "val_acc": best["val_acc"],
        "n_train": result.n_train,
        "n_val": result.n_val,
        "seconds": result.seconds,
        "seconds_per_epoch": result.seconds / max(epochs, 1),
        "device": str(device),
        "history": result.history,
    }
    log.info(
        "clean test accuracy %.4f, attack success rate %.4f, best epoch %d of %d, %.1f s",
        out["clean_acc"], asr, result.best_epoch, epochs, result.seconds,
    )  # fmt: skip
    training.save_checkpoint(
        checkpoint, result.model, model["name"], ds, result.normalization,
        extra={
            "model": dict(model),
            "training": dict(params),
            "dataset_sha256": training.file_sha256(dataset),
            "dataset_meta": ds.meta,
            "best_epoch": result.best_epoch,
        },
    )  # fmt: skip
    write_json(metrics, out)
    if curve_csv is not None:
        write_history_csv(result.history, curve_csv)
    if curve_png is not None:
        plot_history(result.history, curve_png, result.best_epoch, model["name"])


def write_history_csv(history: Sequence[Mapping[str, float]], path: PathLike) -> None:
    """One row per epoch with the columns :data:`HISTORY_COLUMNS`."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def plot_history(
    history: Sequence[Mapping[str, float]], path: PathLike, best_epoch: int, title: str = ""
) -> None:
    """PNG of the loss and the accuracy on training batches and validation images per epoch."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    has_val = not all(math.isnan(row["val_acc"]) for row in history)
    for ax, key, label in ((ax_loss, "loss", "cross-entropy"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [row[f"train_{key}" if key == "acc" else key] for row in history],
                marker=".", label="train")  # fmt: skip
        if has_val:
            ax.plot(epochs, [row[f"val_{key}"] for row in history], marker=".", label="validation")
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set(xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_loss.set_yscale("log")
    ax_acc.legend()
    fig.suptitle(f"training {title}".strip())
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
