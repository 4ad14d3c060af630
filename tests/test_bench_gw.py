"""``python -m poisonscan.bench gw``: one JSON line per configuration (small, fast inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from poisonscan import bench, distances
from poisonscan.bench import gw as gw_bench
from poisonscan.bench.gw import (
    _ott,
    _pot_values,
    median_excess_on_knn,
    parse_support,
    synthetic_heatmaps,
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    bench.main(["gw", *argv])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_pairs_mode_reports_speed_and_agreement(capsys: pytest.CaptureFixture[str]) -> None:
    rows = run(capsys, "--synthetic", "--n", "8", "--pairs", "4", "--support", "pool8,mass0.5",
               "--epsilon", "0.05")  # fmt: skip
    assert [r["support"] for r in rows] == ["pool8", "mass0.5"]
    for row in rows:
        assert row["pairs"] == 4 and row["pot_pairs"] == 4 and row["n"] == 8
        assert row["ours_pairs_per_s"] > 0 and row["pot_pairs_per_s"] > 0
        assert row["speedup"] == pytest.approx(
            row["ours_pairs_per_s"] / row["pot_pairs_per_s"], rel=0.01
        )
        assert row["max_rel_err"] <= 1e-3
        assert -1 <= row["spearman_vs_exact"] <= 1
        assert row["projected_s_n2000"] > 0
        # ot.batch runs on the padded supports of mass0.5 too (tiny padding mass)
        assert row["ot_batch_pairs_per_s"] > 0 and np.isfinite(row["ot_batch_median_over_pot"])
    assert rows[0]["mean_support_size"] == 64.0  # an 8x8 grid


def test_pairs_mode_with_batched_cg_reports_speed_and_ranks_against_exact(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = run(capsys, "--synthetic", "--n", "8", "--pairs", "6", "--support", "pool8+mass0.99",
               "--epsilon", "0.005", "--metric", "euclidean", "--solver", "batched,batched_cg",
               "--no-ot-batch", "--no-ott", "--repeat", "2", "--clock", "cpu")  # fmt: skip
    assert [r["solver"] for r in rows] == ["batched", "batched_cg"]
    batched, cg = rows
    assert batched["max_rel_err"] <= 1e-3 and batched["pot_pairs_per_s"] > 0  # same problem
    assert "pot_pairs_per_s" not in cg and "max_rel_err" not in cg  # not POT's entropic problem
    for row in rows:
        assert row["clock"] == "cpu" and row["repeat"] == 2
        assert row["speedup_vs_exact"] == pytest.approx(
            row["ours_pairs_per_s"] / row["pot_exact_pairs_per_s"], rel=0.01, abs=0.006
        )
        assert -1 <= row["spearman_vs_exact"] <= 1 and row["max_rel_err_vs_exact"] >= 0
        assert "max_rel_err_vs_cpu" not in row  # only off the CPU
    assert cg["median_ours_over_exact"] >= 0.9


def test_detect_and_dask_modes_on_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hm, poison = synthetic_heatmaps(16, seed=1)
    written: list[np.ndarray] = []  # the heatmaps each configuration's matrix is made of
    write_group = gw_bench._write_group
    monkeypatch.setattr(gw_bench, "_write_group",
                        lambda tmp, h: written.append(h) or write_group(tmp, h))  # fmt: skip
    root = zarr.open_group(str(tmp_path / "explain.zarr"), mode="w")
    root.attrs["target_class"] = 0  # the explanation store layout: one group per class
    group = root.create_group("0")
    group.create_array("heatmaps", data=hm)
    group.create_array("poison", data=poison)
    rows = run(capsys, "--mode", "detect", "--store", str(tmp_path / "explain.zarr"), "--n",
               "16", "--spray-k", "3,4", "--configs", "pot_exact:pool4+mass0.99:0,"
               "batched:pool4:0.02,batched_cg:pool4+mass0.99:0.005,pot_exact:pool4+mass0.99:0:"
               "transposed", "--tile", "8")  # fmt: skip
    assert [(r["solver"], r["transposed"], r["k"]) for r in rows] == [
        (s, t, k) for s, t in [("pot_exact", False), ("batched", False), ("batched_cg", False),
                               ("pot_exact", True)] for k in (3, 4)
    ]  # fmt: skip
    for row in rows:
        assert row["n"] == 16 and row["n_poison"] == 4 and 0 <= row["tpr"] <= 1
        assert row["tp"] == round(row["tpr"] * 4)
        assert 0 <= row["labels_as_first"] <= 1 and 0 <= row["knn_edges_of_first"] <= 1
    assert rows[0]["labels_as_first"] == rows[0]["knn_edges_of_first"] == 1.0
    assert rows[0]["excess_on_first_knn"] == 0.0
    # batched_cg's plans are feasible, near POT's: its values are not far off on these edges
    assert all(-0.5 < r["excess_on_first_knn"] < 1.0 for r in rows[4:6])
    # the transposed heatmaps pose the same GW problems: POT's matrix, and so its labels, again
    np.testing.assert_array_equal(written[-1], hm.transpose(0, 2, 1))
    for row in rows[6:]:
        assert row["labels_as_first"] == row["knn_edges_of_first"] == 1.0
        assert row["excess_on_first_knn"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="pot_exact:pool4:0:mirrored"):
        run(capsys, "--mode", "detect", "--store", str(tmp_path / "explain.zarr"), "--n", "16",
            "--configs", "pot_exact:pool4:0:mirrored")  # fmt: skip
    rows = run(capsys, "--mode", "dask", "--synthetic", "--n", "10", "--support", "pool4",
               "--epsilon", "0.05", "--tile", "4")  # fmt: skip
    assert rows[0]["pairs"] == 45 and rows[0]["seconds"] > 0


def test_median_excess_is_taken_on_the_reference_knn_edges_only() -> None:
    reference = np.array([[0, 1, 4, 9], [1, 0, 2, 8], [4, 2, 0, 5], [9, 8, 5, 0]], float)
    d = reference.copy()
    d[0, 3] = d[3, 0] = 90.0  # not a 1-NN edge of the reference: no effect
    assert median_excess_on_knn(d, reference, 1) == 0.0
    d[1, 2] = d[2, 1] = 3.0  # the 1-NN edge of row 2: +50 %
    d[0, 1] = d[1, 0] = 1.5  # of rows 0 and 1: +50 %
    assert median_excess_on_knn(d, reference, 1) == pytest.approx(0.5)


def test_knn_mode_reports_recall_per_round_limit(capsys: pytest.CaptureFixture[str]) -> None:
    rows = run(capsys, "--mode", "knn", "--synthetic", "--n", "24", "--support", "pool4",
               "--epsilon", "0.05", "--tile", "8", "--k", "3", "--candidates", "4",
               "--refine", "2", "--rounds", "0,3", "--workers", "1")  # fmt: skip
    assert [r["max_rounds"] for r in rows] == [0, 3]
    assert rows[0]["seconds_full"] == rows[1]["seconds_full"]  # one full matrix for both
    assert rows[0]["rounds"] == 0 and rows[1]["rounds"] <= 3
    assert rows[0]["pairs_knn"] <= rows[1]["pairs_knn"] <= rows[0]["pairs_full"] == 276
    assert 0 < rows[0]["recall"] <= rows[1]["recall"] <= 1


def test_knn_recall_from_sampled_rows_equals_the_full_matrix_on_all_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--mode", "knn", "--synthetic", "--n", "16", "--support", "pool4", "--epsilon",
              "0", "--tile", "8", "--k", "3", "--candidates", "3", "--refine", "1",
              "--rounds", "1", "--workers", "1"]  # fmt: skip
    full = run(capsys, *common)[0]
    sampled = run(capsys, *common, "--recall-rows", "16")[0]  # every row: the same recall
    assert sampled["solver"] == "pot_exact" and sampled["recall_rows"] == 16
    assert sampled["recall"] == pytest.approx(full["recall"], abs=1e-9)
    assert sampled["pairs_knn"] == full["pairs_knn"] and sampled["recall_se"] >= 0


def test_ott_matches_pot_entropic_on_tiny_pairs() -> None:
    pytest.importorskip("ott")
    hm, _ = synthetic_heatmaps(6, seed=2)
    # 8x8 grid, 90 % of the mass: supports of different sizes, so _ott pads them
    params = distances.GWParams(solver="pot_entropic", epsilon=0.05, pool=4, mass=0.9,
                                metric="sqeuclidean")  # fmt: skip
    spaces = distances.prepare_spaces(hm, params)
    pairs = [(0, 1), (2, 3), (4, 5)]
    assert len({spaces[k].weights.size for pair in pairs for k in pair}) > 1
    pot = _pot_values(spaces, pairs, params)
    assert np.isfinite(pot).all()
    out = _ott(spaces, pairs, 0.05, pot, metric="sqeuclidean")
    assert np.isfinite(out["ott_pairs_per_s"]) and out["ott_pairs_per_s"] > 0
    assert out["ott_median_over_pot"] == pytest.approx(1.0, abs=1e-2)
    assert out["ott_failed"] == 0
    # the dense path: ott geometries from the (here squared) cost matrices, not points
    dense = _ott(spaces, pairs, 0.05, pot, metric="euclidean")
    assert dense["ott_median_over_pot"] == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("full", (1, None)), ("pool16", (2, None)), ("mass0.5", (1, 0.5)),
     ("pool8+mass0.99", (4, 0.99))],
)  # fmt: skip
def test_parse_support(spec: str, expected: tuple) -> None:
    assert parse_support(spec, 32) == expected


def test_parse_support_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown support 'top50'"):
        parse_support("top50", 32)
    with pytest.raises(ValueError, match="does not divide"):
        parse_support("pool12", 32)


def test_synthetic_heatmaps_are_measures_with_a_poisoned_quarter() -> None:
    hm, poison = synthetic_heatmaps(20, seed=3)
    assert hm.shape == (20, 32, 32) and (hm >= 0).all()
    np.testing.assert_allclose(hm.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert poison.sum() == 5
    patch = hm[:, 27:30, 27:30].sum(axis=(1, 2))
    assert patch[poison].min() > patch[~poison].max()


def test_scan_mode_ranks_every_class_by_gw_and_reports_sampled_recall(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from conftest import REPO

    from poisonscan.storage import create_array, seal_store

    store = tmp_path / "explain.zarr"
    root = zarr.open_group(str(store), mode="w")
    for c, seed in ((0, 1), (5, 2), (7, 3)):
        hm, poison = synthetic_heatmaps(24, seed=seed)
        if c != 5:  # only class 5 has the patch
            hm, poison = synthetic_heatmaps(40, seed=seed)
            hm, poison = hm[~poison][:24], poison[~poison][:24]
        g = root.create_group(str(c))
        create_array(g, "heatmaps", data=hm)
        create_array(g, "poison", data=poison)
    root.attrs.update({"classes": [0, 5, 7], "target_class": 5})
    seal_store(root)
    (row,) = run(capsys, "--mode", "scan", "--store", str(store), "--solver", "batched_cg",
                 "--epsilon", "0.003", "--support", "pool8+mass0.99", "--metric", "euclidean",
                 "--k", "3", "--candidates", "5", "--rounds", "2", "--recall-rows", "12",
                 "--workers", "1", "--config", str(REPO / "config" / "config.yaml"),
                 "--keep", str(tmp_path / "keep"))  # fmt: skip
    assert row["classes"] == 3 and row["n"] == 72 and row["pairs_all"] == 3 * 24 * 23 // 2
    assert 0 < row["pairs_solved"] <= row["pairs_all"] and row["seconds"] > 0
    assert row["recall_rows"] == 12 and 0 <= row["recall_min_class"] <= row["recall"] <= 1
    assert row["target_class"] == 5
    assert row["target_rank_l2"] == 1 and row["first_l2"] == [5]
    assert row["target_rank_gw"] == 1 and row["first_gw"] == [5]
    for name in ("l2", "gw"):
        (first, sep1), (_, sep2) = row[f"top_{name}"]  # by the cluster separation, the ranking
        assert first == 5 and sep1 >= sep2 > 0
        # the separation of the decision rule's flags, reported beside it, finds the patch too
        (first, sep1), (_, sep2) = row[f"top_rule_{name}"]
        assert row[f"target_rank_rule_{name}"] == 1 and first == 5 and sep1 >= sep2
    # the same figures from kNN graphs made beforehand (the workflow's store)
    from poisonscan.steps.distances import distances_gw_classes

    section = {"solver": "batched_cg", "epsilon": 0.003, "pool": 4, "mass": 0.99,
               "metric": "euclidean", "tile": 64,
               "knn": {"n_neighbors": 3, "candidates": 5, "max_rounds": 2}}  # fmt: skip
    distances_gw_classes(store, tmp_path / "gw.zarr", section, {"cluster": "local"})
    (again,) = run(capsys, "--mode", "scan", "--store", str(store), "--gw-store",
                   str(tmp_path / "gw.zarr"), "--recall-rows", "12", "--workers", "1",
                   "--config", str(REPO / "config" / "config.yaml"))  # fmt: skip
    assert "seconds" not in again and again["support"] == "pool8+mass0.99"
    for key in (
        "pairs_solved",
        "recall",
        "target_rank_l2",
        "target_rank_gw",
        "first_gw",
        "top_gw",
        "target_rank_rule_gw",
        "top_rule_gw",
    ):
        assert again[key] == row[key], key
    # --keep: the per-class table and plot, and graphs that give the same scan again
    table = (tmp_path / "keep" / "scan.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 3 and (tmp_path / "keep" / "scan.png").stat().st_size > 0
    (kept,) = run(capsys, "--mode", "scan", "--store", str(store), "--gw-store",
                  str(tmp_path / "keep" / "gw_classes.zarr"), "--workers", "1",
                  "--config", str(REPO / "config" / "config.yaml"))  # fmt: skip
    for key in ("pairs_solved", "target_rank_gw", "first_gw", "top_gw"):
        assert kept[key] == row[key], key
