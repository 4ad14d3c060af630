"""A Dask worker killed while GW tiles are in flight: the run finishes, and nothing changes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import zarr

from poisonscan.distances import GWParams, gw_distance_matrix
from poisonscan.parallel import dask_client

# POT exact GW on a 12x12 grid: deterministic, and slow enough to be caught in flight
PARAMS = GWParams(solver="pot_exact", pool=1, mass=None, epsilon=0.0)


def test_killed_worker_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    hm = rng.random((10, 12, 12)) ** 3
    hm[::3, 8:11, 8:11] += 0.5
    hm = (hm / hm.sum(axis=(1, 2), keepdims=True)).astype(np.float32)
    src = str(tmp_path / "group.zarr")
    zarr.open_group(src, mode="w").create_array("heatmaps", data=hm, chunks=(3, 12, 12))

    with dask_client({"cluster": "local"}, n_workers=2) as client:
        reference = gw_distance_matrix(src, str(tmp_path / "ref.zarr"), PARAMS, client, tile=3)

        out = str(tmp_path / "gw.zarr")
        result: dict = {}

        def run() -> None:
            try:
                result["d"] = gw_distance_matrix(src, out, PARAMS, client, tile=3)
            except BaseException as err:  # re-raised in the test thread
                result["error"] = err

        thread = threading.Thread(target=run)
        thread.start()
        victim = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and thread.is_alive():
            busy = [w for w, keys in client.processing().items() if keys]
            started = (Path(out) / "done" / "zarr.json").exists()
            n_done = int(zarr.open_group(out, mode="r")["done"][...].sum()) if started else 0
            if busy and n_done >= 1:
                victim = busy[0]
                break
            time.sleep(0.02)
        assert victim is not None, "the run finished before a worker could be killed"
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)  # no clean-up: the nanny notices and starts a new one
        thread.join(timeout=300)
        assert not thread.is_alive()
        if "error" in result:
            raise result["error"]
        assert n_done < 10  # killed mid-run (10 tiles in all)
        client.wait_for_workers(2, timeout=60)
        assert pid not in client.run(os.getpid).values()

    np.testing.assert_array_equal(result["d"], reference)
