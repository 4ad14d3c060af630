"""The Snakemake workflow end to end on a tiny config, and its lint."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, gw_matrix

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]

TINY = {
    "dataset": {"name": "synthetic", "seed": 3, "n_train_per_class": 40, "n_test_per_class": 10},
    "scenarios": {
        "tiny": {"attack": "sticker", "source": 2, "target": 5, "poison_rate": 0.2, "seed": 1}
    },
    "training": {"epochs": 2, "batch_size": 64},
    "explain": {"batch_size": 16},
    "distances": {"gw": {"pool": 8, "tile": 16}},
    "clustering": {"spray": {"n_neighbors": 5}},
    "scan": {"gw": True},
}


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# finished_run (the tiny config run to the end, once per session) is in conftest.py.


@pytest.mark.slow
def test_workflow_writes_summary_with_every_method(finished_run: Path) -> None:
    with open(finished_run / "results" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["ac", "gw_kmeans", "hc_gw", "hc_l2", "raw", "ss"]
    for row in rows:
        assert row["dataset"] == "synthetic" and row["scenario"] == "tiny"
        assert row["attack"] == "sticker" and float(row["poison_rate"]) == 0.2
        assert row["model"] == "net" and row["sticker_size"] == "3"
        # 40 clean target images + round(0.2 * 40 / 0.8) = 10 poisoned
        assert int(row["n"]) == 50 and int(row["n_poison"]) == 10
        counts = [int(row[k]) for k in ("tn", "fp", "fn", "tp")]
        assert sum(counts) == 50 and int(row["tp"]) + int(row["fn"]) == 10
        assert 0.0 <= float(row["clean_acc"]) <= 1.0 and 0.0 <= float(row["asr"]) <= 1.0
    # the table is printed at the end of the run
    assert "Detection summary" in (finished_run / "stdout.txt").read_text()
    for rule in ("train", "explain", "distances_gw"):
        assert (finished_run / "results" / "logs" / rule).is_dir()
    assert (finished_run / "results/logs/distances_gw/synthetic/tiny.dask-report.html").is_file()
    figures = finished_run / "results/synthetic/tiny/figures"
    methods = ["ac", "gw_kmeans", "hc_gw", "hc_l2", "raw", "ss"]
    assert sorted(p.name for p in figures.glob("*.png")) == sorted(
        f"{m}_{fig}.png" for m in methods for fig in ("analysis", "clusters")
    )


@pytest.mark.slow
def test_report_embeds_every_figure_of_the_run(finished_run: Path) -> None:
    import json

    report = finished_run / "report.html"
    proc = run_snakemake(finished_run, "--configfile", str(finished_run / "config.yaml"),
                         "--report", str(report))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = report.read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\s*</script>", html, re.S)[1])
    embedded = {Path(f).name for f, r in results.items() if r["data_uri"].startswith("data:")}
    methods = ["ac", "gw_kmeans", "hc_gw", "hc_l2", "raw", "ss"]
    assert embedded >= {f"{m}_{fig}.png" for m in methods for fig in ("analysis", "clusters")}
    assert embedded >= {
        "attack_montage.png", "training_curve.png", "explain_montage.png", "scan.png",
        "dataset_montage.png", "tables.md", "summary.csv",
    }  # fmt: skip


@pytest.mark.slow
def test_batched_gw_agrees_with_pot_on_the_runs_lrp_heatmaps(finished_run: Path) -> None:
    """Real LRP heatmaps of the pipeline (empty cells, sharp peaks): POT's values, same labels."""
    import numpy as np
    import zarr

    from poisonscan.clustering import SpectralRelevanceAnalysis
    from poisonscan.distances import GWParams

    root = zarr.open_group(str(finished_run / "results/synthetic/tiny/explain.zarr"), mode="r")
    hm = root[str(root.attrs["target_class"])]["heatmaps"][...]  # (50, 32, 32)
    support = {"pool": 4, "mass": 0.99, "metric": "sqeuclidean", "epsilon": 0.05}
    mats = {s: gw_matrix(hm, GWParams(solver=s, **support)) for s in ("pot_entropic", "batched")}
    off = ~np.eye(len(hm), dtype=bool)
    assert np.isfinite(mats["pot_entropic"][off]).all()
    rel = np.abs(mats["batched"] - mats["pot_entropic"])[off] / mats["pot_entropic"][off]
    assert rel.max() <= 1e-3
    labels = [SpectralRelevanceAnalysis(n_neighbors=5).fit(d).labels_ for d in mats.values()]
    np.testing.assert_array_equal(*labels)


