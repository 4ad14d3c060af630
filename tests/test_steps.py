"""Step functions of the analysis rules: poisonscan.steps.detect, .evaluate, .scan, .removal.

A tiny constructed scenario: an explanation store with three classes, class 5
holding 30 clean and 8 "poisoned" samples (a bright corner patch in the
heatmap, shifted activations), distance stores and a training set.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import gw_matrix

from poisonscan import distances
from poisonscan.detectors import read_detection
from poisonscan.explain.store import array_sha256
from poisonscan.removal import REMOVAL_COLUMNS
from poisonscan.steps.detect import detect
from poisonscan.steps.distances import distances_gw_classes
from poisonscan.steps.evaluate import evaluate_scenario, summarize
from poisonscan.steps.removal import removal_table, retrain_filtered
from poisonscan.steps.scan import scan_classes
from poisonscan.storage import (
    ImageDataset,
    ProvenanceError,
    create_array,
    seal_store,
    write_dataset,
)

TARGET = 5
SPRAY = {"affinity": "knn", "n_neighbors": 5, "bandwidth": "median", "n_clusters": None,
         "k_max": 5, "n_eigenvalues": 12, "dense_max": 2000, "n_init": 5,
         "single_group_no_flag": True, "seed": 0}  # fmt: skip
DECISION = {"rule": "size-gap", "size_threshold": 0.35, "silhouette_threshold": 0.1}
GW = {"pool": 2, "mass": 0.99, "metric": "euclidean", "epsilon": 0.0}


def heatmaps(n_clean: int, n_poison: int, rng: np.random.Generator) -> np.ndarray:
    h = rng.uniform(0, 0.2, size=(n_clean + n_poison, 8, 8))
    h[:, 2:6, 2:6] += rng.uniform(0.5, 1.0, size=(n_clean + n_poison, 1, 1))  # the sign
    h[n_clean:, 6:8, 6:8] += 3.0  # the sticker takes most of the relevance
    return (h / h.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("scenario")
    rng = np.random.default_rng(0)
    sizes = {0: (30, 0), TARGET: (30, 8), 7: (34, 0)}
    n_train = sum(a + b for a, b in sizes.values())
    y = np.concatenate([np.full(a + b, c) for c, (a, b) in sizes.items()])
    order = rng.permutation(n_train)  # classes interleaved in the training set
    y_train = y[order]
    poison_mask = np.zeros(n_train, bool)
    x_train = rng.integers(90, 110, size=(n_train, 8, 8, 3)).astype(np.uint8)
    root = zarr.open_group(str(tmp / "explain.zarr"), mode="w")
    for c, (n_clean, n_poison) in sizes.items():
        index = np.flatnonzero(y_train == c)
        poison = np.arange(len(index)) >= n_clean
        poison_mask[index[poison]] = True
        x_train[index[poison], 6:8, 6:8] = [245, 255, 0]
        act = rng.normal(c, 1.0, size=(len(index), 20))
        act[poison, :5] += 8.0
        g = root.create_group(str(c))
        for name, arr in (("heatmaps", heatmaps(n_clean, n_poison, rng)),
                          ("activations", act.astype(np.float32)), ("index", index),
                          ("label", np.full(len(index), c)), ("prediction", np.full(len(index), c)),
                          ("poison", poison)):  # fmt: skip
            create_array(g, name, data=arr)
    root.attrs.update({"classes": sorted(sizes), "target_class": TARGET})
    seal_store(root)  # as the explain step does: chunk checksums recorded
    ds = ImageDataset(
        x_train, y_train.astype(np.int64), x_train[:10], y_train[:10].astype(np.int64),
        [f"c{i}" for i in range(8)], meta={"attack": {"target": TARGET}},
        extra={"poison_mask": poison_mask, "y_train_original": y_train.astype(np.int64),
               "x_test_triggered": x_train[:4]},
    )  # fmt: skip
    write_dataset(tmp / "poisoned.h5", ds)
    group = tmp / "explain.zarr" / str(TARGET)
    hm = zarr.open_group(str(group), mode="r")["heatmaps"][...]
    # the distance stores record the heatmaps they were computed from (the detectors check)
    provenance = {"heatmaps_sha256": array_sha256(hm)}
    distances.write_distance_store(
        str(tmp / "distances" / "l2.zarr"),
        distances.euclidean_distances(hm),
        {"method": "euclidean", **provenance},
    )
    d = gw_matrix(hm, distances.GWParams(**GW))
    distances.write_distance_store(str(tmp / "distances" / "gw.zarr"), d,
                                   {"method": "gw", **provenance})  # fmt: skip
    clean_hm = zarr.open_group(str(tmp / "explain.zarr" / "0"), mode="r")["heatmaps"][...]
    distances.write_distance_store(
        str(tmp / "clean_l2.zarr"), distances.euclidean_distances(clean_hm),
        {"method": "euclidean", "heatmaps_sha256": array_sha256(clean_hm)},
    )  # fmt: skip
    (tmp / "metrics.json").write_text(json.dumps({"clean_acc": 0.9, "asr": 0.8}))
    return {"dir": tmp, "group": group, "store": tmp / "explain.zarr"}


def truth(scenario: dict[str, Path]) -> np.ndarray:
    return zarr.open_group(str(scenario["group"]), mode="r")["poison"][...]


def run(
    scenario: dict[str, Path],
    method: str,
    sections: dict,
    name: str | None = None,
    group: Path | None = None,
    distance: str | None = "l2",
) -> dict:
    out = scenario["dir"] / f"{name or method}.npz"
    store = scenario["dir"] / "distances" / f"{distance}.zarr" if distance else None
    detect(method, group or scenario["group"], out, sections, distance_store=store,
           dataset=scenario["dir"] / "poisoned.h5")  # fmt: skip
    return read_detection(out)


@pytest.mark.parametrize(
    ("method", "params"),
    [("hc_l2", SPRAY), ("agglo_l2", {"n_clusters": 2, "linkage": "average"}),
     ("hdbscan_l2", {"min_cluster_size": 5, "min_samples": None})],
)  # fmt: skip
def test_distance_clustering_flags_the_poison(
    scenario: dict[str, Path], method: str, params: dict
) -> None:
    res = run(scenario, method, {"params": params, "decision": DECISION})
    poison = truth(scenario)
    assert np.array_equal(res["flagged"], poison)
    assert res["decision_rule"] == "size-gap" and res["method"] == method
    assert res["score"][poison].min() > res["score"][~poison].max()
    if method == "hc_l2":
        assert res["k"] == 2 and int(res["n_groups"]) == 2
        assert res["eigenvalues"].shape == (12,) and res["embedding"].shape == (38, 2)


def test_spray_flags_nothing_in_one_group(scenario: dict[str, Path]) -> None:
    clean = scenario["store"] / "0"
    store = scenario["dir"] / "clean_l2.zarr"
    out = scenario["dir"] / "clean.npz"
    detect("hc_l2", clean, out, {"params": SPRAY, "decision": DECISION}, distance_store=store)
    res = read_detection(out)
    assert int(res["n_groups"]) == 1 and not res["flagged"].any()
    assert res["decision_rule"] == "size-gap (one group: none)"
    fixed = scenario["dir"] / "clean_k2.npz"
    detect("hc_l2", clean, fixed, {"params": {**SPRAY, "n_clusters": 2}, "decision": DECISION},
           distance_store=store)  # fmt: skip
    assert read_detection(fixed)["flagged"].any()  # a fixed k always flags


def test_gw_kmeans_detector(scenario: dict[str, Path]) -> None:
    params = {"n_clusters": 2, "support_size": 6, "barycenter_epsilon": 0.0, "max_iter": 5,
              "barycenter_max_iter": 50, "barycenter_tol": 1e-5, "seed": 0}  # fmt: skip
    gw = {**GW, "tile": 16, "mode": "full", "knn": {}}  # the whole distances.gw section
    res = run(scenario, "gw_kmeans", {"params": params, "gw": gw, "decision": DECISION},
              distance="gw")  # fmt: skip
    assert np.array_equal(res["flagged"], truth(scenario))
    assert res["k"] == 2 and res["center_distances"].shape == (38, 2)
    assert 1 <= int(res["n_iter"]) <= 5


@pytest.mark.parametrize("analysis", ["smaller", "distance", "silhouette-scores"])
def test_activation_clustering_detector(scenario: dict[str, Path], analysis: str) -> None:
    params = {"nb_dims": 10, "reduce": "PCA", "nb_clusters": 2, "cluster_analysis": analysis,
              "size_threshold": 0.35, "silhouette_threshold": 0.1, "n_init": 5,
              "seed": 0}  # fmt: skip
    res = run(scenario, "ac", {"params": params}, name=f"ac_{analysis}", distance=None)
    assert res["decision_rule"] == analysis and res["k"] == 2
    if analysis != "distance":  # ART's distance analysis decides on other grounds
        assert np.array_equal(res["flagged"], truth(scenario))


def test_spectral_signatures_and_raw_detectors(scenario: dict[str, Path]) -> None:
    poison = truth(scenario)
    ss = {"params": {"expected_poison_rate": 0.2, "eps_multiplier": 1.5}}
    res = run(scenario, "ss", ss, distance=None)
    assert res["k"] is None and res["flagged"][poison].all()
    assert res["flagged"].sum() in (11, 12)  # top 30 % of 38
    params = {"nb_dims": 5, "reduce": "PCA", "nb_clusters": 2, "n_init": 5, "seed": 0}
    raw = run(scenario, "raw", {"params": params, "decision": DECISION}, distance=None)
    assert np.array_equal(raw["flagged"], poison)


def test_detect_names_an_unknown_method(scenario: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="unknown detection method 'nope'; available: .*hc_l2"):
        detect("nope", scenario["group"], scenario["dir"] / "x.npz", {})


def test_evaluate_and_summarize(scenario: dict[str, Path]) -> None:
    d = scenario["dir"]
    run(scenario, "hc_l2", {"params": SPRAY, "decision": DECISION})
    run(scenario, "ss", {"params": {"expected_poison_rate": 0.33, "eps_multiplier": 1.5}},
        name="ss_eval", distance=None)  # fmt: skip
    ctx = {"dataset": "synthetic", "scenario": "s", "attack": "sticker", "poison_rate": 0.2,
           "sticker_size": 3, "model": "net"}  # fmt: skip
    evaluate_scenario(scenario["group"], d / "metrics.json",
                      {"hc_l2": d / "hc_l2.npz", "ss": d / "ss_eval.npz"},
                      d / "evaluation.json", ctx, art_out=d / "art.json")  # fmt: skip
    rows = json.loads((d / "evaluation.json").read_text())
    hc = next(r for r in rows if r["method"] == "hc_l2")
    assert (hc["tp"], hc["fp"], hc["fn"], hc["tn"]) == (8, 0, 0, 30)
    assert hc["auroc"] == 1.0 and hc["k_chosen"] == 2 and hc["decision_rule"] == "size-gap"
    ss = next(r for r in rows if r["method"] == "ss")
    assert ss["k_chosen"] is None and ss["fpr"] > 0
    art = json.loads((d / "art.json").read_text())
    assert art["hc_l2"][f"class_{TARGET}"]["TruePositive"] == {
        "rate": 100.0, "numerator": 8, "denominator": 8}  # fmt: skip
    table = summarize([d / "evaluation.json"], d / "summary.csv")
    with open(d / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [r["method"] for r in summary] == ["hc_l2", "ss"]
    assert {"fpr", "precision", "auroc", "k_chosen", "decision_rule"} <= set(summary[0])
    assert "auroc" in table.splitlines()[0]


def test_evaluate_clean_control_has_nan_auroc(scenario: dict[str, Path]) -> None:
    d = scenario["dir"]
    detect("hc_l2", scenario["store"] / "0", d / "c.npz", {"params": SPRAY, "decision": DECISION},
           distance_store=d / "clean_l2.zarr")  # fmt: skip
    run(scenario, "hc_l2", {"params": SPRAY, "decision": DECISION})
    evaluate_scenario(scenario["store"] / "0", d / "metrics.json", {"hc_l2": d / "c.npz"},
                      d / "clean_eval.json", {"scenario": "clean"})  # fmt: skip
    (row,) = json.loads((d / "clean_eval.json").read_text())
    assert row["n_poison"] == 0 and math.isnan(row["auroc"]) and math.isnan(row["tpr"])
    with pytest.raises(ValueError, match="has 38 samples but"):
        evaluate_scenario(scenario["store"] / "0", d / "metrics.json",
                          {"hc_l2": d / "hc_l2.npz"}, d / "x.json", {})  # fmt: skip


def test_scan_ranks_the_attacked_class_first(scenario: dict[str, Path]) -> None:
    d = scenario["dir"]
    rank = scan_classes(scenario["store"], d / "scan.csv", d / "scan.png", SPRAY, DECISION,
                        target=TARGET)  # fmt: skip
    assert rank == {"l2": 1}
    with open(d / "scan.csv") as f:
        rows = list(csv.DictReader(f))
    assert int(rows[0]["class"]) == TARGET and rows[0]["is_target"] == "True"
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    assert {r["distance"] for r in rows} == {"l2"}
    assert (d / "scan.png").read_bytes()[:4] == b"\x89PNG"


def test_scan_ranks_by_the_cluster_separation_not_the_rules_flags(
    scenario: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the rule's flags and the minority clusters disagree (the rule picked clean
    clusters beside the poison), the cluster separation ranks."""
    from poisonscan import clustering

    classes = iter(sorted(int(c) for c in zarr.open_group(str(scenario["store"])).group_keys()))

    def suspicion(*args: object, **kwargs: object) -> dict[str, float]:
        target = next(classes) == TARGET  # the rule flags clean images there, nothing elsewhere
        return {"n": 30, "k": 4, "n_groups": 2, "eigengap": 0.5, "min_share": 0.1,
                "silhouette": 0.2, "flagged_share": 0.1, "separation": 0.3 if target else 0.9,
                "cluster_separation": 1.5 if target else 0.4}  # fmt: skip

    monkeypatch.setattr(clustering, "class_suspicion", suspicion)
    d = scenario["dir"]
    assert scan_classes(scenario["store"], d / "x.csv", None, SPRAY, DECISION,
                        target=TARGET) == {"l2": 1}  # fmt: skip


