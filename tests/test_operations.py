"""Fault injection on the whole workflow: kill it inside each long rule, resume, compare;
damage its stores, follow the advice, compare; config errors before any work.

A run that is SIGKILLed inside a rule (the worst interruption: no handler runs)
must leave nothing that a later run takes as complete, and the resumed run must
end with results bit-identical to an uninterrupted run with the same seeds. A
damaged store (bit flips, swapped or lost chunks, truncated or swapped files) must
be refused by its reader, naming it, and the same command run again must end with
results identical to the undamaged run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
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
    finished_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The reference is the session's uninterrupted run of the same config (conftest)."""
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
    assert_same_results(finished_run, work)
    plan = planned_rules(work, config)
    assert "Nothing to be done" in plan, plan[-3000:]


# ---------------------------------------------------------------------------------------------
# Damage: bit flips, chunk swaps, lost chunks, truncated and swapped files in the tiny run's
# stores. Every injection must be detected by the store's reader; following the printed advice
# must end in results identical to the undamaged run.

N_INJECTIONS = 20  # per store and kind of damage
SEED = 20


def _flip(path: Path, offset: int, bit: int) -> bytes:
    """Flip one bit of ``path``; return the original bytes."""
    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[offset] ^= 1 << bit
    path.write_bytes(bytes(damaged))
    return data


def _zarr_chunks(store: Path) -> dict[Path, list[Path]]:
    """Chunk files of every array of a zarr store, by array directory."""
    return {
        meta.parent: sorted(p for p in (meta.parent / "c").rglob("*") if p.is_file())
        for meta in store.rglob("zarr.json")
        if (meta.parent / "c").is_dir()
    }


def _h5_chunks(path: Path) -> list[tuple[str, int, int, int]]:
    """(dataset, chunk index, byte offset, size) of every stored chunk of an HDF5 file."""
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        for name in f:
            d = f[name]
            if d.chunks:
                for i in range(d.id.get_num_chunks()):
                    info = d.id.get_chunk_info(i)
                    out.append((name, i, info.byte_offset, info.size))
    return out


def _npz_members(path: Path) -> list[tuple[str, int, int]]:
    """(member, offset of its data, size) of every member of an uncompressed .npz file."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        out = []
        for info in z.infolist():
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            out.append((info.filename, info.header_offset + 30 + name_len + extra_len,
                        info.compress_size))  # fmt: skip
    return out


def _detected(read: Any) -> bool:
    from poisonscan.storage import StoreError

    try:
        read()
    except StoreError:
        return True
    return False


def inject_into_zarr(store: Path, rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    """N bit flips and N chunk swaps, each undone after its read; (injected, detected)."""
    from poisonscan.storage import read_array

    chunks = _zarr_chunks(store)
    arrays = sorted(chunks)
    flips = swaps = 0
    for _ in range(N_INJECTIONS):
        array = arrays[rng.integers(len(arrays))]
        chunk = chunks[array][rng.integers(len(chunks[array]))]
        original = _flip(chunk, int(rng.integers(chunk.stat().st_size)), int(rng.integers(8)))
        flips += _detected(lambda a=array: read_array(a.parent, a.name))
        chunk.write_bytes(original)
    swappable = [a for a in arrays if len({c.read_bytes() for c in chunks[a]}) > 1]
    if not swappable:  # one chunk per array (a small matrix in one tile): nothing to swap
        return {"bit flips": (N_INJECTIONS, flips)}
    for _ in range(N_INJECTIONS):
        array = swappable[rng.integers(len(swappable))]
        while True:  # two chunks that differ (a swap of equal chunks changes nothing)
            a, b = (chunks[array][i] for i in rng.choice(len(chunks[array]), 2, replace=False))
            first, second = a.read_bytes(), b.read_bytes()
            if first != second:
                break
        a.write_bytes(second)
        b.write_bytes(first)
        swaps += _detected(lambda arr=array: read_array(arr.parent, arr.name))
        a.write_bytes(first)
        b.write_bytes(second)
    return {"bit flips": (N_INJECTIONS, flips), "chunk swaps": (N_INJECTIONS, swaps)}


def inject_into_h5(path: Path, rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    """N bit flips inside stored chunks and N chunk swaps (raw chunk bytes moved, each with a
    valid Fletcher32) of an HDF5 dataset file; (injected, detected)."""
    import h5py

    from poisonscan.storage import read_dataset

    chunks = _h5_chunks(path)
    original = path.read_bytes()
    flips = swaps = 0
    for _ in range(N_INJECTIONS):
        _, _, offset, size = chunks[rng.integers(len(chunks))]
        _flip(path, offset + int(rng.integers(size)), int(rng.integers(8)))
        flips += _detected(lambda: read_dataset(path))
        path.write_bytes(original)
    multi = sorted({name for name, i, _, _ in chunks if i > 0})
    for _ in range(N_INJECTIONS):
        name = multi[rng.integers(len(multi))]
        with h5py.File(path, "r+") as f:
            d = f[name]
            i, j = rng.choice(d.id.get_num_chunks(), 2, replace=False)
            oi, oj = d.id.get_chunk_info(i).chunk_offset, d.id.get_chunk_info(j).chunk_offset
            (mi, ci), (mj, cj) = d.id.read_direct_chunk(oi), d.id.read_direct_chunk(oj)
            d.id.write_direct_chunk(oi, cj, mj)
            d.id.write_direct_chunk(oj, ci, mi)
        swaps += _detected(lambda: read_dataset(path))
        path.write_bytes(original)
    return {"bit flips": (N_INJECTIONS, flips), "chunk swaps": (N_INJECTIONS, swaps)}


def inject_into_npz(path: Path, rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    """N bit flips inside the members' data (their zip CRC-32 covers it); (injected, detected)."""
    from poisonscan.storage import read_npz

    members = _npz_members(path)
    flips = 0
    for _ in range(N_INJECTIONS):
        _, offset, size = members[rng.integers(len(members))]
        original = _flip(path, offset + int(rng.integers(size)), int(rng.integers(8)))
        flips += _detected(lambda: read_npz(path))
        path.write_bytes(original)
    return {"bit flips": (N_INJECTIONS, flips)}


