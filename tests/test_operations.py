"""Fault injection on the whole workflow: kill it inside each long rule, resume, compare.

A run that is SIGKILLed inside a rule (the worst interruption: no handler runs)
must leave nothing that a later run takes as complete, and the resumed run must
end with results bit-identical to an uninterrupted run with the same seeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_workflow import SNAKEMAKE, TINY, run_snakemake, write_config

from poisonscan.bench.compare import compare_runs

pytestmark = pytest.mark.slow

# Rules long enough (seconds, on the tiny config) to be caught while running.
KILLED_RULES = ("train", "explain", "distances_gw")


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


def assert_same_results(a: Path, b: Path) -> None:
    differ, equal = compare_runs(a, b, figures=False)
    assert not differ, f"{len(differ)} results differ: {differ[:20]}"
    assert equal > 0


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
