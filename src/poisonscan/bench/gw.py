"""``gw STORE``: time POT's exact and entropic GW on pairs of heatmaps of a store.

Reports how close each loss comes to that of the independent coupling ``p q^T``
(a ratio near 1 means the plan collapsed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from poisonscan import distances, explain

__all__ = ["add_parser", "compare_gw_solvers"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("gw", help="time exact and entropic GW on heatmap pairs")
    p.add_argument("store", type=Path, help="an explanation store (explain.zarr)")
    p.add_argument("--epsilons", default="0,0.1,0.05,0.01")
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--mass", type=float, default=0.99)
    p.add_argument("--pairs", type=int, default=20)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> list[dict[str, float | int | None]]:
    eps = [float(e) for e in args.epsilons.split(",")]
    return compare_gw_solvers(args.store, eps, args.pool, args.mass, args.pairs)


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
