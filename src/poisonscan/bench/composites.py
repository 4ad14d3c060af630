"""``composites RUN_DIR``: compare the LRP composites on a finished scenario directory.

Reads ``poisoned.h5`` + ``model.safetensors`` and reports, per composite, the
share of relevance mass inside each poisoned image's sticker, and how well
SpRAy on Euclidean heatmap distances (k = 2, smaller cluster) separates the poison.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from poisonscan import clustering, distances, evaluate, explain, steps
from poisonscan.storage import read_dataset

__all__ = ["add_parser", "compare_composites"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("composites", help="compare LRP composites on a finished scenario")
    p.add_argument("run_dir", type=Path, help="e.g. results/synthetic/sticker_p15_s3")
    p.add_argument("--composites", default=",".join(sorted(explain.COMPOSITES)))
    p.add_argument("--normalization", default="positive_mass")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> list[dict[str, float | str]]:
    return compare_composites(args.run_dir, args.composites.split(","), args.normalization)


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
                      "batch_size": 128, "classes": "target"}  # fmt: skip
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
