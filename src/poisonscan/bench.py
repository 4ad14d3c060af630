"""Measurements that print figures (never timed tests).

``python -m poisonscan.bench composites RUN_DIR`` compares the LRP composites on a
finished scenario directory (``poisoned.h5`` + ``model.safetensors``): the share
of relevance mass inside each poisoned image's sticker, and how well SpRAy on
Euclidean heatmap distances (k = 2, smaller cluster) separates the poison.

``python -m poisonscan.bench gw STORE`` times POT's exact and entropic GW on pairs
of heatmaps of an explanation store and reports how close each loss comes to that
of the independent coupling ``p q^T`` (a ratio near 1 means the plan collapsed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from poisonscan import clustering, distances, evaluate, explain, steps
from poisonscan.storage import read_dataset

__all__ = ["compare_composites", "main"]


def compare_composites(
    run_dir: Path, composites: list[str], normalization: str = "positive_mass"
) -> list[dict[str, float | str]]:
    """One JSON-able row per composite: trigger mass share and SpRAy (Euclidean) detection."""
    data = read_dataset(run_dir / "poisoned.h5")
    target = int(data.meta["attack"]["target"])
    size = int(data.meta["attack"]["sticker_size"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in composites:
            store = Path(tmp) / f"{name}.zarr"
            params = {"composite": name, "epsilon": 1e-6, "normalization": normalization,
                      "batch_size": 128}  # fmt: skip
            t0 = time.perf_counter()
            steps.explain_target(
                run_dir / "poisoned.h5", run_dir / "model.safetensors", store,
                {"target": target}, params, threads=2,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            ex = explain.read_explanations(store)
            hm, poison = ex["heatmaps"], ex["poison"].astype(bool)
            pos = data.extra["trigger_position"][ex["index"]]
            inside = np.array(
                [h[r : r + size, c : c + size].sum() for h, (r, c) in zip(hm, pos, strict=True)]
            )
            # the same boxes on clean images: each clean image gets a poisoned one's position
            rng = np.random.default_rng(0)
            boxes = pos[poison][rng.integers(0, poison.sum(), size=(~poison).sum())]
            clean_inside = np.array(
                [h[r : r + size, c : c + size].sum()
                 for h, (r, c) in zip(hm[~poison], boxes, strict=True)]
            )  # fmt: skip
            est = clustering.SpectralRelevanceAnalysis(n_neighbors=10, n_clusters=2)
            flagged = clustering.smaller_cluster(est.fit(distances.euclidean_distances(hm)).labels_)
            m = evaluate.detection_metrics(flagged, poison)
            rows.append({
                "composite": name,
                "mass_in_sticker_poisoned": round(float(inside[poison].mean()), 4),
                "mass_in_sticker_clean": round(float(clean_inside.mean()), 4),
                "uniform": round(size * size / hm[0].size, 4),
                "hc_l2_tpr": round(float(m["tpr"]), 3),
                "hc_l2_tnr": round(float(m["tnr"]), 3),
                "images_per_s": round(len(hm) / seconds, 1),
            })  # fmt: skip
    return rows


def compare_gw_solvers(
    store: Path, epsilons: list[float], pool: int, mass: float | None, n_pairs: int
) -> list[dict[str, float | int | None]]:
    """Seconds per pair and collapse ratio of GW per epsilon (0 = exact) on random pairs."""
    import ot

    hm = explain.read_explanations(store)["heatmaps"]
    rng = np.random.default_rng(0)
    pairs = [tuple(rng.choice(len(hm), size=2, replace=False)) for _ in range(n_pairs)]
    spaces = {
        i: distances.heatmap_to_mm_space(hm[i], pool=pool, mass=mass)
        for pair in pairs for i in pair
    }  # fmt: skip
    independent = [
        float(ot.gromov.gwloss(*ot.gromov.init_matrix(
            spaces[i].cost, spaces[j].cost, spaces[i].weights, spaces[j].weights
        ), np.outer(spaces[i].weights, spaces[j].weights)))
        for i, j in pairs
    ]  # fmt: skip
    rows = []
    for eps in epsilons:
        params = distances.GWParams(pool=pool, mass=mass, epsilon=eps)
        t0 = time.perf_counter()
        values = [distances.gromov_wasserstein(hm[i], hm[j], **params.to_dict()) for i, j in pairs]
        seconds = (time.perf_counter() - t0) / len(pairs)
        ratio = np.median(np.array(values) / np.array(independent))
        rows.append({
            "epsilon": eps, "pool": pool, "mass": mass, "pairs": len(pairs),
            "mean_support": round(float(np.mean([len(s.weights) for s in spaces.values()])), 1),
            "s_per_pair": round(seconds, 5),
            "median_loss_over_independent": round(float(ratio), 3),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m poisonscan.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("composites", help="compare LRP composites on a finished scenario")
    comp.add_argument("run_dir", type=Path, help="e.g. results/synthetic/sticker_p15_s3")
    comp.add_argument("--composites", default=",".join(sorted(explain.COMPOSITES)))
    comp.add_argument("--normalization", default="positive_mass")
    gw = sub.add_parser("gw", help="time exact and entropic GW on heatmap pairs")
    gw.add_argument("store", type=Path, help="an explanation store (explain.zarr)")
    gw.add_argument("--epsilons", default="0,0.1,0.05,0.01")
    gw.add_argument("--pool", type=int, default=4)
    gw.add_argument("--mass", type=float, default=0.99)
    gw.add_argument("--pairs", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "composites":
        rows = compare_composites(args.run_dir, args.composites.split(","), args.normalization)
    else:
        eps = [float(e) for e in args.epsilons.split(",")]
        rows = compare_gw_solvers(args.store, eps, args.pool, args.mass, args.pairs)
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