@pytest.mark.slow
def test_batched_cg_ranks_real_pipeline_heatmaps_like_pot_exact(finished_run: Path) -> None:
    """LRP heatmaps of the tiny workflow's trained model (its attacked class) in the
    default formulation (8x8 grid, 99 % of the mass): batched_cg against POT exact
    (measured: Spearman 0.979, median value / POT's 1.13, lowest 0.98)."""
    import numpy as np
    import zarr
    from scipy.stats import spearmanr

    from poisonscan.distances import GWParams, prepare_spaces, solve_pairs
    from poisonscan.explain.store import heatmap_group

    store = finished_run / "results" / "synthetic" / "tiny" / "explain.zarr"
    hm = zarr.open_group(heatmap_group(store), mode="r")["heatmaps"][:16]
    pairs = [(i, j) for i in range(len(hm)) for j in range(i + 1, len(hm))]
    formulation = {"pool": 4, "mass": 0.99, "metric": "euclidean"}
    exact_p = GWParams(solver="pot_exact", **formulation)
    exact = solve_pairs(*[prepare_spaces(hm, exact_p)] * 2, pairs, exact_p)
    cg_p = GWParams(solver="batched_cg", epsilon=0.003, **formulation)
    ours = solve_pairs(*[prepare_spaces(hm, cg_p)] * 2, pairs, cg_p)
    assert spearmanr(ours, exact)[0] >= 0.95
    ratio = ours / exact
    assert 1.0 <= np.median(ratio) <= 1.3 and ratio.min() >= 0.9


@pytest.mark.slow
def test_scan_ranks_every_class_by_euclidean_and_gw_distances(finished_run: Path) -> None:
    import zarr

    from poisonscan.distances import read_distance_store

    results = finished_run / "results/synthetic/tiny"
    with open(results / "scan.csv") as f:
        rows = list(csv.DictReader(f))
    classes = sorted(int(c) for c in zarr.open_group(str(results / "explain.zarr")).group_keys())
    for distance in ("l2", "gw"):
        mine = [r for r in rows if r["distance"] == distance]
        assert sorted(int(r["class"]) for r in mine) == classes, distance
    for c in classes:  # one kNN matrix per class, +inf for the pairs not solved
        d = read_distance_store(str(results / "distances/gw_classes.zarr" / str(c)))
        assert (
            d.shape[0]
            == zarr.open_group(str(results / "explain.zarr" / str(c)))["heatmaps"].shape[0]
        )


