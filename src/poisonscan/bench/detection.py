"""``detection RUN_DIR``: every detection method on a finished scenario directory.

Reads ``explain.zarr`` (the target class group, or the store itself in the old
one-class layout), ``distances/<d>.zarr``, ``poisoned.h5`` and ``metrics.json``
of ``RUN_DIR``, runs the clustering steps with the configuration of
``--config`` into a temporary directory and reports, per method, the chosen k,
the decision rule, ACC/TPR/TNR/FPR/F1/AUROC and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
import zarr

from poisonscan.config import section
from poisonscan.detectors import DETECTORS
from poisonscan.steps.detect import detect
from poisonscan.steps.evaluate import evaluate_scenario

__all__ = ["add_parser", "run_methods"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("detection", help="every detection method on a finished scenario")
    p.add_argument("run_dir", type=Path, help="e.g. results/gtsrb/sticker_p15_s3")
    p.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    p.add_argument("--methods", default=None, help="comma-separated; default: the config's")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from poisonscan.config import load_schema, validate_config

    schema = load_schema(Path(__file__).parents[3] / "config" / "schema.yaml")
    cfg = validate_config(yaml.safe_load(args.config.read_text()), schema)
    methods = args.methods.split(",") if args.methods else None
    return run_methods(args.run_dir, cfg, methods)


def _class_group(store: Path) -> Path:
    root = zarr.open_group(str(store), mode="r")
    target = root.attrs.get("target_class")
    if target is not None and str(target) in set(root.group_keys()):
        return store / str(target)
    return store  # old layout: the arrays of the one explained class at the root


def run_methods(
    run_dir: Path, config: dict[str, Any], methods: list[str] | None = None
) -> list[dict[str, Any]]:
    """Run ``methods`` (default ``config["clustering"]["methods"]``) on ``run_dir``.

    Returns
    -------
    list of dict
        One row per method: the evaluation row of :func:`evaluate_scenario` plus ``seconds``.
    """
    group = _class_group(run_dir / "explain.zarr")
    methods = methods or list(config["clustering"]["methods"])
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as tmp:
        paths = {}
        for m in methods:
            if m not in DETECTORS:
                raise ValueError(f"unknown method {m!r}; available: {sorted(DETECTORS)}")
            detector = DETECTORS[m]
            sections = {arg: section(config, path) for arg, path in detector.sections.items()}
            store = run_dir / "distances" / f"{detector.distance}.zarr"
            paths[m] = Path(tmp) / f"{m}.npz"
            start = time.perf_counter()
            detect(m, group, paths[m], sections,
                   distance_store=store if detector.distance else None,
                   dataset=run_dir / "poisoned.h5")  # fmt: skip
            seconds[m] = time.perf_counter() - start
        evaluation = Path(tmp) / "evaluation.json"
        evaluate_scenario(group, run_dir / "metrics.json", paths, evaluation,
                          {"run_dir": str(run_dir)})  # fmt: skip
        rows = json.loads(evaluation.read_text())
    keep = ("run_dir", "method", "decision_rule", "k_chosen", "n", "n_poison", "tn", "fp", "fn",
            "tp", "acc", "tpr", "tnr", "fpr", "precision", "f1", "auroc")  # fmt: skip
    return [{k: r[k] for k in keep} | {"seconds": round(seconds[r["method"]], 2)} for r in rows]
