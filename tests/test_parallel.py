"""Tests for poisonscan.parallel."""

from __future__ import annotations

import os
from pathlib import Path

import distributed
import pytest

from poisonscan.parallel import dask_client, jobqueue_cluster


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
        (
            {"cluster": "kubernetes"},
            r"'kubernetes'.*\['local', 'address', 'scheduler_file', 'slurm', 'pbs'\]",
        ),
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


@pytest.mark.parametrize(
    ("kind", "directive"), [("slurm", "#SBATCH -t 02:00:00"), ("pbs", "walltime=02:00:00")]
)
def test_jobqueue_cluster_script_has_walltime_and_shorter_lifetime(
    kind: str, directive: str
) -> None:
    pytest.importorskip("dask_jobqueue")
    config = {
        "walltime": "02:00:00",
        "lifetime_margin": "10m",
        "cores": 4,
        "processes": 4,
        "memory": "16GB",
        "queue": "short",
        "job_extra_directives": ["--qos=low"],
    }
    with jobqueue_cluster(kind, config) as cluster:  # constructs, submits nothing
        script = cluster.job_script()
        assert len(cluster.workers) == 0
    assert directive in script
    # Workers retire 10 minutes before the 2 h walltime, staggered by up to 5 minutes.
    assert "--lifetime 6600s" in script and "--lifetime-stagger 300s" in script
    assert "--nthreads 1" in script and "--nworkers 4" in script
    assert "export OMP_NUM_THREADS=1" in script
    assert "short" in script and "--qos=low" in script


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"walltime": "00:05:00", "lifetime_margin": "5m"}, "leaves no working time"),
        ({"walltime": "one hour"}, "cannot read the duration"),
        ({"wall_time": "01:00:00"}, r"unknown dask.jobqueue key\(s\) \['wall_time'\]"),
    ],
)
def test_jobqueue_bad_config(config: dict, match: str) -> None:
    pytest.importorskip("dask_jobqueue")
    with pytest.raises(ValueError, match=match):
        jobqueue_cluster("slurm", config)
    with pytest.raises(ValueError, match=r"'lsf'.*\['slurm', 'pbs'\]"):
        jobqueue_cluster("lsf", {})


def test_local_workers_get_one_thread_even_where_the_caller_asked_for_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Snakemake sets OMP_NUM_THREADS etc. to a rule's threads; the GW workers must still get
    one thread each (the nanny's pre-spawn environment loses against a set variable)."""

    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(key, "2")

    def threads() -> tuple[int, str | None]:
        import torch

        return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")

    with dask_client({"cluster": "local"}, n_workers=1) as client:
        assert list(client.run(threads).values()) == [(1, "1")]
    assert os.environ["OMP_NUM_THREADS"] == "2"  # this process's setting is restored
