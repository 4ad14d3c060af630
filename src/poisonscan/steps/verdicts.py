"""Rules verdicts, verdict_baselines and evaluate_verdicts (rules/verdicts.smk): the verdict on
every class, the suspicious images, the baselines with the same interface, and their scores
against the ground truth."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from poisonscan.explain.store import read_explanations, store_classes
from poisonscan.parameters import from_section
from poisonscan.storage import (
    ImageDataset,
    atomic_path,
    read_dataset,
    read_npz,
    write_csv,
    write_json,
    write_npz,
)

__all__ = [
    "SUSPICIOUS_COLUMNS",
    "VERDICT_COLUMNS",
    "audit_scenario",
    "baseline_verdicts",
    "clean_list",
    "evaluate_verdicts",
    "image_groups",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

VERDICT_COLUMNS = ("class", "name", "verdict", "n", "n_groups", "statistic", "z", "p", "q",
                   "n_flagged", "signal", "trigger", "flip_rate", "control_flip_rate", "flip_p",
                   "flip_probe", "label_disagreement", "label_main_other", "label_z", "label_q",
                   "label_flagged")  # fmt: skip
SUSPICIOUS_COLUMNS = ("path", "index", "class", "name", "score", "p", "q", "signal",
                      "peak_share", "trigger_score", "prediction")  # fmt: skip
# An audit's pairs of (near-)identical images under different labels (rule verdicts).
CONFLICTS_NAME = "label_conflicts.csv"
CONFLICT_COLUMNS = ("path_a", "class_a", "name_a", "split_a", "path_b", "class_b", "name_b",
                    "split_b", "distance")  # fmt: skip


def image_groups(ds: ImageDataset) -> np.ndarray:
    """Near-duplicate group of every training image: the dataset's ``group_train`` (GTSRB: its
    tracks), else one group per image."""
    if "group_train" in ds.extra:
        return np.asarray(ds.extra["group_train"])
    return np.arange(len(ds.y_train))


def _write_conflicts(path: Path, ds: ImageDataset, names: Mapping[int, str]) -> int:
    """``label_conflicts.csv``: the (near-)identical images under different labels, both
    splits (:func:`poisonscan.verdicts.conflicts.label_conflicts`); returns their count."""
    from poisonscan.verdicts.conflicts import label_conflicts

    meta = ds.meta.get("dataset") if isinstance(ds.meta.get("dataset"), Mapping) else ds.meta
    distance = int(meta.get("duplicate_distance", 4))  # the split's near-duplicate measure
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    ids = np.concatenate([_image_ids(ds), _image_ids(ds, "test")])
    split = ["train"] * len(ds.y_train) + ["test"] * len(ds.y_test)
    pairs = label_conflicts(x, y, distance)
    rows = [{"path_a": ids[i], "class_a": int(y[i]), "name_a": names.get(int(y[i]), ""),
             "split_a": split[i], "path_b": ids[j], "class_b": int(y[j]),
             "name_b": names.get(int(y[j]), ""), "split_b": split[j], "distance": d}
            for i, j, d in pairs]  # fmt: skip
    write_csv(path, rows, CONFLICT_COLUMNS)
    if pairs:
        log.warning("%d pairs of (near-)identical images under different labels (a label-flip "
                    "signal): %s", len(pairs), path)  # fmt: skip
    return len(pairs)


def _image_ids(ds: ImageDataset, split: str = "train") -> np.ndarray:
    """The identity of every image of ``split``: its file path where the dataset has one,
    else ``#<index>`` (training) or ``#test<index>``."""
    if f"path_{split}" in ds.extra:
        return np.asarray(ds.extra[f"path_{split}"]).astype(str)
    n = len(ds.y_train if split == "train" else ds.y_test)
    return np.array([f"#{'' if split == 'train' else split}{i}" for i in range(n)])


def _classes(explanations: PathLike, groups: np.ndarray) -> dict[int, Any]:
    from poisonscan.verdicts import ClassData

    out = {}
    for c in store_classes(explanations):
        e = read_explanations(explanations, c)
        out[c] = ClassData(e["heatmaps"], e["index"], e["prediction"], groups[e["index"]])
    return out


