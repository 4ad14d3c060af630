"""Tests for poisonscan.parallel."""

from __future__ import annotations

import os
from pathlib import Path

import distributed
import pytest

from poisonscan.parallel import dask_client


def _env(name: str) -> str | None:
    return os.environ.get(name)


def test_local_cluster_is_default_runs_and_closes() -> None:
    with dask_client({"dashboard_address": None}, n_workers=2) as client:
        cluster = client.cluster
        assert len(client.scheduler_info()["workers"]) == 2
        assert all(n == 1 for n in client.nthreads().values())
        assert client.submit(sum, [1, 2, 3]).result() == 6
        assert set(client.run(_env, "OMP_NUM_THREADS").values()) == {"1"}
        assert set(client.run(_env, "POT_BACKEND_DISABLE_PYTORCH").values()) == {"1"}
    assert client.status == "closed"
    assert cluster.status.name == "closed"


def test_address_and_scheduler_file(tmp_path: Path) -> None:
    sfile = tmp_path / "scheduler.json"
    with distributed.LocalCluster(
        n_workers=1,
        processes=False,
        dashboard_address=None,
        scheduler_kwargs={"scheduler_file": str(sfile)},
    ) as cluster:
        with dask_client({"cluster": "address", "address": cluster.scheduler_address}, 1) as c:
            assert c.submit(pow, 2, 5).result() == 32
        assert c.status == "closed"
        assert cluster.status.name == "running"  # not ours to close
        with dask_client({"cluster": "scheduler_file", "scheduler_file": str(sfile)}, 1) as c:
            assert c.scheduler.address == cluster.scheduler_address


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"cluster": "slurm"}, r"'slurm'.*\['local', 'address', 'scheduler_file'\]"),
        ({"cluster": "address"}, "'address'"),
        ({"cluster": "address", "address": ""}, "'address'"),
        ({"cluster": "scheduler_file"}, "'scheduler_file'"),
    ],
)
def test_bad_config(config: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match), dask_client(config, n_workers=1):
        pass


def test_bad_n_workers() -> None:
    with pytest.raises(ValueError, match="n_workers"), dask_client({}, n_workers=0):
        pass
