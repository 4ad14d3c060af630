"""The rule log: every workflow script's failure lands in its own log file, with the
traceback; a damaged input is moved aside with advice that works."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from poisonscan.rulelog import RERUN, declared_input, rule_log
from poisonscan.storage import ProvenanceError, StoreError

SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))


class _Files(list):
    """``snakemake.input`` / ``output`` / ``log`` / ``params``: every name is a missing path."""

    def __init__(self, root: Path, kind: str) -> None:
        super().__init__([str(root / kind / "0")])
        self._root, self._kind = root, kind

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return str(self._root / self._kind / name)

    def get(self, name: str, default: Any = None) -> str:
        return getattr(self, name)


class _Job:
    """A stand-in for the ``snakemake`` object of a script, pointing at files that do not exist."""

    def __init__(self, root: Path, log: Path) -> None:
        self.input = _Files(root, "missing-input")
        self.output = _Files(root, "output")
        self.params = _Files(root, "params")
        self.wildcards = _Files(root, "wildcards")
        self.log = _Files(root, "log")
        self.log[0] = str(log)
        self.log.log = str(log)  # distances_gw names its log
        self.resources: dict[str, Any] = {}
        self.threads = 1
        self.rule = ""
        self.config: dict[str, Any] = {"dask": {"cluster": "local"}}


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_every_script_runs_inside_the_rule_log() -> None:
    for script in SCRIPTS:
        assert "with rule_log(snakemake.log" in script.read_text(), script.name
        assert "snakemake.input):" in script.read_text(), script.name  # damaged inputs moved aside


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_a_failing_script_writes_its_traceback_to_the_rule_log(
    script: Path, tmp_path: Path, restore_logging: None
) -> None:
    """One failure per rule kind: every input is missing, so the step raises."""
    log = tmp_path / "logs" / f"{script.stem}.log"
    job = _Job(tmp_path, log)
    job.rule = script.stem  # distances_gw.py serves two rules
    with pytest.raises(Exception):  # noqa: B017 - whatever the step raises
        runpy.run_path(str(script), init_globals={"snakemake": job}, run_name="__main__")
    text = log.read_text()
    assert "ERROR poisonscan: step failed:" in text, text[-2000:]
    assert "Traceback (most recent call last):" in text, text[-2000:]


def test_a_damaged_input_is_moved_aside_and_the_advice_says_to_run_again(
    tmp_path: Path, restore_logging: None
) -> None:
    store = tmp_path / "explain.zarr"
    (store / "5").mkdir(parents=True)
    log = tmp_path / "rule.log"
    with pytest.raises(StoreError) as err, rule_log(log, [str(store), str(tmp_path / "x.h5")]):
        raise StoreError("store explain.zarr: array 5/heatmaps, chunk (1, 0, 0): broken",
                         store / "5")  # fmt: skip
    assert not store.exists() and (tmp_path / "explain.zarr.damaged" / "5").is_dir()
    advice = f"{RERUN}: it recomputes {store} and everything computed from it"
    assert str(err.value).endswith(advice)
    assert "moved the damaged" in str(err.value) and "chunk (1, 0, 0)" in str(err.value)
    assert "Traceback" in log.read_text() and "explain.zarr.damaged" in log.read_text()
    # not an input of the job (e.g. the user's raw data): nothing moves, the advice stays
    raw = tmp_path / "gtsrb.npz"
    raw.write_text("x")
    with pytest.raises(ProvenanceError, match="delete .*gtsrb.npz"), rule_log(log, []):
        raise ProvenanceError("foreign", raw)
    assert raw.exists()


def test_declared_input_finds_the_store_that_holds_a_group(tmp_path: Path) -> None:
    inputs = ["results/a/explain.zarr", ["results/a/clusters/x.npz"]]
    assert declared_input("results/a/explain.zarr/5", inputs) == "results/a/explain.zarr"
    assert declared_input("results/a/clusters/x.npz", inputs) == "results/a/clusters/x.npz"
    assert declared_input("results/a/explain.zarr.partial", inputs) is None
