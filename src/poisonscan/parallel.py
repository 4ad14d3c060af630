"""Dask cluster selection from a plain config dict (the ``dask:`` config section).

``{"cluster": "local"}`` (the default)
    A :class:`distributed.LocalCluster` of ``n_workers`` single-threaded worker
    processes, with OpenMP/BLAS/MKL limited to one thread per worker and POT's
    (slow to import) torch backend disabled in the workers (our batched GW solver
    imports torch itself). An optional ``dashboard_address`` (e.g. ``":0"``) enables
    the dashboard; it is off by default.
``{"cluster": "address", "address": "tcp://host:8786"}``
    Connect to a running scheduler.
``{"cluster": "scheduler_file", "scheduler_file": "/path/scheduler.json"}``
    Connect to the scheduler described by a scheduler file (dask-mpi, SLURM runners).
``{"cluster": "slurm" | "pbs", "jobqueue": {...}}``
    A dask-jobqueue ``SLURMCluster`` / ``PBSCluster`` whose batch jobs each run
    ``processes`` single-threaded workers, scaled adaptively between ``minimum`` and
    ``maximum`` jobs. Workers retire ``lifetime_margin`` before the job's ``walltime``
    ends (staggered, so they do not all leave at once), which lets the scheduler move
    their tasks elsewhere instead of losing them to the batch system's kill; a killed
    task is retried anyway. See :data:`JOBQUEUE_DEFAULTS` for the keys.

Other keys are ignored, so a larger config section can be passed as is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import dask
import distributed

__all__ = ["CLUSTER_KINDS", "JOBQUEUE_DEFAULTS", "dask_client", "jobqueue_cluster"]

CLUSTER_KINDS = ("local", "address", "scheduler_file", "slurm", "pbs")

# One thread per worker process for every numeric library (torch reads OMP_NUM_THREADS).
_SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    # POT imports torch (seconds per worker) for a backend the workers never use.
    "POT_BACKEND_DISABLE_PYTORCH": "1",
}

#: Keys of ``dask.jobqueue`` and their defaults.
JOBQUEUE_DEFAULTS: dict[str, Any] = {
    "cores": 2,  # cores per batch job
    "processes": 2,  # worker processes per job (one thread each)
    "memory": "8GB",  # memory per job
    "walltime": "01:00:00",  # batch job time limit, HH:MM:SS
    "lifetime_margin": "5m",  # workers retire this long before the walltime ends
    "minimum": 0,  # adaptive scaling: fewest jobs
    "maximum": 4,  # adaptive scaling: most jobs
    "queue": None,  # partition (SLURM) / queue (PBS)
    "account": None,
    "job_extra_directives": [],  # extra #SBATCH / #PBS lines
    "log_directory": None,
    "local_directory": None,
}


def _required(config: Mapping[str, Any], key: str) -> str:
    value = config.get(key)
    if not value:
        raise ValueError(
            f"dask config with cluster={config.get('cluster')!r} needs the key {key!r}"
        )
    return str(value)


def _seconds(text: str) -> int:
    """``"HH:MM:SS"``, ``"MM:SS"``, ``"D-HH:MM:SS"`` or ``"90s"``/``"5m"``/``"2h"`` -> seconds."""
    text = str(text).strip()
    unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh])", text)
    if unit:
        return int(float(unit.group(1)) * {"s": 1, "m": 60, "h": 3600}[unit.group(2)])
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"cannot read the duration {text!r}; use HH:MM:SS or e.g. '5m'")
    secs = 0
    for part in parts:
        secs = secs * 60 + int(part)
    return days * 86400 + secs


def jobqueue_cluster(kind: str, config: Mapping[str, Any] | None) -> Any:
    """Construct (without submitting any job) a dask-jobqueue cluster.

    Parameters
    ----------
    kind : {"slurm", "pbs"}
    config : mapping or None
        Keys of :data:`JOBQUEUE_DEFAULTS`; missing ones take the defaults.

    Returns
    -------
    dask_jobqueue.SLURMCluster or dask_jobqueue.PBSCluster
        Not yet scaled; ``cluster.job_script()`` shows the batch script.

    Raises
    ------
    ValueError
        For an unknown kind or key, or a lifetime margin that leaves no time to work.
    ImportError
        If dask-jobqueue is not installed (``pip install 'poisonscan[slurm]'``).
    """
    if kind not in ("slurm", "pbs"):
        raise ValueError(f"unknown jobqueue cluster {kind!r}; allowed values: ['slurm', 'pbs']")
    cfg = {**JOBQUEUE_DEFAULTS, **dict(config or {})}
    unknown = sorted(set(cfg) - set(JOBQUEUE_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown dask.jobqueue key(s) {unknown}; allowed: {sorted(JOBQUEUE_DEFAULTS)}"
        )
    try:
        import dask_jobqueue
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError(
            f"dask cluster {kind!r} needs dask-jobqueue: pip install 'poisonscan[slurm]'"
        ) from err
    walltime = _seconds(cfg["walltime"])
    margin = _seconds(cfg["lifetime_margin"])
    lifetime = walltime - margin
    if lifetime <= 0:
        raise ValueError(
            f"dask.jobqueue.lifetime_margin {cfg['lifetime_margin']!r} leaves no working time "
            f"in the walltime {cfg['walltime']!r}"
        )
    stagger = max(1, min(margin, lifetime) // 2)
    processes = int(cfg["processes"])
    kwargs: dict[str, Any] = {
        "cores": int(cfg["cores"]),
        "processes": processes,
        "memory": str(cfg["memory"]),
        "walltime": str(cfg["walltime"]),
        "queue": cfg["queue"],
        "account": cfg["account"],
        "job_extra_directives": list(cfg["job_extra_directives"]),
        "worker_extra_args": ["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"],
        "job_script_prologue": [f"export {k}={v}" for k, v in _SINGLE_THREAD_ENV.items()],
        "log_directory": cfg["log_directory"],
        "local_directory": cfg["local_directory"],
    }
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    return cls(**kwargs)


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables of this process for the block, then restore them."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def dask_client(config: Mapping[str, Any] | None, n_workers: int) -> Iterator[distributed.Client]:
    """Yield a :class:`distributed.Client` for the cluster chosen by ``config``.

    Parameters
    ----------
    config : mapping or None
        ``cluster`` in :data:`CLUSTER_KINDS` (default ``"local"``) plus the key that
        kind needs (``address``, ``scheduler_file`` or ``jobqueue``).
    n_workers : int
        Number of worker processes of a local cluster (ignored otherwise).

    Yields
    ------
    distributed.Client
        Closed on exit, together with the cluster if one was started here.

    Raises
    ------
    ValueError
        For an unknown ``cluster`` value, a missing key or ``n_workers < 1``.
    """
    config = dict(config or {})
    kind = config.get("cluster", "local")
    if kind not in CLUSTER_KINDS:
        raise ValueError(f"unknown dask cluster {kind!r}; allowed values: {list(CLUSTER_KINDS)}")
    with ExitStack() as stack:
        if kind == "local":
            if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
                raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
            # The nanny applies this environment before it spawns the worker process, but
            # a variable already set here wins over it (Snakemake sets OMP_NUM_THREADS etc.
            # to the rule's threads: 2 workers x 2 torch threads on 2 cores ran the GW
            # tasks 5x slower), so it is set here too while the nannies are made.
            env = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **_SINGLE_THREAD_ENV}
            with (
                dask.config.set({"distributed.nanny.pre-spawn-environ": env}),
                _environ(_SINGLE_THREAD_ENV),
            ):
                cluster = stack.enter_context(
                    distributed.LocalCluster(
                        n_workers=n_workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=config.get("dashboard_address"),
                    )
                )
            client = stack.enter_context(distributed.Client(cluster))
        elif kind == "address":
            client = stack.enter_context(distributed.Client(_required(config, "address")))
        elif kind == "scheduler_file":
            scheduler_file = _required(config, "scheduler_file")
            client = stack.enter_context(distributed.Client(scheduler_file=scheduler_file))
        else:
            jq = {**JOBQUEUE_DEFAULTS, **dict(config.get("jobqueue") or {})}
            cluster = stack.enter_context(jobqueue_cluster(kind, jq))
            cluster.adapt(minimum_jobs=int(jq["minimum"]), maximum_jobs=int(jq["maximum"]))
            client = stack.enter_context(distributed.Client(cluster))
        yield client