def audit_scenario(
    explanations: PathLike,
    dataset: PathLike,
    checkpoint: PathLike,
    out_dir: PathLike,
    params: Mapping[str, Any],
    threads: int = 1,
    metrics: PathLike | None = None,
    quality: Mapping[str, Any] | None = None,
    judge_test: bool = False,
) -> None:
    """The verdict on every class of the explanation store (:func:`poisonscan.verdicts.audit`).

    Writes into ``out_dir``: ``verdicts.csv`` (one row per class, :data:`VERDICT_COLUMNS`),
    ``suspicious.csv`` (one row per flagged image, :data:`SUSPICIOUS_COLUMNS`, most
    suspicious first), ``samples.npz`` (per training image: ``flagged``, ``score``, ``p``,
    ``q``, ``peak_share``, ``trigger_score``), ``verdicts.json`` (parameters, triggers, causal
    checks, label disagreement), ``verdicts.png`` and, per poisoned class,
    ``classes/class_<id>.png`` (its trigger and most suspicious images).

    Parameters
    ----------
    explanations : path
        The explanation store, one group per class (every class must be explained).
    dataset : path
        The training set (images, test split, near-duplicate groups).
    checkpoint : path
        The trained model, for the causal check.
    params : mapping
        The ``verdicts`` config section.
    metrics : path, optional
        An audit's ``metrics.json`` (rule ``train`` / ``import_model``): with it, the
        model-quality gate (:mod:`poisonscan.verdicts.gate`) turns ``clean`` verdicts into
        ``inconclusive`` when the model's test accuracy is below the ``quality`` section's
        ``min_kappa``; ``verdicts.json`` records the accuracy and the gate
        (``model_quality``).
    quality : mapping, optional
        The ``model_quality`` config section (default: the gate's defaults).
    judge_test : bool
        An audit: judge the test split's images too (:mod:`poisonscan.verdicts.heldout`:
        by the recovered trigger in their pixels), so that every file gets a verdict;
        ``suspicious.csv`` gains a ``split`` column, ``samples.npz`` ``flagged_test`` and
        ``q_test``, ``verdicts.json`` ``held_out``; ``label_conflicts.csv`` lists the
        (near-)identical images under different labels (:data:`CONFLICT_COLUMNS`; their count
        in ``verdicts.json`` ``label_conflicts``).
    """
    from poisonscan import checkpoints, devices, inference
    from poisonscan.verdicts import VerdictParams, audit, verdict_table

    p = from_section(VerdictParams, "verdicts", params)
    devices.set_threads(threads)
    ds = read_dataset(dataset)
    missing = sorted(set(range(ds.n_classes)) - set(store_classes(explanations)))
    if missing:
        raise ValueError(
            f"{explanations} has no explanations of classes {missing}: the verdicts compare "
            "every class with the others, so set explain.classes to all"
        )
    model, norm, _ = checkpoints.load_checkpoint(checkpoint)
    classes = _classes(explanations, image_groups(ds))
    result = audit(classes, ds.x_train, ds.x_test, ds.y_test,
                   lambda x: inference.predict(model, norm, x), p)  # fmt: skip
    gate = None
    if metrics is not None:
        from poisonscan.verdicts.gate import MIN_KAPPA, ModelQuality, gate_verdicts

        with open(metrics) as f:
            clean_acc = json.load(f).get("clean_acc", math.nan)
        kappa = float((quality or {}).get("min_kappa", MIN_KAPPA))
        judged = len(ds.y_train) + (len(ds.y_test) if judge_test else 0)
        gate = ModelQuality.measure(
            math.nan if clean_acc is None else clean_acc, len(ds.y_test), ds.n_classes,
            judged, kappa,
        )  # fmt: skip
        result.verdict.update(gate_verdicts(result.verdict, gate))
        (log.info if gate.passed else log.warning)("%s", gate.describe())
    names = {c: ds.class_names[c] if c < len(ds.class_names) else str(c) for c in classes}
    rows = verdict_table(result, ds.y_train, names)
    out = Path(out_dir)
    write_csv(out / "verdicts.csv", rows, VERDICT_COLUMNS)
    ids = _image_ids(ds)
    flagged = np.flatnonzero(result.flagged)
    prediction = np.full(len(ds.y_train), -1)
    for d in classes.values():
        prediction[d.index] = d.prediction
    suspicious = [
        {"path": ids[i], "index": int(i), "class": int(ds.y_train[i]),
         "name": names[int(ds.y_train[i])], "score": float(result.score[i]),
         "p": float(result.p[i]), "q": float(result.q[i]), "signal": str(result.signal[i]),
         "peak_share": float(result.peak_share[i]), "trigger_score": float(result.trigger_score[i]),
         "prediction": int(prediction[i])}
        for i in flagged[np.argsort(-result.score[flagged], kind="stable")]
    ]  # fmt: skip
    columns, held_arrays, held_summary = SUSPICIOUS_COLUMNS, {}, None
    if judge_test:
        from poisonscan.verdicts.heldout import judge_held_out

        held = judge_held_out(result, classes, ds.x_train, ds.x_test, ds.y_test, p.sample_alpha)
        test_ids = _image_ids(ds, "test")
        hits = np.flatnonzero(held.flagged)
        hits = hits[np.argsort(held.q[hits], kind="stable")]
        predicted = (inference.predict(model, norm, ds.x_test[hits]) if len(hits)
                     else np.zeros(0, dtype=np.int64))  # fmt: skip
        columns = (*SUSPICIOUS_COLUMNS, "split")
        for row in suspicious:
            row["split"] = "train"
        suspicious += [
            {"path": test_ids[j], "index": "", "class": int(ds.y_test[j]),
             "name": names[int(ds.y_test[j])], "score": float(held.score[j]),
             "p": float(held.p[j]), "q": float(held.q[j]), "signal": str(held.signal[j]),
             "peak_share": math.nan, "trigger_score": float(held.score[j]),
             "prediction": int(y), "split": "test"}
            for j, y in zip(hits, predicted, strict=True)
        ]  # fmt: skip
        _write_conflicts(out / CONFLICTS_NAME, ds, names)
        held_arrays = {"flagged_test": held.flagged, "q_test": held.q}
        held_summary = {
            "n_test": len(ds.y_test),
            "n_flagged": len(hits),
            "method": "the recovered trigger in the pixels (no heatmaps: the "
            "model was not trained on them); poisonscan.verdicts.heldout",
        }
        log.info("%d of %d held-out test images flagged", len(hits), len(ds.y_test))
    write_csv(out / "suspicious.csv", suspicious, columns)
    write_npz(out / "samples.npz", flagged=result.flagged, score=result.score, p=result.p,
              q=result.q, peak_share=result.peak_share,
              trigger_score=result.trigger_score, **held_arrays)  # fmt: skip
    summary = result.summary()
    if held_summary is not None:
        summary["held_out"] = held_summary
        with open(out / CONFLICTS_NAME, newline="") as f:
            summary["label_conflicts"] = sum(1 for _ in f) - 1
    if gate is not None:
        summary["model_quality"] = {**gate.to_dict(), "summary": gate.describe()}
    write_json(out / "verdicts.json", summary)
    from poisonscan.verdicts.figures import save_class_montage, save_verdict_figure

    save_verdict_figure(result, ds, out / "verdicts.png", names)
    with atomic_path(out / "classes") as tmp:
        tmp.mkdir()
        for c in result.poisoned_classes:
            save_class_montage(result, ds, classes[c].heatmaps, classes[c].index, c,
                               tmp / f"class_{c}.png")  # fmt: skip
    log.info("poisoned classes: %s; %d of %d training images flagged",
             result.poisoned_classes or "none", int(result.flagged.sum()),
             len(result.flagged))  # fmt: skip


