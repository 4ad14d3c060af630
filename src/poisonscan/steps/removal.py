"""Rules retrain_filtered and removal (rules/removal.smk): retrain without the flagged
samples, and the table of attack success before and after."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from poisonscan import removal
from poisonscan.detectors import read_detection
from poisonscan.explain.store import read_group_array
from poisonscan.storage import read_dataset, write_csv, write_json

__all__ = ["removal_table", "retrain_filtered"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _poison_mask(ds: Any) -> np.ndarray:
    n = len(ds.y_train)
    return np.asarray(ds.extra.get("poison_mask", np.zeros(n, dtype=bool)), dtype=bool)


def retrain_filtered(
    dataset: PathLike,
    out: PathLike,
    model: Mapping[str, Any],
    training_params: Mapping[str, Any],
    detection: PathLike | None = None,
    explanations: PathLike | None = None,
    name: str | None = None,
    threads: int = 1,
) -> None:
    """Retrain on the training set minus the flagged samples (or minus the true poison).

    Parameters
    ----------
    dataset : path
        The poisoned training set (HDF5).
    out : path
        JSON: a row of :data:`poisonscan.removal.REMOVAL_COLUMNS` plus the
        retrained model's full metrics under ``metrics``.
    model, training_params : mapping
        The ``model`` and ``training`` config sections (as for rule train).
    detection : path, optional
        A method's result; its ``flagged`` samples are removed. Without it the
        *perfect filter* removes exactly the poison (``poison_mask``).
    explanations : path, optional
        Class group of the explanation store (``index``: the flagged samples'
        positions in the training set); required with ``detection``.
    name : str, optional
        Filter name in the output (default: the method, or ``"perfect"``).
    """
    from poisonscan import devices, training

    devices.set_threads(threads)
    ds = read_dataset(dataset)
    n = len(ds.y_train)
    poison = _poison_mask(ds)
    if detection is None:
        remove, name = poison.copy(), name or "perfect"
    else:
        if explanations is None:
            raise ValueError("retraining on a method's flags needs the class group (index)")
        res = read_detection(detection)
        index = read_group_array(explanations, "index")
        remove = removal.removal_mask(n, index, res["flagged"])
        name = name or res["method"]
    n_removed, n_hit = int(remove.sum()), int((remove & poison).sum())
    log.info("%s: removing %d of %d training samples (%d of %d poisoned)",
             name, n_removed, n, n_hit, int(poison.sum()))  # fmt: skip
    _, metrics = training.fit_and_evaluate(
        removal.filter_training_set(ds, remove), model["name"],
        training.TrainParams.from_config(training_params),
        workers=threads // 2 if threads > 1 else 0,
    )  # fmt: skip
    row = removal.removal_row(name, remove, poison, metrics)
    log.info("%s: clean accuracy %.4f, ASR %.4f after removal", name, row["clean_acc"], row["asr"])
    write_json(out, {**row, "metrics": metrics})


def removal_table(
    undefended: PathLike,
    dataset: PathLike,
    retrained: Mapping[str, PathLike],
    out: PathLike,
) -> list[dict[str, Any]]:
    """The removal table: undefended model, every retrained filter (perfect included).

    Parameters
    ----------
    undefended : path
        Metrics JSON of the model trained on the full poisoned set.
    dataset : path
        The poisoned training set (for the poison count of the undefended row).
    retrained : mapping of filter name to the JSON of :func:`retrain_filtered`
    out : path
        CSV with :data:`poisonscan.removal.REMOVAL_COLUMNS`.
    """
    ds = read_dataset(dataset)
    poison = _poison_mask(ds)
    metrics = json.loads(Path(undefended).read_text())
    rows = [removal.removal_row("none", np.zeros(poison.size, dtype=bool), poison, metrics)]
    for name, path in retrained.items():
        row = json.loads(Path(path).read_text())
        rows.append({k: row[k] for k in removal.REMOVAL_COLUMNS} | {"filter": name})
    write_csv(out, rows, removal.REMOVAL_COLUMNS)
    for r in rows:
        log.info("%-12s removed %5d (poison %4d of %4d): clean acc %.4f, ASR %.4f", r["filter"],
                 r["n_removed"], r["n_poison_removed"], r["n_poison"], r["clean_acc"],
                 r["asr"])  # fmt: skip
    return rows