def test_scan_by_gw_of_every_class(scenario: dict[str, Path]) -> None:
    d = scenario["dir"]
    gw = d / "gw_classes.zarr"
    knn = {"n_neighbors": 5, "candidates": 10, "refine": 5, "max_rounds": 3}
    distances_gw_classes(scenario["store"], gw, {**GW, "solver": "batched_cg", "epsilon": 0.003,
                         "tile": 16, "knn": knn}, {"cluster": "local"})  # fmt: skip
    rank = scan_classes(scenario["store"], d / "scan_gw.csv", d / "scan_gw.png", SPRAY, DECISION,
                        target=TARGET, gw=gw)  # fmt: skip
    assert rank == {"l2": 1, "gw": 1}
    with open(d / "scan_gw.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["distance"], int(r["rank"])) for r in rows] == [
        ("l2", 1), ("l2", 2), ("l2", 3), ("gw", 1), ("gw", 2), ("gw", 3)
    ]  # fmt: skip
    # the l2 rows are those of the scan without GW
    with open(d / "scan.csv") as f:
        assert rows[:3] == list(csv.DictReader(f))
    # a GW store of other heatmaps is refused
    other = d / "gw_other.zarr"
    shutil.copytree(gw, other)
    attrs = zarr.open_group(str(other / "0"), mode="r+").attrs
    attrs["heatmaps_sha256"] = "0" * 64
    with pytest.raises(ProvenanceError, match="other heatmaps"):
        scan_classes(scenario["store"], d / "x.csv", None, SPRAY, DECISION, gw=other)


