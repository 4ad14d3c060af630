"""``verdicts RUN_DIR ...``: the verdicts of poisonscan and the baselines on finished scenarios.

Each ``RUN_DIR`` is a scenario directory of a finished run (``results/<dataset>/<scenario>``
with ``poisoned.h5``, ``model.safetensors`` and ``explain.zarr`` of every class). For each
it runs the verdict (:func:`poisonscan.verdicts.audit`, parameters from ``--config``'s
``verdicts`` section) and the baselines with the same interface (SCAn, SPECTRE told the
attacked class and the poison count, Activation Clustering and Spectral Signatures on every
class), scores them against the ground truth (:func:`poisonscan.evaluate.verdict_metrics`)
and prints one row per scenario and method, then with ``--aggregate`` the mean and sd over
the runs of each ``--name`` (repetitions of one setting).

Stores written by older poisonscan versions (without chunk checksums) are read as they are:
this command measures methods on existing runs; the workflow (rule verdicts) checks them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml
import zarr

__all__ = ["add_parser", "run_dirs"]

KEEP = ("method", "classes_flagged", "target_flagged", "n_clean_classes_flagged", "set_fp",
        "set_tp", "set_fn", "flagged_share", "tp", "fp", "fn", "tn", "tpr", "tnr", "f1", "auroc",
        "rate_of_class", "rate_of_set")  # fmt: skip
AGGREGATE = ("target_flagged", "n_clean_classes_flagged", "set_fp", "flagged_share", "tpr", "tnr",
             "f1", "auroc")  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("verdicts", help="verdicts and baselines on finished scenarios")
    p.add_argument("run_dirs", type=Path, nargs="+", help="e.g. results/gtsrb/sticker_p10")
    p.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    p.add_argument("--store", default="explain.zarr", help="store path relative to RUN_DIR")
    p.add_argument("--names", default=None, help="comma-separated setting names, one per run")
    p.add_argument(
        "--baselines", default=None, help="comma-separated (default: every verdict baseline)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from poisonscan.config import load_schema, validate_config

    schema = load_schema(Path(__file__).parents[3] / "config" / "schema.yaml")
    raw = yaml.safe_load(args.config.read_text())
    cfg = validate_config({**raw, "dataset": {"name": "synthetic"}}, schema)
    names = args.names.split(",") if args.names else [d.name for d in args.run_dirs]
    if len(names) != len(args.run_dirs):
        raise SystemExit(f"--names gives {len(names)} names for {len(args.run_dirs)} runs")
    baselines = [b for b in args.baselines.split(",") if b] if args.baselines else None
    rows = run_dirs(args.run_dirs, names, cfg, args.store, baselines, args.threads)
    return rows + aggregate(rows)


def _load(run: Path, store: str) -> dict[str, Any]:
    with h5py.File(run / "poisoned.h5", "r") as f:
        data = {k: f[k][()] for k in ("x_train", "y_train", "x_test", "y_test")}
        n = len(data["y_train"])
        data["poison"] = (
            f["poison_mask"][()].astype(bool) if "poison_mask" in f else np.zeros(n, dtype=bool)
        )
        groups = f["group_train"][()] if "group_train" in f else None
        data["groups"] = groups if groups is not None else np.arange(n)
        import json

        meta = json.loads(f.attrs.get("meta", "{}"))
    attack = meta.get("attack", {})
    data["target"] = None if attack.get("name", "clean") == "clean" else attack.get("target")
    root = zarr.open_group(str(run / store), mode="r")
    data["classes"] = {
        int(c): {k: root[c][k][...] for k in ("heatmaps", "activations", "index", "prediction")}
        for c in root.group_keys()
    }
    return data


def run_dirs(
    runs: list[Path],
    names: list[str],
    config: dict[str, Any],
    store: str = "explain.zarr",
    baselines: list[str] | None = None,
    threads: int = 2,
) -> list[dict[str, Any]]:
    """Every run's verdict rows (poisonscan and each baseline), with ``name`` and ``seconds``."""
    from poisonscan import checkpoints, devices, inference
    from poisonscan.evaluate import verdict_metrics
    from poisonscan.parameters import from_section
    from poisonscan.verdicts import ClassData, VerdictParams, audit

    devices.set_threads(threads)
    params = from_section(VerdictParams, "verdicts", config["verdicts"])
    rows = []
    for run, name in zip(runs, names, strict=True):
        d = _load(run, store)
        model, norm, _ = checkpoints.load_checkpoint(run / "model.safetensors")
        classes = {
            c: ClassData(v["heatmaps"], v["index"], v["prediction"], d["groups"][v["index"]])
            for c, v in d["classes"].items()
        }
        start = time.perf_counter()
        result = audit(classes, d["x_train"], d["x_test"], d["y_test"],
                       lambda x, m=model, z=norm: inference.predict(m, z, x), params)  # fmt: skip
        seconds = time.perf_counter() - start
        ids = np.array(sorted(classes))
        hit = np.isin(ids, result.poisoned_classes)
        score = np.nan_to_num(result.score, nan=0.0)
        m = verdict_metrics(hit, ids, result.flagged, d["poison"], d["y_train"], d["target"],
                            score)  # fmt: skip
        rows.append({"run": str(run), "name": name, **{k: m.get(k) for k in KEEP},
                     "method": "poisonscan", "seconds": round(seconds, 1)})  # fmt: skip
        for method, (flagged, score, hit, secs) in _baselines(d, config, baselines).items():
            m = verdict_metrics(hit, ids, flagged, d["poison"], d["y_train"], d["target"], score)
            rows.append({"run": str(run), "name": name, **{k: m.get(k) for k in KEEP},
                         "method": method, "seconds": round(secs, 1)})  # fmt: skip
    return rows


def _baselines(
    d: dict[str, Any], config: dict[str, Any], methods: list[str] | None
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    from poisonscan.config import section
    from poisonscan.verdicts.baselines import (
        VERDICT_BASELINES,
        ClassFeatures,
        baseline_names,
        run_baseline,
    )

    data = ClassFeatures.from_classes(d["classes"], len(d["y_train"]))
    ids = sorted(d["classes"])
    out = {}
    for name in baseline_names(methods):
        start = time.perf_counter()
        params = section(config, VERDICT_BASELINES[name].section)
        flags = run_baseline(name, data, params, d["target"], d["poison"])
        if flags is None:
            continue  # told the attacked class: there is none in the clean control
        flagged, score = flags
        hit = np.isin(ids, sorted({int(d["y_train"][i]) for i in np.flatnonzero(flagged)}))
        finite = np.isfinite(score)
        low = float(score[finite].min()) - 1 if finite.any() else 0.0
        out[name] = (flagged, np.where(finite, score, low), hit, time.perf_counter() - start)
    return out


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd over the runs of each (name, method) with more than one run."""
    out = []
    keys = sorted({(r["name"], r["method"]) for r in rows})
    for name, method in keys:
        group = [r for r in rows if r["name"] == name and r["method"] == method]
        if len(group) < 2:
            continue
        row: dict[str, Any] = {"aggregate": name, "method": method, "runs": len(group)}
        for k in AGGREGATE:
            v = np.array([np.nan if r.get(k) is None else float(r[k]) for r in group])
            row[k] = (
                f"{np.nanmean(v):.4f} ± {np.nanstd(v, ddof=1):.4f}"
                if np.isfinite(v).any()
                else "nan"
            )
        out.append(row)
    return out
