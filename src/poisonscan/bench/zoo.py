"""``zoo RUN_DIR [RUN_DIR ...]``: clean accuracy and attack success of every scenario.

Reads each working directory's ``results/<dataset>/<scenario>/metrics.json`` (the trained
model's clean test accuracy and attack success rate) and the attack parameters recorded in
``poisoned.h5``, and prints one row per dataset and scenario with the mean and standard
deviation over the working directories (one per repetition, e.g. a zoo config and the same
with ``config/zoo-r1.yaml`` layered on it). ``--markdown FILE`` also writes the table that
RESULTS.md shows.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py

from poisonscan.experiments import aggregate

__all__ = ["add_parser", "zoo_rows", "zoo_table"]

# Parameters that only vary the random draws, not the attack.
_SEEDS = ("seed", "pattern_seed", "grid_seed", "name", "target", "source")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("zoo", help="clean accuracy and attack success per scenario and run")
    p.add_argument("runs", type=Path, nargs="+", help="working directories holding results/")
    p.add_argument("--markdown", type=Path, help="also write the mean ± sd table here")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = zoo_rows(args.runs)
    table = aggregate(rows, group_keys=("dataset", "scenario"), value_keys=("clean_acc", "asr"))
    if args.markdown:
        args.markdown.write_text(zoo_table(rows))
    return table


def _parameters(attack: dict[str, Any]) -> str:
    if "source" in attack:
        source = "all" if attack["source"] is None else attack["source"]
        parts = [f"{source} -> {attack.get('target')}"]
    else:
        parts = [f"class {attack.get('target')}"]
    parts += [f"{k} {v}" for k, v in attack.items() if k not in _SEEDS and v is not None]
    return ", ".join(str(p).replace("[", "(").replace("]", ")") for p in parts)


def zoo_rows(runs: Sequence[Path]) -> list[dict[str, Any]]:
    """One row per run directory, dataset and scenario with a trained model.

    Keys: ``run``, ``dataset``, ``scenario``, ``attack``, ``parameters``, ``n_poison``,
    ``clean_acc``, ``asr``, ``epochs``.
    """
    rows = []
    for run in runs:
        for metrics_file in sorted(Path(run).glob("results/*/*/metrics.json")):
            folder = metrics_file.parent
            poisoned = folder / "poisoned.h5"
            if not poisoned.is_file():
                continue  # the label-consistent attack's proxy model
            with h5py.File(poisoned, "r") as f:
                meta = json.loads(f.attrs["meta"])
            metrics = json.loads(metrics_file.read_text())
            attack = meta["attack"]
            rows.append({
                "run": str(run), "dataset": folder.parent.name, "scenario": folder.name,
                "attack": attack["name"], "parameters": _parameters(attack),
                "n_poison": meta.get("n_poison", 0), "clean_acc": metrics["clean_acc"],
                "asr": metrics["asr"], "epochs": metrics.get("epochs"),
            })  # fmt: skip
    return rows


def _cell(mean: float, std: float, n: int) -> str:
    if mean != mean:  # NaN: no attack
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


def zoo_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one table per dataset, a row per scenario (clean accuracy, ASR in %)."""
    table = aggregate(rows, group_keys=("dataset", "scenario"), value_keys=("clean_acc", "asr"))
    first = {(r["dataset"], r["scenario"]): r for r in reversed(rows)}
    parts = []
    for dataset in sorted({r["dataset"] for r in table}):
        lines = [
            f"### {dataset}", "",
            "| scenario | attack | parameters | poisoned images | n | clean acc % | ASR % |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for r in (r for r in table if r["dataset"] == dataset):
            info = first[(dataset, r["scenario"])]
            n = r["n"]
            lines.append(
                f"| {r['scenario']} | {info['attack']} | {info['parameters']} | "
                f"{info['n_poison']} | {n} | {_cell(r['clean_acc_mean'], r['clean_acc_std'], n)} "
                f"| {_cell(r['asr_mean'], r['asr_std'], n)} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
