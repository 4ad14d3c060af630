"""The GW step on a separately started Dask scheduler with two worker processes (loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from poisonscan import distances
from poisonscan.steps.distances import distances_gw
from poisonscan.storage import create_array, seal_store


def dask_cli(*args: str, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("dask")
    return subprocess.Popen([str(exe), *args], stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture
def scheduler_file(tmp_path: Path):
    sched_file = tmp_path / "scheduler.json"
    procs = [
        dask_cli(
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", str(sched_file), log=tmp_path / "scheduler.log",
        )
    ]  # fmt: skip
    deadline = time.monotonic() + 60
    while not sched_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sched_file.exists(), (tmp_path / "scheduler.log").read_text()
    for i in range(2):
        procs.append(
            dask_cli(
                "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1",
                log=tmp_path / f"worker{i}.log",
            )
        )  # fmt: skip
    try:
        yield sched_file
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def heatmap_store(path: Path, n: int = 9) -> np.ndarray:
    rng = np.random.default_rng(1)
    hm = rng.random((n, 16, 16)) ** 4
    hm[: n // 3, 10:13, 10:13] += 2.0  # a "sticker" on a third of them
    hm = (hm / hm.sum(axis=(1, 2), keepdims=True)).astype(np.float32)
    root = zarr.open_group(str(path), mode="w")
    root.attrs["target_class"] = 0  # the explain store layout: one group per class
    create_array(root.create_group("0"), "heatmaps", data=hm)
    seal_store(root)  # a finished explanation store: the GW step checks every chunk
    return hm


def test_gw_step_on_external_scheduler_matches_direct_computation(
    scheduler_file: Path, tmp_path: Path
) -> None:
    from distributed import Client

    with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        address = client.scheduler.address
    hm = heatmap_store(tmp_path / "explain.zarr")
    params = {"pool": 4, "mass": None, "metric": "euclidean", "epsilon": 0.0, "max_iter": 1000,
              "tol": 1e-9, "tile": 4}  # fmt: skip
    for name, cluster in {
        "file": {"cluster": "scheduler_file", "scheduler_file": str(scheduler_file)},
        "address": {"cluster": "address", "address": address},
    }.items():
        out = tmp_path / f"gw_{name}.zarr"
        distances_gw(tmp_path / "explain.zarr", out, params, cluster, threads=1)
        d = distances.read_distance_store(str(out))
        gw = distances.GWParams.from_config({k: v for k, v in params.items() if k != "tile"})
        i, j = 1, 7
        assert d[i, j] == pytest.approx(distances.gromov_wasserstein(hm[i], hm[j], **gw.to_dict()))
        assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)
        assert not Path(f"{out}.partial").exists()
    assert json.loads(scheduler_file.read_text())["address"].startswith("tcp://127.0.0.1")