@pytest.mark.slow
def test_second_run_does_nothing(finished_run: Path) -> None:
    proc = run_snakemake(finished_run, "--configfile", str(finished_run / "config.yaml"), "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def planned_rules(workdir: Path, config: dict) -> set[str]:
    """Rules a dry run of ``config`` would execute in ``workdir``."""
    sub = workdir / f"plan-{abs(hash(yaml.safe_dump(config)))}"
    sub.mkdir(exist_ok=True)
    proc = run_snakemake(workdir, "--configfile", str(write_config(sub, config)), "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(re.findall(r"^rule (\w+):", proc.stdout + proc.stderr, flags=re.MULTILINE))


@pytest.mark.slow
def test_config_changes_rerun_exactly_the_affected_rules(finished_run: Path) -> None:
    clustering = {**TINY, "clustering": {"spray": {"n_neighbors": 6}}}
    # the scan runs SpRAy too; the retraining without hc_l2's flags follows its clusters;
    # the figures of the SpRAy methods redraw, the t-SNE map stays; the verdicts stay
    assert planned_rules(finished_run, clustering) == {
        "detect", "scan", "retrain_filtered", "removal", "evaluate", "figures", "summary",
        "aggregate", "overview", "all",
    }  # fmt: skip
    explain = {**TINY, "explain": {"batch_size": 16, "composite": "epsilon"}}
    assert planned_rules(finished_run, explain) == {
        "explain", "distances_l2", "distances_gw", "distances_gw_classes", "detect", "scan",
        "retrain_filtered",
        "removal", "evaluate", "embed", "figures", "verdicts", "verdict_baselines",
        "evaluate_verdicts", "clean_list", "summary", "aggregate", "verdict_summary",
        "overview", "all",
    }  # fmt: skip


def test_bad_config_is_reported_with_the_key(tmp_path: Path) -> None:
    bad = {**TINY, "scenarios": {"x": {**TINY["scenarios"]["tiny"], "poison_rate": 1.5}}}
    proc = run_snakemake(tmp_path, "--configfile", str(write_config(tmp_path, bad)), "-n")
    assert proc.returncode != 0
    assert "scenarios.x.poison_rate': 1.5" in proc.stdout + proc.stderr


def test_lint_is_clean() -> None:
    proc = subprocess.run(
        [*SNAKEMAKE, "--lint", "--directory", str(REPO)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_slurm_profile_requests_gpus_for_training_and_heatmaps(tmp_path: Path) -> None:
    config = write_config(tmp_path, TINY)
    proc = run_snakemake(
        tmp_path, "--configfile", str(config), "-n",
        "--workflow-profile", str(REPO / "profiles" / "slurm"),
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    blocks = dict(re.findall(r"^rule (\w+):\n((?:    .*\n)+)", out, flags=re.MULTILINE))
    for rule in ("train", "explain"):
        assert "gpu=1" in blocks[rule] and "cpus_per_gpu=8" in blocks[rule], blocks[rule]
    assert "gpu=" not in blocks["distances_gw"]
    assert "mem_mb=32000" in blocks["distances_gw"]


def dry_run_jobs(
    workdir: Path, config: Path, key: str = "scenario", *args: str, env: dict | None = None
) -> set[tuple[str, str]]:
    """(rule, value of wildcard ``key``) of every job a dry run of ``config`` would execute."""
    proc = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", "--configfile", str(config),
         "-n", *args], capture_output=True, text=True, timeout=900,
        env=env or {**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = set()
    for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n)+)", out, flags=re.MULTILINE):
        value = re.search(rf"{key}=([\w-]+)", body)
        jobs.add((rule, value.group(1) if value else ""))
    return jobs


def planned_jobs(workdir: Path, config: dict) -> set[tuple[str, str]]:
    """(rule, scenario) of every job a dry run of ``config`` would execute."""
    sub = workdir / f"jobs-{abs(hash(yaml.safe_dump(config)))}"
    sub.mkdir(exist_ok=True)
    return dry_run_jobs(workdir, write_config(sub, config))


PER_SCENARIO = {"poison", "train", "explain", "distances_l2", "distances_gw",
                "distances_gw_classes", "detect", "scan",
                "retrain_filtered", "removal", "evaluate", "embed", "figures", "verdicts",
                "verdict_baselines", "evaluate_verdicts", "clean_list"}  # fmt: skip
# the tables over every scenario and the report's first page
AGGREGATE = {"summary", "aggregate", "verdict_summary", "overview", "all"}


@pytest.mark.slow
def test_attack_change_reruns_only_that_scenario(finished_run: Path) -> None:
    changed = {**TINY, "scenarios": {"tiny": {**TINY["scenarios"]["tiny"], "poison_rate": 0.25}}}
    jobs = planned_jobs(finished_run, changed)
    assert {rule for rule, _ in jobs} == PER_SCENARIO | AGGREGATE
    assert {sc for rule, sc in jobs if rule in PER_SCENARIO} == {"tiny"}


@pytest.mark.slow
def test_added_scenario_runs_only_the_new_one(finished_run: Path) -> None:
    extra = {**TINY["scenarios"]["tiny"], "sticker_size": 2}
    added = {**TINY, "scenarios": {**TINY["scenarios"], "tiny_s2": extra}}
    jobs = planned_jobs(finished_run, added)
    assert {sc for rule, sc in jobs if rule in PER_SCENARIO} == {"tiny_s2"}
    assert {rule for rule, _ in jobs} == PER_SCENARIO | AGGREGATE


@pytest.mark.slow
def test_a_code_edit_reruns_exactly_the_rules_that_import_it(
    finished_run: Path, tmp_path: Path
) -> None:
    """Code hashes follow the imports: editing baselines (Activation Clustering, Spectral
    Signatures, raw pixels) in a scratch copy of the repository reruns those three detectors
    and what reads their results, nothing upstream and no other detector."""
    import shutil

    scratch = tmp_path / "repo"
    scratch.mkdir()
    for name in ("Snakefile", "rules", "workflow", "config", "profiles", "src"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, scratch / name)
    config = write_config(tmp_path, TINY)
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(scratch / "src")}

    def plan() -> set[tuple[str, str]]:
        snakefile = ("--snakefile", str(scratch / "Snakefile"))
        return dry_run_jobs(finished_run, config, "method", *snakefile, env=env)

    assert plan() == set()  # the unchanged copy: nothing to do
    module = scratch / "src" / "poisonscan" / "baselines" / "_activation_clustering.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    assert plan() == {
        ("detect", "ac"), ("detect", "ss"), ("detect", "raw"),
        ("figures", "ac"), ("figures", "ss"), ("figures", "raw"),
        ("evaluate", ""), ("summary", ""), ("aggregate", ""), ("all", ""),
        # the verdict rules share one step module, which runs the baselines too
        ("verdicts", ""), ("verdict_baselines", ""), ("evaluate_verdicts", ""),
        ("clean_list", ""), ("verdict_summary", ""), ("overview", ""),
    }  # fmt: skip


@pytest.mark.slow
def test_performance_knobs_rerun_nothing(finished_run: Path) -> None:
    """Batch sizes, tiles and the Dask cluster change speed, never a stored value: they reach
    the rules as resources (or the script reads them), so changing them plans no job."""
    knobs = {
        **TINY,
        "explain": {"batch_size": 7},
        "distances": {"gw": {"pool": 8, "tile": 5, "batch_mb": 1.5, "knn": {"pairs_per_task": 9}}},
        "dask": {"cluster": "local", "jobqueue": {"cores": 3}},
    }
    assert planned_rules(finished_run, knobs) == set()
