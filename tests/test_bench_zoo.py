"""bench zoo: clean accuracy and attack success over repetitions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import random_dataset

from poisonscan.attacks import BadNetsAttack
from poisonscan.bench.zoo import zoo_rows, zoo_table
from poisonscan.storage import write_dataset


def _run(root: Path, clean_acc: float, asr: float) -> Path:
    folder = root / "results" / "toy" / "badnets"
    folder.mkdir(parents=True)
    write_dataset(
        folder / "poisoned.h5",
        BadNetsAttack(target=1, poison_rate=0.1).poison(
            random_dataset(n_classes=3, n_train=20, n_test=4)
        ),
    )
    (folder / "metrics.json").write_text(json.dumps({"clean_acc": clean_acc, "asr": asr}))
    return root


def test_zoo_table_gives_mean_and_sd_over_runs(tmp_path: Path) -> None:
    runs = [_run(tmp_path / "r0", 0.90, 0.80), _run(tmp_path / "r1", 0.94, 1.00)]
    rows = zoo_rows(runs)
    assert [r["asr"] for r in rows] == [0.80, 1.00]
    assert rows[0]["attack"] == "badnets" and rows[0]["parameters"].startswith("all -> 1")
    table = zoo_table(rows)
    line = next(x for x in table.splitlines() if x.startswith("| badnets"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4:] == ["2", "92.0 ± 2.0", "90.0 ± 10.0"]


def test_zoo_skips_folders_without_a_poisoned_dataset(tmp_path: Path) -> None:
    proxy = tmp_path / "results" / "toy" / "proxy"
    proxy.mkdir(parents=True)
    (proxy / "metrics.json").write_text(json.dumps({"clean_acc": 0.5, "asr": float("nan")}))
    assert zoo_rows([tmp_path]) == []
    with pytest.raises(StopIteration):
        next(x for x in zoo_table([]).splitlines() if x.startswith("| badnets"))
