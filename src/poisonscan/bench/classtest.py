"""``classtest RUN_DIR ...``: candidate class statistics, each calibrated over the classes.

The class test of the verdicts (:mod:`poisonscan.verdicts.concentration`) was chosen by
this measurement. For every run (a finished scenario directory with ``poisoned.h5`` and
``explain.zarr`` of every class) and every candidate it computes one statistic per class,
its robust z over the classes (median/MAD), and prints the attacked class's z and rank,
the largest z of a clean class and how many clean classes pass e^2. Candidates:

``concentration``
    the verdicts' test: share of a class's near-duplicate groups with an image whose
    relevance is extreme in a 3x3 window (:func:`~poisonscan.verdicts.class_test`);
``spray_separation``
    SpRAy with the eigengap, the size-gap rule, the bias-corrected separation of the
    flagged group's mean heatmap (the whole-dataset scan's ranking then,
    :mod:`poisonscan.clustering.scan`);
``lambda2``
    ``-log`` of the second eigenvalue of ``L_sym`` of the heatmaps' kNN graph with the edges
    between near-duplicates removed (a group apart from the rest has a small one);
``outlier_excess``
    share of the class whose mean distance to its 10 nearest heatmaps has a robust z > 3
    inside the class;
``outlier_coherence``
    share of the class's 5 % most outlying heatmaps whose nearest heatmap is another of them;
``scan_heatmaps``
    SCAn's statistic J (:class:`poisonscan.baselines.SCAn`) on the heatmaps pooled to 8x8.

Graph candidates use a random subsample of at most ``--subsample`` images per class, so
that classes of different sizes compare.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CANDIDATES", "add_parser", "candidate_statistics"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("classtest", help="candidate class statistics on finished scenarios")
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--store", default="explain.zarr", help="store path relative to RUN_DIR")
    p.add_argument("--subsample", type=int, default=800)
    p.add_argument("--candidates", default=None, help="comma-separated; default: all")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from poisonscan.bench.verdicts import _load

    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    rows = []
    for run in args.run_dirs:
        d = _load(run, args.store)
        stats = candidate_statistics(d, names, args.subsample)
        for name, values in stats.items():
            rows.append({"run": str(run), "candidate": name, **_summary(values, d["target"])})
    return rows


def _summary(values: dict[int, float], target: int | None) -> dict[str, Any]:
    from poisonscan.verdicts import robust_z

    classes = sorted(values)
    z = robust_z(np.array([values[c] for c in classes]))
    order = np.argsort(-np.nan_to_num(z, nan=-np.inf))
    clean = [i for i in range(len(classes)) if classes[i] != target]
    out: dict[str, Any] = {
        "max_clean_z": round(float(np.nanmax(z[clean])), 2),
        "clean_classes_over_e2": int(np.sum(z[clean] > math.exp(2))),
    }
    if target is not None:
        i = classes.index(target)
        out |= {"target_z": round(float(z[i]), 2),
                "target_rank": int(np.flatnonzero(order == i)[0]) + 1}  # fmt: skip
    return out


def _subsample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, limit, replace=False)) if n > limit else np.arange(n)


def _distances(h: np.ndarray) -> np.ndarray:
    from poisonscan.distances import euclidean_distances

    return euclidean_distances(h)


def _concentration(d: dict[str, Any], limit: int) -> dict[int, float]:
    from poisonscan.verdicts import class_test, peak_shares

    shares = {c: peak_shares(v["heatmaps"], 3) for c, v in d["classes"].items()}
    groups = {c: d["groups"][v["index"]] for c, v in d["classes"].items()}
    t = class_test(shares, groups)
    return {int(c): float(s) for c, s in zip(t.classes, t.statistic, strict=True)}


def _per_class(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., dict[int, float]]:
    def run(d: dict[str, Any], limit: int) -> dict[int, float]:
        rng = np.random.default_rng(0)
        out = {}
        for c, v in d["classes"].items():
            idx = _subsample(len(v["index"]), limit, rng)
            if len(idx) < 20:
                out[c] = math.nan
                continue
            out[c] = fn(v["heatmaps"][idx], d["groups"][v["index"][idx]])
        return out

    return run


def _spray(h: np.ndarray, groups: np.ndarray) -> float:
    from poisonscan.clustering import class_suspicion

    decision = {"rule": "size-gap", "size_threshold": 0.35, "silhouette_threshold": 0.1}
    return float(class_suspicion(h, _distances(h), {"seed": 0}, decision)["separation"])


def _lambda2(h: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    from poisonscan.clustering import knn_affinity, smallest_eigenpairs

    d = _distances(h)
    d[groups[:, None] == groups[None, :]] = np.inf  # near-duplicates are not neighbours
    np.fill_diagonal(d, 0.0)
    values, _ = smallest_eigenpairs(knn_affinity(d, k), 3)
    return -math.log(max(float(values[1]), 1e-9))


def _knn_score(h: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    d = _distances(h)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k].mean(axis=1), d


def _outlier_excess(h: np.ndarray, groups: np.ndarray) -> float:
    from poisonscan.verdicts import robust_z

    score, _ = _knn_score(h)
    return float(np.mean(robust_z(score) > 3))


def _outlier_coherence(h: np.ndarray, groups: np.ndarray) -> float:
    score, d = _knn_score(h)
    top = np.argsort(-score)[: max(5, len(score) // 20)]
    return float(np.isin(np.argmin(d[top], axis=1), top).mean())


def _scan_heatmaps(d: dict[str, Any], limit: int) -> dict[int, float]:
    from sklearn.decomposition import PCA

    from poisonscan.baselines import SCAn

    ids = sorted(d["classes"])
    pooled = [d["classes"][c]["heatmaps"] for c in ids]
    pooled = [h.reshape(len(h), 8, h.shape[1] // 8, 8, h.shape[2] // 8).sum((2, 4)).reshape(
        len(h), -1) for h in pooled]  # fmt: skip
    pca = PCA(20, random_state=0).fit(np.concatenate(pooled))
    est = SCAn().fit([pca.transform(h) for h in pooled])
    return {c: float(j) for c, j in zip(ids, est.statistic_, strict=True)}


CANDIDATES: dict[str, Callable[[dict[str, Any], int], dict[int, float]]] = {
    "concentration": _concentration,
    "spray_separation": _per_class(_spray),
    "lambda2": _per_class(_lambda2),
    "outlier_excess": _per_class(_outlier_excess),
    "outlier_coherence": _per_class(_outlier_coherence),
    "scan_heatmaps": _scan_heatmaps,
}


def candidate_statistics(
    data: dict[str, Any], names: list[str], limit: int = 800
) -> dict[str, dict[int, float]]:
    """Per candidate, its statistic per class (higher = more suspicious)."""
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; available: {sorted(CANDIDATES)}")
    return {name: CANDIDATES[name](data, limit) for name in names}
