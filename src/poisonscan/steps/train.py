"""Rules train, import_model and train_proxy (rules/train.smk)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from poisonscan import checkpoints, devices, storage, training
from poisonscan.storage import atomic_path, read_dataset, write_csv, write_json

__all__ = ["HISTORY_COLUMNS", "import_model", "plot_history", "train", "train_proxy"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

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

    Parameters
    ----------
    dataset : path
        The (poisoned) dataset file; its sha256 goes into the checkpoint sidecar.
    checkpoint, metrics : path
        Outputs: safetensors weights (plus ``checkpoint`` + ``.json``) and the metrics
        JSON (:func:`poisonscan.training.fit_and_evaluate`).
    model, params : mapping
        The ``model`` and ``training`` config sections.
    threads : int, default 1
        Torch threads; with more than one thread, ``threads // 2`` DataLoader worker
        processes apply the augmentations.
    curve_csv, curve_png : path, optional
        Per-epoch history as CSV and as a plot of loss and accuracies.
    """
    devices.set_threads(threads)
    ds = read_dataset(dataset)
    log.info("training %s (%d images)", model["name"], len(ds.y_train))
    result, out = training.fit_and_evaluate(
        ds, model["name"], training.TrainParams.from_config(params),
        workers=threads // 2 if threads > 1 else 0,
    )  # fmt: skip
    checkpoints.save_checkpoint(
        checkpoint, result.model, model["name"], ds, result.normalization,
        extra={
            "model": dict(model),
            "training": dict(params),
            "dataset_sha256": storage.file_sha256(dataset),
            "dataset_meta": ds.meta,
            "best_epoch": result.best_epoch,
        },
    )  # fmt: skip
    write_json(metrics, out)
    if curve_csv is not None:
        write_csv(curve_csv, result.history, HISTORY_COLUMNS)
    if curve_png is not None:
        plot_history(result.history, curve_png, result.best_epoch, model["name"])


def train_proxy(
    clean: PathLike,
    checkpoint: PathLike,
    metrics: PathLike,
    model: Mapping[str, Any],
    params: Mapping[str, Any],
    threads: int = 1,
) -> None:
    """Train the clean proxy model that the label-consistent attack runs PGD against.

    Same architecture and training parameters as the attacked model (the ``model``
    and ``training`` config sections), on the clean dataset; writes the checkpoint
    (+ sidecar) and its metrics JSON.
    """
    devices.set_threads(threads)
    ds = read_dataset(clean)
    log.info("training proxy %s (%d clean images)", model["name"], len(ds.y_train))
    result, out = training.fit_and_evaluate(
        ds, model["name"], training.TrainParams.from_config(params)
    )
    checkpoints.save_checkpoint(
        checkpoint, result.model, model["name"], ds, result.normalization,
        extra={"training": dict(params), "dataset_meta": ds.meta, "role": "proxy",
               "dataset_sha256": storage.file_sha256(clean)},
    )  # fmt: skip
    write_json(metrics, out)


def import_model(
    dataset: PathLike,
    checkpoint: PathLike,
    metrics: PathLike,
    model: Mapping[str, Any],
    threads: int = 1,
    *,
    program: PathLike | None = None,
) -> None:
    """Take the user's model (``model.file``) instead of training one; write what ``train`` writes.

    Loads the file, checks that it fits the dataset (:func:`poisonscan.usermodel.load_user_model`:
    the output size equals the class count), measures it on the test split and writes the
    checkpoint + sidecar (:func:`poisonscan.checkpoints.save_checkpoint`; the sidecar's
    ``origin: "user"`` and ``user_model`` say where it came from) and ``metrics.json``, so
    that every later step runs as after ``train``.

    Parameters
    ----------
    dataset : path
        The dataset file the model is measured on; its sha256 goes into the sidecar.
    checkpoint, metrics : path
        Outputs, as :func:`train`'s.
    model : mapping
        The ``model`` config section (``file``, ``name``, ``normalization``).
    threads : int, default 1
    program : path, optional
        Output for a TorchScript model: a copy of the user's file, which loading the
        checkpoint needs (required then; unused for safetensors).

    Raises
    ------
    poisonscan.modelfile.ModelFileError
        If the file cannot be loaded or does not fit the dataset (the message names the
        file and, for the output size, both numbers).
    """
    import shutil
    import time

    from poisonscan import usermodel

    t0 = time.perf_counter()
    devices.set_threads(threads)
    ds = read_dataset(dataset)
    user = usermodel.load_user_model(
        model, ds.n_classes, ds.image_shape[0], device=devices.select_device()
    )
    log.info("imported %s model %s (sha256 %s)", user.format, user.file, user.sha256)
    extra: dict[str, Any] = {}
    if user.format == "torchscript":
        if program is None:
            raise ValueError(
                f"{user.file} is a TorchScript model: an output for its copy is needed"
            )
        with atomic_path(program) as tmp:
            shutil.copyfile(user.file, tmp)
        extra = {"torchscript_file": Path(program).name,
                 "torchscript_sha256": storage.file_sha256(program)}  # fmt: skip
    checkpoints.save_checkpoint(
        checkpoint, user.weights, user.architecture, ds, user.normalization,
        extra={
            **extra,
            "origin": "user",
            "user_model": user.provenance(),
            "model": dict(model),
            "dataset_sha256": storage.file_sha256(dataset),
            "dataset_meta": ds.meta,
            "best_epoch": None,
        },
    )  # fmt: skip
    out = usermodel.test_metrics(user.module, user.normalization, ds)
    out.update(model=user.architecture, origin="user", n_train=len(ds.y_train),
               seconds=time.perf_counter() - t0, device=str(devices.select_device()))  # fmt: skip
    log.info("clean test accuracy %.4f of the imported model", out["clean_acc"])
    write_json(metrics, out)


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
