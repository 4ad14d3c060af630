"""Dask cluster selection from a plain config dict.

``{"cluster": "local"}`` (the default)
    A :class:`distributed.LocalCluster` of ``n_workers`` single-threaded worker
    processes, with OpenMP/BLAS/MKL limited to one thread per worker and POT's
    (unused, slow to import) torch backend disabled in the workers. An
    optional ``dashboard_address`` (e.g. ``":0"``) enables the dashboard; it is
    off by default.
``{"cluster": "address", "address": "tcp://host:8786"}``
    Connect to a running scheduler.
``{"cluster": "scheduler_file", "scheduler_file": "/path/scheduler.json"}``
    Connect to the scheduler described by a scheduler file (dask-mpi, SLURM runners).

Other keys are ignored, so a larger config section can be passed as is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import dask
import distributed

__all__ = ["CLUSTER_KINDS", "dask_client"]

CLUSTER_KINDS = ("local", "address", "scheduler_file")

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


def _required(config: Mapping[str, Any], key: str) -> str:
    value = config.get(key)
    if not value:
        raise ValueError(
            f"dask config with cluster={config.get('cluster')!r} needs the key {key!r}"
        )
    return str(value)


@contextmanager
def dask_client(config: Mapping[str, Any] | None, n_workers: int) -> Iterator[distributed.Client]:
    """Yield a :class:`distributed.Client` for the cluster chosen by ``config``.

    Parameters
    ----------
    config : mapping or None
        ``cluster`` in :data:`CLUSTER_KINDS` (default ``"local"``) plus the key that
        kind needs (``address`` or ``scheduler_file``).
    n_workers : int
        Number of worker processes of a local cluster (ignored otherwise).

    Yields
    ------
    distributed.Client
        Closed on exit, together with the local cluster if one was started.

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
            # The nanny applies this environment before it spawns the worker process.
            env = {**dask.config.get("distributed.nanny.pre-spawn-environ"), **_SINGLE_THREAD_ENV}
            with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
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
        else:
            scheduler_file = _required(config, "scheduler_file")
            client = stack.enter_context(distributed.Client(scheduler_file=scheduler_file))
        yield client