def test_retrain_filtered_removes_the_flags_and_reports(
    scenario: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from poisonscan import training

    d = scenario["dir"]
    seen = {}

    def fake_fit(ds, model_name, params, device=None, workers=0):
        seen["n"], seen["poison"] = len(ds.y_train), int(ds.extra["poison_mask"].sum())
        return None, {"clean_acc": 0.95, "asr": 0.05}

    monkeypatch.setattr(training, "fit_and_evaluate", fake_fit)
    run(scenario, "hc_l2", {"params": SPRAY, "decision": DECISION})
    retrain_filtered(d / "poisoned.h5", d / "r_hc.json", {"name": "net"}, {},
                     detection=d / "hc_l2.npz", explanations=scenario["group"])  # fmt: skip
    assert seen == {"n": 102 - 8, "poison": 0}
    row = json.loads((d / "r_hc.json").read_text())
    assert row["filter"] == "hc_l2" and row["n_poison_removed"] == 8 and row["n_clean_removed"] == 0
    assert row["asr"] == 0.05
    retrain_filtered(d / "poisoned.h5", d / "r_perfect.json", {"name": "net"}, {})
    assert json.loads((d / "r_perfect.json").read_text())["filter"] == "perfect"
    rows = removal_table(d / "metrics.json", d / "poisoned.h5",
                         {"hc_l2": d / "r_hc.json", "perfect": d / "r_perfect.json"},
                         d / "removal.csv")  # fmt: skip
    assert [r["filter"] for r in rows] == ["none", "hc_l2", "perfect"]
    assert rows[0]["asr"] == 0.8 and rows[0]["n_poison_left"] == 8
    with open(d / "removal.csv") as f:
        assert csv.DictReader(f).fieldnames == list(REMOVAL_COLUMNS)
    with pytest.raises(ValueError, match="needs the class group"):
        retrain_filtered(d / "poisoned.h5", d / "x.json", {}, {}, detection=d / "hc_l2.npz")


def test_bench_detection_runs_the_methods_on_a_run_directory(scenario: dict[str, Path]) -> None:
    from poisonscan.bench.detection import run_methods
    from poisonscan.config import load_schema, validate_config
    from poisonscan.explain.store import store_classes

    assert store_classes(scenario["store"]) == [0, TARGET, 7]
    cfg = {"dataset": {"name": "synthetic"}, "scenarios": {"s": {"attack": "clean", "target": 5}},
           "clustering": {"spray": SPRAY, "decision": DECISION},
           "baselines": {"raw": {"nb_dims": 5}}}  # fmt: skip
    schema = load_schema(Path(__file__).parents[1] / "config" / "schema.yaml")
    rows = run_methods(scenario["dir"], validate_config(cfg, schema), ["hc_l2", "ac", "raw"])
    assert [r["method"] for r in rows] == ["ac", "hc_l2", "raw"]
    for r in rows:
        assert (r["tpr"], r["tnr"]) == (1.0, 1.0) and r["seconds"] >= 0


def test_analysis_steps_run_without_torch(scenario: dict[str, Path]) -> None:
    """The analysis environment needs no torch: detection, evaluation and the scan run
    without loading it."""
    import subprocess
    import sys

    d = scenario["dir"]
    code = f"""
import sys
from poisonscan.steps.detect import detect
from poisonscan.steps.distances import distances_gw_classes
from poisonscan.steps.evaluate import evaluate_scenario
from poisonscan.steps.scan import scan_classes
sections = {{"params": {SPRAY!r}, "decision": {DECISION!r}}}
detect("hc_l2", {str(scenario["group"])!r}, {str(d / "nt.npz")!r}, sections,
       distance_store={str(d / "distances" / "l2.zarr")!r})
detect("ac", {str(scenario["group"])!r}, {str(d / "nt_ac.npz")!r},
       {{"params": {{"nb_dims": 5}}}})
evaluate_scenario({str(scenario["group"])!r}, {str(d / "metrics.json")!r},
                  {{"hc_l2": {str(d / "nt.npz")!r}}}, {str(d / "nt.json")!r}, {{}})
scan_classes({str(scenario["store"])!r}, {str(d / "nt.csv")!r}, None, {SPRAY!r},
             {DECISION!r})
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
