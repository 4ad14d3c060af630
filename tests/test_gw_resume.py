"""Killing the GW step mid-run loses nothing: the rerun computes only the missing tiles."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

from poisonscan import distances
from poisonscan.storage import create_array, seal_store

PARAMS = {"pool": 2, "mass": None, "metric": "euclidean", "epsilon": 0.0, "max_iter": 1000,
          "tol": 1e-9, "tile": 4}  # fmt: skip

RUN = """
import sys
from poisonscan.rulelog import setup_logging
from poisonscan.steps.distances import distances_gw
if __name__ == "__main__":
    setup_logging(sys.argv[3])
    distances_gw(sys.argv[1], sys.argv[2], {params!r}, {{"cluster": "local"}}, threads=1)
"""


def make_store(path: Path, n: int = 36) -> None:
    rng = np.random.default_rng(3)
    hm = rng.random((n, 16, 16)) ** 3
    hm[::4, 12:15, 12:15] += 1.0
    hm = (hm / hm.sum(axis=(1, 2), keepdims=True)).astype(np.float32)
    root = zarr.open_group(str(path), mode="w")
    create_array(root, "heatmaps", data=hm)
    seal_store(root)  # a finished explanation store: the GW step checks every chunk


def run(store: Path, out: Path, log: Path) -> subprocess.Popen:
    script = store.parent / "run_gw.py"
    script.write_text(RUN.format(params=PARAMS))
    return subprocess.Popen(
        [sys.executable, str(script), str(store), str(out), str(log)], start_new_session=True
    )


def test_killed_gw_job_resumes_and_matches_uninterrupted_run(tmp_path: Path) -> None:
    store = tmp_path / "explain.zarr"
    make_store(store)
    reference = tmp_path / "reference.zarr"
    assert run(store, reference, tmp_path / "reference.log").wait(timeout=600) == 0

    out = tmp_path / "gw.zarr"
    proc = run(store, out, tmp_path / "first.log")
    partial = Path(f"{out}.partial")
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (partial / "done" / "zarr.json").exists():
            done = int(zarr.open_group(str(partial), mode="r")["done"][...].sum())
            if done >= 5:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its Dask workers, without clean-up
    proc.wait()
    assert not out.exists() and partial.exists()

    assert run(store, out, tmp_path / "second.log").wait(timeout=600) == 0
    log = (tmp_path / "second.log").read_text()
    resumed = re.search(r"(\d+) already done", log)
    assert resumed and int(resumed.group(1)) >= done, log
    np.testing.assert_array_equal(
        distances.read_distance_store(str(out)), distances.read_distance_store(str(reference))
    )
    assert not partial.exists()
