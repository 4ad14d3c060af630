"""The Python API (poisonscan.audit, poisonscan.load): the command it runs, the result it reads.

The audit itself is the command's (tests/test_cli.py); here the scan's process is replaced by
one that writes the files a finished audit leaves, so these tests take no workflow run.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import poisonscan
from poisonscan import api


def finished_audit(out: Path) -> None:
    """The files of a finished audit: two classes, one poisoned, two suspicious files."""
    base = out / "results" / "folder" / "audit" / "verdicts"
    base.mkdir(parents=True)
    with open(base / "verdicts.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["class", "name", "verdict", "n", "z", "q", "n_flagged", "trigger"])
        w.writeheader()
        w.writerow({"class": 0, "name": "cats", "verdict": "clean", "n": 20, "z": 0.3,
                    "q": 1.0, "n_flagged": 0, "trigger": ""})  # fmt: skip
        w.writerow({"class": 1, "name": "dogs", "verdict": "poisoned", "n": 20, "z": 9.1,
                    "q": 0.01, "n_flagged": 2, "trigger": "3x3 at (16, 16)"})  # fmt: skip
    with open(base / "suspicious.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "class", "score", "q", "signal", "split"])
        w.writeheader()
        w.writerow({"path": "/d/dogs/a.png", "class": 1, "score": 3, "q": 0.01,
                    "signal": "trigger", "split": "train"})  # fmt: skip
        w.writerow({"path": "/d/dogs/b.png", "class": 1, "score": 2, "q": 0.02,
                    "signal": "trigger", "split": "test"})  # fmt: skip
    quality = {"clean_acc": 0.95, "passed": True, "summary": "model accuracy 0.950"}
    (base / "verdicts.json").write_text(json.dumps({"triggers": {"1": {"size": 3}},
                                                    "model_quality": quality}))  # fmt: skip


def test_load_reads_the_verdicts_files_and_triggers(tmp_path: Path) -> None:
    finished_audit(tmp_path / "out")
    result = poisonscan.load(tmp_path / "out")
    assert result.poisoned_classes == ["dogs"]
    assert result.suspicious_files == ["/d/dogs/a.png", "/d/dogs/b.png"]
    assert list(result.suspicious["split"]) == ["train", "test"]
    assert result.triggers == {"1": {"size": 3}} and result.model_quality["clean_acc"] == 0.95
    assert result.paths["clean_list"].name == "clean_list.txt"
    page = result._repr_html_()
    assert "poisoned: dogs" in page and "<table" in page and "model accuracy 0.950" in page
    assert "poisoned=[dogs]" in repr(result)
    with pytest.raises(FileNotFoundError, match="holds no finished audit"):
        poisonscan.load(tmp_path)


def test_audit_runs_the_command_with_the_arrays_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen["argv"] = argv
        data = np.load(argv[4])
        seen["arrays"] = {k: data[k] for k in data.files}
        seen["config"] = yaml.safe_load(Path(argv[argv.index("--config") + 1]).read_text())
        finished_audit(Path(argv[argv.index("--out") + 1]))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(api.subprocess, "run", run)
    x = np.zeros((4, 8, 8, 3), np.uint8)
    result = poisonscan.audit(
        x,
        np.array([0, 1, 0, 1]),
        out=tmp_path / "out",
        names=["cats", "dogs"],
        cores=2,
        training={"epochs": np.int64(3)},
    )
    assert seen["argv"][2:4] == ["poisonscan.cli", "scan"] and "--cores" in seen["argv"]
    assert seen["arrays"]["x"].shape == (4, 8, 8, 3) and list(seen["arrays"]["names"]) == [
        "cats", "dogs"]  # fmt: skip
    assert seen["config"] == {"training": {"epochs": 3}}
    assert result.poisoned_classes == ["dogs"] and result.out == (tmp_path / "out").resolve()
    with pytest.raises(ValueError, match="need their labels"):
        poisonscan.audit(x, out=tmp_path / "o2")


def test_audit_raises_the_commands_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = "poisonscan: error: 2 problems in /d; with poisonscan scan: add --skip-bad:"

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 2, "", f"progress\n{line}\n  a problem\n")

    monkeypatch.setattr(api.subprocess, "run", run)
    with pytest.raises(api.AuditError) as err:
        poisonscan.audit(tmp_path, out=tmp_path / "out", skip_bad=False)
    assert str(err.value) == line
