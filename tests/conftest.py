"""Shared fixtures: small datasets built in memory, no files needed."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from poisonscan.storage import ImageDataset

REPO = Path(__file__).resolve().parents[1]
GTSRB_NPZ = REPO.parent / "shared" / "data" / "gtsrb" / "gtsrb32.npz"


def random_dataset(
    n_classes: int = 4, n_train: int = 30, n_test: int = 10, size: int = 32, seed: int = 0
) -> ImageDataset:
    """Noise images with a class-dependent colour tint, so a CNN can learn them."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(n_classes), n)
        x = rng.integers(0, 120, size=(y.size, size, size, 3))
        x[np.arange(y.size), :, :, y % 3] += 100 + 30 * (y[:, None, None] // 3)
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    names = [f"class {i}" for i in range(n_classes)]
    return ImageDataset(x_train, y_train, x_test, y_test, names, meta={"generator": "random"})


@pytest.fixture
def small_dataset() -> ImageDataset:
    return random_dataset()


def blob_heatmaps(n: int, size: int = 16, seed: int = 0, patch: float = 0.0) -> np.ndarray:
    """Gaussian blobs plus noise; ``patch`` > 0 adds a 3x3 corner patch with that mass share."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    maps = []
    for _ in range(n):
        h = np.zeros((size, size))
        for _ in range(rng.integers(2, 4)):
            cy, cx = rng.uniform(2, size - 2, 2)
            h += rng.uniform(0.3, 1) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(2, 8)
            )
        h = h / h.sum() + 0.02 * rng.random((size, size)) / size**2
        h /= h.sum()
        if patch:
            h = (1 - patch) * h
            h[size - 4 : size - 1, size - 4 : size - 1] += patch / 9
        maps.append(h)
    return np.stack(maps)


def gw_matrix(heatmaps: np.ndarray, params: Any) -> np.ndarray:
    """The symmetric GW matrix of ``heatmaps`` (a ``GWParams``), every pair solved in process."""
    from poisonscan.distances import prepare_spaces, solve_pairs

    spaces = prepare_spaces(heatmaps, params)
    rows, cols = np.triu_indices(len(heatmaps), 1)
    d = np.zeros((len(heatmaps), len(heatmaps)))
    d[rows, cols] = solve_pairs(spaces, spaces, list(zip(rows, cols, strict=True)), params)
    return d + d.T


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny problems: a second thread only spins on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The tests of the tiny run: every test that takes the session fixtures ``finished_run`` or
# ``slurm`` lives in one of these files (checked at collection), and all of them run on one
# worker of ``make test``, first. The SLURM run, which mostly waits for its status checks,
# goes while the other worker is busiest. (Giving the fault injections a worker of their
# own, which then runs the tiny workflow once more, measured the same: 864 s against 870 s.)
RUN_FILES = ("tests/test_slurm.py", "tests/test_workflow.py", "tests/test_operations.py")
RUN_FIXTURES = {"finished_run", "slurm"}


def _test_file(nodeid: str) -> str:
    return nodeid.split("::")[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tiny run's files first: ``make test``'s workers start the longest chain at once."""
    run_tests = [i for i in items if RUN_FIXTURES & set(i.fixturenames)]
    stray = [i.nodeid for i in run_tests if _test_file(i.nodeid) not in RUN_FILES]
    if stray:
        raise pytest.UsageError(f"tests of the tiny run outside {RUN_FILES}: {stray}")
    order = {f: k for k, f in enumerate(RUN_FILES)}
    # stable: each file's own order is kept
    items.sort(key=lambda i: order.get(_test_file(i.nodeid), len(RUN_FILES)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``pytest -n 2 --dist loadscope`` (``make test``): the files of the tiny run on one
    worker, every other test on its own, to the next free worker.

    ``finished_run`` and ``slurm`` are session fixtures: on a second worker the tiny workflow
    would run again, and a second SLURM cannot have /etc/slurm. (The ``xdist_group`` marks of
    ``--dist loadgroup`` would do this, but pytest 9.2's node ids no longer take the group
    suffix that pytest-xdist 3.8 adds: pytest-xdist issue 1386.)
    """
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TinyRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "tiny run" if _test_file(nodeid) in RUN_FILES else nodeid

    return TinyRunScheduling(config, log)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny workflow (``test_workflow.TINY``) run locally to the end, once per session
    (on one worker of ``make test``: ``RUN_FILES``).

    Shared by tests/test_workflow.py, tests/test_operations.py and tests/test_slurm.py (the
    reference of the SLURM run); tests only read its ``results/`` (dry runs and reports
    write beside it).
    """
    from test_workflow import TINY, run_snakemake, write_config

    workdir = tmp_path_factory.mktemp("workflow")
    config = write_config(workdir, TINY)
    proc = run_snakemake(workdir, "--configfile", str(config))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (workdir / "stdout.txt").write_text(proc.stdout + proc.stderr)
    return workdir


def stored_arrays(results: Path) -> dict[str, np.ndarray]:
    """Every array stored under ``results``, by relative name: zarr arrays (at any depth),
    HDF5 datasets, npz members and safetensors tensors; ``logs/`` and ``benchmarks/`` are
    left out."""
    import h5py
    import zarr
    from safetensors.numpy import load_file

    def h5_datasets(f: h5py.File) -> list[tuple[str, np.ndarray]]:
        names: list[str] = []
        f.visititems(
            lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
        )
        return [(name, np.asarray(f[name][()])) for name in names]

    found: dict[str, np.ndarray] = {}

    def walk_zarr(group: Any, prefix: str) -> None:
        for name, arr in group.arrays():
            found[f"{prefix}/{name}"] = arr[...]
        for name, sub in group.groups():
            walk_zarr(sub, f"{prefix}/{name}")

    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results)
        if rel.parts[0] in ("logs", "benchmarks") or any(
            p.endswith(".zarr") for p in rel.parts[:-1]
        ):
            continue
        if path.suffix == ".zarr" and path.is_dir():
            with warnings.catch_warnings():  # Snakemake's .snakemake_timestamp in the store
                warnings.simplefilter("ignore")
                walk_zarr(zarr.open_group(str(path), mode="r"), str(rel))
        elif path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                found.update({f"{rel}/{name}": value for name, value in h5_datasets(f)})
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                found.update({f"{rel}/{name}": f[name] for name in f.files})
        elif path.suffix == ".safetensors":
            found.update({f"{rel}/{k}": v for k, v in load_file(path).items()})
    return found
