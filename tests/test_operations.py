"""Fault injection on the whole workflow: kill it inside each long rule, resume, compare.

A run that is SIGKILLed inside a rule (the worst interruption: no handler runs)
must leave nothing that a later run takes as complete, and the resumed run must
end with results bit-identical to an uninterrupted run with the same seeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zarr
from test_workflow import SNAKEMAKE, TINY, run_snakemake, write_config

pytestmark = pytest.mark.slow

# Rules long enough (seconds, on the tiny config) to be caught while running.
KILLED_RULES = ("train", "explain", "distances_gw")
# Output keys that hold wall-clock measurements, not results.
TIMING_KEYS = ("seconds", "time", "device")


def start_snakemake(workdir: Path, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", "--configfile", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group: the kill reaches every job
    )


def kill_inside(workdir: Path, config: Path, rule: str, timeout: float = 600) -> bool:
    """Run until ``rule`` has started, then SIGKILL the run; False if the run ended first."""
    proc = start_snakemake(workdir, config)
    logs = workdir / "results" / "logs" / rule
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if logs.is_dir() and any(p.stat().st_size > 0 for p in logs.rglob("*.log")):
                time.sleep(1.0)  # well inside the rule, past its first writes
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return True
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return False


def planned_rules(workdir: Path, config: Path) -> str:
    proc = run_snakemake(workdir, "--configfile", str(config), "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def result_values(root: Path) -> Iterator[tuple[str, Any]]:
    """Every stored array and JSON value under ``root/results``, by relative name."""
    results = root / "results"
    for path in sorted(results.rglob("*")):
        rel = str(path.relative_to(results))
        if rel.startswith(("logs", "benchmarks")) or ".zarr/" in rel:
            continue
        if path.suffix == ".zarr":
            group = zarr.open_group(str(path), mode="r")
            for name, arr in sorted(group.arrays(), key=lambda kv: kv[0]):
                yield f"{rel}/{name}", arr[...]
            for gname, sub in sorted(group.groups(), key=lambda kv: kv[0]):
                for name, arr in sorted(sub.arrays(), key=lambda kv: kv[0]):
                    yield f"{rel}/{gname}/{name}", arr[...]
        elif path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                for name in sorted(f):
                    yield f"{rel}/{name}", f[name][()]
        elif path.suffix == ".npz":
            with np.load(path) as f:
                for name in sorted(f.files):
                    yield f"{rel}/{name}", f[name]
        elif path.suffix == ".safetensors":
            yield rel, path.read_bytes()
        elif path.suffix == ".json":
            yield rel, drop_timing(json.loads(path.read_text()))


def drop_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: drop_timing(v) for k, v in obj.items() if not any(t in k for t in TIMING_KEYS)}
    if isinstance(obj, list):
        return [drop_timing(v) for v in obj]
    return obj


def assert_same_results(a: Path, b: Path) -> None:
    va, vb = dict(result_values(a)), dict(result_values(b))
    assert sorted(va) == sorted(vb)
    for name, value in va.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == vb[name].dtype, name
            floats = np.issubdtype(value.dtype, np.floating)  # NaN only where it can be
            assert np.array_equal(value, vb[name], equal_nan=floats), f"{name} differs"
        else:
            assert value == vb[name], f"{name} differs"


def test_killed_rules_rerun_and_the_result_is_bit_identical(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    reference = tmp_path_factory.mktemp("reference")
    proc = run_snakemake(reference, "--configfile", str(write_config(reference, TINY)))
    assert proc.returncode == 0, proc.stderr[-3000:]

    work = tmp_path_factory.mktemp("interrupted")
    config = write_config(work, TINY)
    caught = []
    for rule in KILLED_RULES:
        if not kill_inside(work, config, rule):
            continue
        caught.append(rule)
        unlock = run_snakemake(work, "--configfile", str(config), "--unlock")
        assert unlock.returncode == 0, unlock.stderr[-3000:]
        # the killed rule's outputs are not taken as complete: the next run plans it again
        assert f"rule {rule}:" in planned_rules(work, config)
    assert caught, "the run ended before any rule could be interrupted"
    proc = run_snakemake(work, "--configfile", str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_results(reference, work)
    plan = planned_rules(work, config)
    assert "Nothing to be done" in plan, plan[-3000:]