def baseline_verdicts(
    explanations: PathLike,
    dataset: PathLike,
    out: PathLike,
    sections: Mapping[str, Mapping[str, Any]],
    target: int | None = None,
) -> None:
    """The baselines on every class, as verdicts: per class flagged or not, per image flagged.

    Every entry of :data:`poisonscan.verdicts.baselines.VERDICT_BASELINES`; a class counts as
    flagged when anything in it is.

    Parameters
    ----------
    explanations : path
        The explanation store (``activations`` of every class).
    dataset : path
        The training set (labels, and the poison count SPECTRE is told).
    out : path
        ``.npz``: per method ``<method>_flagged`` (n_train,), ``<method>_score`` (n_train,),
        ``<method>_classes`` (the flagged class ids).
    sections : mapping
        Baseline name -> its config section (the registry entry's ``section``).
    target : int, optional
        The attacked class (the told baselines only, which are skipped without it).
    """
    from poisonscan.verdicts.baselines import VERDICT_BASELINES, ClassFeatures, run_baseline

    ds = read_dataset(dataset)
    n = len(ds.y_train)
    data = ClassFeatures.from_classes(
        {c: read_explanations(explanations, c) for c in store_classes(explanations)}, n
    )
    poison = ds.extra.get("poison_mask")
    arrays: dict[str, np.ndarray] = {}
    for name in VERDICT_BASELINES:
        flags = run_baseline(name, data, sections[name], target, poison)
        if flags is None:
            continue  # told the attacked class: there is none
        flagged, score = flags
        arrays[f"{name}_flagged"], arrays[f"{name}_score"] = flagged, score
        hit = sorted({int(ds.y_train[i]) for i in np.flatnonzero(flagged)})
        arrays[f"{name}_classes"] = np.asarray(hit, dtype=np.int64)
        log.info("%s: classes flagged %s, %d images", name, hit, int(flagged.sum()))
    write_npz(out, **arrays)