def inject_into_checkpoint(path: Path, rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    """N bit flips anywhere in the weights file (its sha256 is in the sidecar)."""
    import torch

    from poisonscan.checkpoints import load_checkpoint

    flips = 0
    for _ in range(N_INJECTIONS):
        original = _flip(path, int(rng.integers(path.stat().st_size)), int(rng.integers(8)))
        flips += _detected(lambda: load_checkpoint(path, torch.device("cpu")))
        path.write_bytes(original)
    return {"bit flips": (N_INJECTIONS, flips)}


def test_every_injected_bit_flip_and_chunk_swap_is_detected(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seeded: N bit flips (and N chunk swaps where a store has chunks) per store of the tiny
    run, on a copy; each is read back by the store's own reader. Prints the figures."""
    import shutil

    rng = np.random.default_rng(SEED)
    results = tmp_path / "results"
    shutil.copytree(finished_run / "results" / "synthetic", results)
    sc = results / "tiny"
    stores = {
        "zarr: explanation store": (inject_into_zarr, sc / "explain.zarr"),
        "zarr: distance store (l2)": (inject_into_zarr, sc / "distances" / "l2.zarr"),
        "zarr: distance store (gw)": (inject_into_zarr, sc / "distances" / "gw.zarr"),
        "HDF5: clean dataset": (inject_into_h5, results / "dataset.h5"),
        "HDF5: poisoned dataset": (inject_into_h5, sc / "poisoned.h5"),
        "npz: detection (hc_l2)": (inject_into_npz, sc / "clusters" / "hc_l2.npz"),
        "npz: t-SNE map": (inject_into_npz, sc / "figures" / "tsne.npz"),
        "safetensors: checkpoint": (inject_into_checkpoint, sc / "model.safetensors"),
    }
    rows = [(store, kind, *counts) for store, (inject, path) in stores.items()
            for kind, counts in inject(path, rng).items()]  # fmt: skip
    with capsys.disabled():
        print(f"\nfault injection (seed {SEED}): store, damage, injected, detected")
        for row in rows:
            print("  {:28s} {:12s} {:3d} {:3d}".format(*row))
    assert all(injected == detected for _, _, injected, detected in rows), rows


def test_swapped_dataset_checkpoint_and_heatmaps_are_refused_naming_the_file(
    finished_run: Path, tmp_path: Path
) -> None:
    """Valid files in the place of others: the recorded sha256 refuses them."""
    import shutil

    import torch

    from poisonscan import checkpoints, inference
    from poisonscan.models import build_model
    from poisonscan.steps.data import poison_dataset
    from poisonscan.steps.detect import detect
    from poisonscan.steps.explain import explain_target
    from poisonscan.storage import ProvenanceError, StoreError, read_dataset

    shutil.copytree(finished_run / "results" / "synthetic", tmp_path / "r")
    sc = tmp_path / "r" / "tiny"
    scenario = TINY["scenarios"]["tiny"]
    params = {"classes": "target", "batch_size": 16}
    # another valid poisoned dataset (other seed) in the place of poisoned.h5
    foreign = tmp_path / "foreign.h5"
    poison_dataset(tmp_path / "r" / "dataset.h5", foreign, {**scenario, "seed": 2})
    shutil.copy(foreign, sc / "poisoned.h5")
    with pytest.raises(ProvenanceError, match=r"poisoned.h5 is not the dataset the checkpoint "
                       r".*model.safetensors was trained on") as err:  # fmt: skip
        explain_target(sc / "poisoned.h5", sc / "model.safetensors", tmp_path / "e.zarr",
                       scenario, params)  # fmt: skip
    assert err.value.path == str(sc / "poisoned.h5")
    shutil.copy(finished_run / "results/synthetic/tiny/poisoned.h5", sc / "poisoned.h5")
    # other weights (a valid safetensors file) in the place of model.safetensors
    ds = read_dataset(sc / "poisoned.h5")
    other = tmp_path / "other.safetensors"
    checkpoints.save_checkpoint(other, build_model("net", 12), "net", ds,
                             inference.Normalization.fit(ds.x_train))  # fmt: skip
    shutil.copy(other, sc / "model.safetensors")
    with pytest.raises(StoreError, match=r"checkpoint .*tiny/model.safetensors does not match "
                       r"the weights_sha256"):  # fmt: skip
        explain_target(sc / "poisoned.h5", sc / "model.safetensors", tmp_path / "e.zarr",
                       scenario, params)  # fmt: skip
    shutil.copy(finished_run / "results/synthetic/tiny/model.safetensors", sc / "model.safetensors")
    # heatmaps of another explanation (same model, composite epsilon) in place of explain.zarr
    swapped = tmp_path / "swapped.zarr"
    torch.manual_seed(0)
    explain_target(sc / "poisoned.h5", sc / "model.safetensors", swapped, scenario,
                   {**params, "composite": "epsilon"})  # fmt: skip
    shutil.rmtree(sc / "explain.zarr")
    shutil.copytree(swapped, sc / "explain.zarr")
    with pytest.raises(ProvenanceError, match=r"l2.zarr was computed from other heatmaps than "
                       r"those of .*tiny/explain.zarr/5") as err:  # fmt: skip
        detect("hc_l2", sc / "explain.zarr" / "5", tmp_path / "hc_l2.npz",
               {"params": {"n_neighbors": 5}, "decision": {"rule": "size-gap"}},
               distance_store=sc / "distances" / "l2.zarr",
               sidecar=sc / "model.safetensors.json")  # fmt: skip
    assert err.value.path == str(sc / "explain.zarr")


def _damage_run(work: Path, config: Path, label: str) -> str:
    """Run the same command a user runs (with --keep-going); it must fail saying to rerun."""
    from poisonscan.rulelog import RERUN

    proc = run_snakemake(work, "--configfile", str(config), "--keep-going")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{label}: the damage went unnoticed\n{out[-3000:]}"
    assert RERUN in out, f"{label}: no advice\n{out[-5000:]}"
    return out


def test_damaged_outputs_are_detected_and_a_rerun_of_the_same_command_recovers(
    finished_run: Path, tmp_path: Path
) -> None:
    """The advice verbatim: each damaged store is moved aside, the same snakemake command run
    again recomputes it and what was computed from it, and every stored array equals the
    undamaged run's. A reader runs when its output is missing (deleted here)."""
    import shutil

    work = tmp_path / "run"
    shutil.copytree(finished_run, work, symlinks=True)  # results, .snakemake metadata, mtimes
    config = work / "config.yaml"
    sc = work / "results" / "synthetic" / "tiny"

    # 1. downstream stores: a chunk swap (gw.zarr), a bit flip (l2.zarr), a bit flip (an npz)
    gw = _zarr_chunks(sc / "distances" / "gw.zarr")[sc / "distances" / "gw.zarr" / "distances"]
    first, second = gw[0].read_bytes(), gw[1].read_bytes()
    gw[0].write_bytes(second)
    gw[1].write_bytes(first)
    l2 = _zarr_chunks(sc / "distances" / "l2.zarr")[sc / "distances" / "l2.zarr" / "distances"]
    _flip(l2[0], l2[0].stat().st_size // 2, 3)
    _, offset, size = _npz_members(sc / "clusters" / "ss.npz")[0]
    _flip(sc / "clusters" / "ss.npz", offset + size // 2, 5)
    for reader_output in ("clusters/hc_gw.npz", "clusters/hc_l2.npz", "figures/ss_analysis.png"):
        (sc / reader_output).unlink()
    out = _damage_run(work, config, "downstream")
    damaged = ("distances/gw.zarr", "distances/l2.zarr", "clusters/ss.npz")
    for name in damaged:
        assert (sc / f"{name}.damaged").exists(), f"{name} not moved aside\n{out[-5000:]}"
    log = (work / "results/logs/detect/synthetic/tiny/hc_gw.log").read_text()
    assert "Traceback" in log and "gw.zarr: array distances, chunk (0, 0): not the chunk" in log
    # the advice, before the next damage: that run then plans only the two readers below, one
    # per damaged store. With the jobs above still pending, a job whose input a reader had just
    # moved aside ended the run before the other reader started (seen once in `.ci/run`).
    proc = run_snakemake(work, "--configfile", str(config), "--keep-going")
    assert proc.returncode == 0, proc.stderr[-5000:]

    # 2. upstream: a lost chunk of explain.zarr, a truncated poisoned.h5 with its old mtime
    chunk = _zarr_chunks(sc / "explain.zarr")[sc / "explain.zarr" / "5" / "heatmaps"][0]
    chunk.unlink()
    h5 = sc / "poisoned.h5"
    stat = h5.stat()
    h5.write_bytes(h5.read_bytes()[: stat.st_size // 2])
    os.utime(h5, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    for reader_output in ("scan.csv", "verdicts/clean_list.txt"):
        (sc / reader_output).unlink()
    out = _damage_run(work, config, "upstream")
    for name in ("explain.zarr", "poisoned.h5"):
        assert (sc / f"{name}.damaged").exists(), f"{name} not moved aside\n{out[-5000:]}"

    # the advice: the same command again
    proc = run_snakemake(work, "--configfile", str(config), "--keep-going")
    assert proc.returncode == 0, proc.stderr[-5000:]
    for aside in sorted((work / "results").rglob("*.damaged")):  # kept to inspect; then deleted
        shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
    assert_same_results(finished_run, work)
    assert "Nothing to be done" in planned_rules(work, config)


LATE_CONFIG_ERRORS = [
    ({"distances": {"gw": {"pool": 8, "solver": "pot_exact", "epsilon": 0.1}}},
     r"distances.gw': epsilon=0.1 is not used by solver 'pot_exact'"),
    ({"distances": {"gw": {"pool": 8, "solver": "batched", "epsilon": 0}}},
     r"distances.gw': solver 'batched' needs epsilon > 0"),
    ({"explain": {"classes": [5, 12]}}, r"explain.classes': classes \[12\] do not exist"),
    ({"clustering": {"spray": {"n_neighbors": 50}}},
     r"clustering.spray.n_neighbors': 50 is not smaller than the 50 training images of class 5"),
    ({"clustering": {"gw_kmeans": {"n_clusters": 51}}},
     r"clustering.gw_kmeans.n_clusters': 51 is more than the 50 training images"),
    ({"distances": {"gw": {"pool": 8, "solver": "batched", "epsilon": 0.01, "device": "cuda:7"}}},
     r"distances.gw.device': 'cuda:7', but this machine has"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), LATE_CONFIG_ERRORS)
def test_late_config_errors_stop_a_dry_run(tmp_path: Path, change: dict, message: str) -> None:
    """Errors that used to surface inside their step, after training: `snakemake -n` names the
    key (class 5 of the tiny run: 40 clean + 10 relabelled images)."""
    import re

    proc = run_snakemake(tmp_path, "--configfile", str(write_config(tmp_path, {**TINY, **change})),
                         "-n")  # fmt: skip
    assert proc.returncode != 0
    assert re.search(message, proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]


def test_a_yaml_error_in_the_default_config_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("dataset:\n  name: [synthetic\nx: 1\n")
    proc = run_snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    assert "config/config.yaml, line 3, column 2" in proc.stdout + proc.stderr