def evaluate_verdicts(
    verdicts: PathLike,
    samples: PathLike,
    baselines_npz: PathLike,
    dataset: PathLike,
    out: PathLike,
    context: Mapping[str, Any],
    target: int | None,
) -> list[dict[str, Any]]:
    """Score the verdicts of poisonscan and of every baseline against the ground truth.

    Returns (and writes to ``out`` as JSON) one row per method with the context columns and
    :func:`poisonscan.evaluate.verdict_metrics`; ``target`` is None for the clean control.
    """
    import csv

    from poisonscan.evaluate import verdict_metrics
    from poisonscan.verdicts.baselines import VERDICT_BASELINES

    ds = read_dataset(dataset)
    n = len(ds.y_train)
    poison = np.asarray(ds.extra.get("poison_mask", np.zeros(n, dtype=bool)), dtype=bool)
    classes = np.arange(ds.n_classes)
    with open(verdicts, newline="") as f:
        table = list(csv.DictReader(f))
    ours = read_npz(samples)
    hit = np.isin(classes, [int(r["class"]) for r in table if r["verdict"] == "poisoned"])
    rows = [{**context, "method": "poisonscan",
             **verdict_metrics(hit, classes, ours["flagged"], poison, ds.y_train, target,
                               np.nan_to_num(ours["score"], nan=0.0))}]  # fmt: skip
    base = read_npz(baselines_npz)
    for name in VERDICT_BASELINES:
        if f"{name}_flagged" not in base:
            continue
        hit = np.isin(classes, base[f"{name}_classes"])
        score = np.nan_to_num(base[f"{name}_score"], nan=-np.inf)
        score = np.where(np.isfinite(score), score, np.nanmin(score[np.isfinite(score)]) - 1)
        rows.append({**context, "method": name,
                     **verdict_metrics(hit, classes, base[f"{name}_flagged"], poison, ds.y_train,
                                       target, score)})  # fmt: skip
    write_json(out, rows)
    return rows


def clean_list(
    samples: PathLike, dataset: PathLike, out_list: PathLike, out_dataset: PathLike
) -> int:
    """The training images the verdicts did not flag: their paths (or ``#index``), one per
    line, and the dataset without the flagged images, ready to retrain on.

    Returns
    -------
    int
        Images removed.
    """
    from poisonscan.removal import filter_training_set
    from poisonscan.storage import write_dataset

    ds = read_dataset(dataset)
    arrays = read_npz(samples)
    flagged = np.asarray(arrays["flagged"], dtype=bool)
    if flagged.shape != ds.y_train.shape:
        raise ValueError(f"{samples} has {flagged.size} images but {dataset} has {ds.y_train.size}")
    ids = list(_image_ids(ds)[~flagged])
    filtered = filter_training_set(ds, flagged)
    if "flagged_test" in arrays:  # an audit judged the test split too: every file is listed
        flagged_test = np.asarray(arrays["flagged_test"], dtype=bool)
        if flagged_test.shape != ds.y_test.shape:
            raise ValueError(f"{samples} has {flagged_test.size} test images but {dataset} "
                             f"has {ds.y_test.size}")  # fmt: skip
        ids += list(_image_ids(ds, "test")[~flagged_test])
        filtered = _without_test(filtered, flagged_test)
    with atomic_path(out_list) as tmp:
        Path(tmp).write_text("".join(f"{i}\n" for i in ids))
    write_dataset(out_dataset, filtered)
    log.info("%d of %d training images kept, %d flagged ones left out", int((~flagged).sum()),
             flagged.size, int(flagged.sum()))  # fmt: skip
    return int(flagged.sum())


def _without_test(ds: ImageDataset, remove: np.ndarray) -> ImageDataset:
    """``ds`` without the test images in ``remove`` (and their entries of ``path_test``)."""
    import dataclasses

    keep = ~remove
    extra = dict(ds.extra)
    if "path_test" in extra:
        extra["path_test"] = np.asarray(extra["path_test"])[keep]
    meta = {**ds.meta, "removed_test": int(remove.sum())}
    return dataclasses.replace(ds, x_test=ds.x_test[keep], y_test=ds.y_test[keep], extra=extra,
                               meta=meta)  # fmt: skip


def summarize_verdicts(evaluations: Sequence[PathLike], out: PathLike) -> list[dict[str, Any]]:
    """All scenarios' verdict evaluations in one CSV (lists joined by spaces)."""
    rows = []
    for path in evaluations:
        for row in json.loads(Path(path).read_text()):
            rows.append({k: " ".join(map(str, v)) if isinstance(v, list) else v
                         for k, v in row.items()})  # fmt: skip
    write_csv(out, rows)
    return rows
