"""``gw``: GW solvers on heatmap pairs, the tiled Dask run, the sparse kNN mode, detection.

Modes (``--mode``), one JSON line per configuration:

``pairs`` (default)
    For each support (``--support``), epsilon (``--epsilon``) and batched solver
    (``--solver``: ``batched``, our entropic GW, and/or ``batched_cg``, our conditional
    gradient for exact GW): ours on ``--pairs`` random pairs and POT's exact
    ``gromov_wasserstein2`` on the first ``--pot-pairs`` of them; for ``batched`` also POT's
    per-pair ``entropic_gromov_wasserstein2`` (the same problem), POT's
    ``ot.batch.solve_gromov_batch`` (if installed; ``max_iter=50, tol=0``: its default
    ``tol`` stops after one iteration) and ott-jax's entropic ``GromovWasserstein`` (if
    installed: the ``bench-ott`` extra; one jitted solve per pair, supports padded to one
    size, timed after compiling and a warm-up call) on the same pairs. Reports pairs per
    second, ``speedup`` = ours / POT entropic and ``max_rel_err`` against POT entropic
    (``batched`` rows only), ``speedup_vs_exact`` = ours / POT exact,
    ``spearman_vs_exact`` (rank correlation with exact GW), ``max_rel_err_vs_exact``,
    ``max_rel_err_vs_cpu`` (ours on ``--device`` against ours on the CPU, when the device is
    not the CPU) and ``projected_s_n2000`` (the full matrix of 2000 heatmaps at our rate,
    same machine). Every timed solver runs ``--repeat`` times and the fastest run counts,
    so that a busy machine slows the competitors alike; ``--clock cpu`` times this process's
    CPU time instead of the wall time (with ``--threads 1``: the time on one core).

    Candidates measured for ``batched_cg`` (synthetic and real GTSRB heatmaps on the
    8x8 grid at 99 % of the mass, against POT exact): see RESULTS.md, section "GW at scale".
``dask``
    The full tiled matrix of ``--n`` heatmaps through :func:`gw_distance_matrix` on a
    LocalCluster of ``--workers`` single-threaded workers.
``knn``
    The sparse kNN matrix against the full one (both through Dask): seconds, pairs,
    recall of the exact ``--k``-NN graph; one line per ``--rounds`` value (comma-separated,
    the full matrix is computed once). ``--recall-rows R`` estimates the recall from R
    random full rows instead of the full matrix (large n with a slow solver).
``scan``
    The GW kNN graphs of every class of the explanation store ``--store`` in one Dask
    computation, through the step of rule ``distances_gw_classes`` (``--workers`` workers,
    kNN search as in ``knn``), or those of ``--gw-store`` (the workflow's, with their own
    parameters): seconds and pairs; the recall of the exact ``--k``-NN from
    ``--recall-rows`` random heatmaps of the whole store (their full rows within their
    class, same solver), overall and per class; then the whole-dataset scan (rule
    ``scan``, SpRAy settings of ``--config``) by Euclidean and by GW distances: the rank of
    the store's target class by each and the classes ranked first, and the same by the
    separation of the decision rule's flags, which the scan reports beside its ranking
    (``*_rule_*``). ``--keep DIR`` keeps the kNN graphs (``DIR/gw_classes.zarr``, unless
    ``--gw-store`` gave them) and the per-class table of the scan (``DIR/scan.csv``: each
    class's clusters, flagged share and separations by each distance; ``DIR/scan.png``:
    its bar plot).
``detect``
    Detection quality of SpRAy (kNN affinity, 2 clusters, smaller cluster flagged) on the
    GW matrix of ``--n`` heatmaps with ground truth, per ``--configs`` entry
    ``solver:support:epsilon[:transposed]`` (``transposed``: every heatmap mirrored on its
    diagonal, the same GW problems with the points in another order) and ``--spray-k``
    entry, beside the first entry's labels
    and k-NN edges, and how much larger each value is than the first entry's on those
    edges (the median of ``d / d_first - 1``).

Supports: ``full`` (every pixel), ``poolK`` (sum-pooled to a K x K grid: ``pool16`` is
a 32x32 heatmap sum-pooled by 2), ``massX`` (the most relevant pixels holding the share X
of the mass), combinable with ``+`` (``pool8+mass0.99``). Heatmaps: ``--store`` (a zarr
group with ``heatmaps``, or an explanation store: its target class) or ``--synthetic``
(32x32: 2-4 Gaussian blobs plus 2 % noise; a quarter add a 3x3 corner patch holding
30-60 % of the mass).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from poisonscan import distances

__all__ = ["add_parser", "parse_support", "synthetic_heatmaps"]

N_REF = 2000


def add_parser(sub: Any) -> None:
    p = sub.add_parser("gw", help="GW solvers, tiled Dask run, sparse kNN mode, detection")
    p.add_argument("--mode", choices=["pairs", "dask", "knn", "scan", "detect"], default="pairs")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--store", type=Path, help="zarr group with heatmaps, or explain.zarr")
    src.add_argument("--synthetic", action="store_true", help="synthetic heatmaps (default)")
    p.add_argument("--n", type=int, default=48, help="number of heatmaps")
    p.add_argument("--pairs", type=int, default=32, help="pairs mode: pairs for our solver")
    p.add_argument("--pot-pairs", type=int, default=None,
                   help="pairs for POT (default: 6 on the full grid, else --pairs)")  # fmt: skip
    p.add_argument("--support", default="full,pool16,mass0.5")
    p.add_argument("--epsilon", default="0.05", help="comma-separated")
    p.add_argument("--metric", default="sqeuclidean", choices=["sqeuclidean", "euclidean"])
    p.add_argument("--solver", default="batched",
                   help="pairs: our batched solvers, comma-separated (batched, batched_cg); "
                        "dask/knn: the first one is the solver for epsilon > 0")  # fmt: skip
    p.add_argument("--repeat", type=int, default=1,
                   help="pairs: runs per timed solver, the fastest counts")  # fmt: skip
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="pairs: wall time, or this process's CPU time (with --threads 1: "
                        "the time on one core, whatever share other jobs take)")  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1, help="torch/BLAS threads in this process")
    p.add_argument("--no-exact", action="store_true", help="skip POT's exact solver")
    p.add_argument("--no-ot-batch", action="store_true", help="skip ot.batch")
    p.add_argument("--no-ott", action="store_true", help="skip ott-jax")
    p.add_argument("--workers", type=int, default=2, help="dask/knn/detect: Dask workers")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--k", type=int, default=10, help="knn/scan: neighbours")
    p.add_argument(
        "--spray-k",
        default="10",
        help="detect: SpRAy's neighbours, comma-separated (each on every matrix)",
    )
    search = distances.KNNParams()  # the search's defaults
    p.add_argument("--candidates", type=int, default=search.candidates)
    p.add_argument("--refine", type=int, default=search.refine)
    p.add_argument("--rounds", default=str(search.max_rounds),
                   help="knn/scan: max rounds (knn: comma-separated, one full matrix)")  # fmt: skip
    p.add_argument("--bound", default=search.bound, choices=list(distances.BOUNDS))
    p.add_argument("--recall-rows", type=int, default=0,
                   help="knn: estimate recall from this many random full rows instead of "
                        "the full matrix (0: full matrix)")  # fmt: skip
    p.add_argument("--configs", default="pot_exact:pool8+mass0.99:0,batched:pool8+mass0.99:0.005",
                   help="detect: solver:support:epsilon[:transposed], comma-separated")  # fmt: skip
    p.add_argument("--gw-store", type=Path,
                   help="scan: the GW kNN graphs the workflow made (distances/gw_classes.zarr) "
                        "instead of computing them")  # fmt: skip
    p.add_argument("--keep", type=Path,
                   help="scan: write the per-class table (scan.csv), its plot and, unless "
                        "--gw-store gives them, the GW kNN graphs (gw_classes.zarr) to this "
                        "folder")  # fmt: skip
    p.add_argument("--pairs-per-task", type=int, default=2048, help="knn/scan: GW pairs per task")
    p.add_argument("--config", type=Path, default=Path("config") / "config.yaml",
                   help="scan: config with its clustering.spray and decision")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.mode == "scan":
        with _threads(args.threads):
            return [scan_row(args)]
    hm, poison = _heatmaps(args)
    with _threads(args.threads):
        if args.mode == "pairs":
            return pairs_rows(hm, args)
        if args.mode == "dask":
            return [dask_row(hm, args)]
        if args.mode == "knn":
            return knn_rows(hm, args)
        return detect_rows(hm, poison, args)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


def synthetic_heatmaps(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(heatmaps (n, size, size) float32, poison (n,) bool)``; see the module docstring."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    maps, poison = [], np.zeros(n, dtype=bool)
    poison[rng.permutation(n)[: n // 4]] = True
    for k in range(n):
        h = np.zeros((size, size))
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(2, size - 2, 2)
            h += rng.uniform(0.3, 1) * np.exp(
                -((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(4, 40)
            )
        h /= h.sum()
        h = 0.98 * h + 0.02 * rng.random((size, size)) / (0.5 * size * size)
        if poison[k]:
            share = rng.uniform(0.3, 0.6)
            h = (1 - share) * h / h.sum()
            h[size - 5 : size - 2, size - 5 : size - 2] += share / 9
        maps.append(h / h.sum())
    return np.stack(maps).astype(np.float32), poison


def _heatmaps(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None]:
    if args.store is None:
        return synthetic_heatmaps(args.n, seed=args.seed)
    from poisonscan.steps.distances import heatmap_group

    group = zarr.open_group(heatmap_group(args.store), mode="r")
    total = group["heatmaps"].shape[0]
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(total, size=min(args.n, total), replace=False))
    hm = group["heatmaps"].get_orthogonal_selection((idx,))
    poison = group["poison"][...][idx].astype(bool) if "poison" in group else None
    return np.asarray(hm, dtype=np.float32), poison


def parse_support(spec: str, size: int) -> tuple[int, float | None]:
    """``"full"``, ``"poolK"``, ``"massX"`` or ``"poolK+massX"`` -> ``(pool, mass)``."""
    pool, mass = 1, None
    for token in spec.split("+"):
        if token == "full":
            continue
        if m := re.fullmatch(r"pool(\d+)", token):
            side = int(m.group(1))
            if side < 1 or size % side:
                raise ValueError(f"support {spec!r}: a {side}x{side} grid does not divide {size}")
            pool = size // side
        elif m := re.fullmatch(r"mass(0?\.\d+|1(\.0*)?)", token):
            mass = float(m.group(1))
        else:
            raise ValueError(f"unknown support {spec!r}; use full, poolK, massX or poolK+massX")
    return pool, mass


def _random_pairs(n: int, count: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    pick = rng.choice(len(all_pairs), size=min(count, len(all_pairs)), replace=False)
    return [all_pairs[k] for k in pick]


def _timed(fn: Any, *a: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t0


def _best_of(repeat: int, fn: Any, *a: Any, clock: str = "wall") -> tuple[Any, float]:
    """``fn(*a)`` ``repeat`` times: the last result and the shortest time on ``clock``."""
    timer = time.process_time if clock == "cpu" else time.perf_counter
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = timer()
        out = fn(*a)
        best = min(best, timer() - t0)
    return out, best


def _rel(ours: np.ndarray, ref: np.ndarray) -> tuple[float | None, float | None]:
    """Max and median relative error of ``ours`` against the finite entries of ``ref``."""
    ok = np.isfinite(ref) & (ref != 0)
    if not ok.any():
        return None, None
    rel = np.abs(ours[ok] - ref[ok]) / np.abs(ref[ok])
    return float(f"{rel.max():.3g}"), float(f"{np.median(rel):.3g}")


def pairs_rows(hm: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``pairs`` mode (see the module docstring)."""
    from scipy.stats import spearmanr

    rows = []
    pairs = _random_pairs(len(hm), args.pairs, args.seed)
    solvers = args.solver.split(",")
    for support in args.support.split(","):
        pool, mass = parse_support(support, hm.shape[1])
        common = {"pool": pool, "mass": mass, "metric": args.metric}
        n_pot = args.pot_pairs or (6 if pool == 1 and mass is None else len(pairs))
        sub = pairs[:n_pot]
        pot_spaces = distances.prepare_spaces(hm, distances.GWParams(**common))
        exact, t_ex = None, None
        if not args.no_exact:
            ex_p = distances.GWParams(solver="pot_exact", **common)
            exact, t_ex = _best_of(args.repeat, distances.solve_pairs, pot_spaces, pot_spaces,
                                   sub, ex_p, clock=args.clock)  # fmt: skip
        for eps in (float(e) for e in args.epsilon.split(",")):
            for solver in solvers:
                ours_p = distances.GWParams(solver=solver, epsilon=eps, dtype=args.dtype,
                                            device=args.device, **common)  # fmt: skip
                spaces = distances.prepare_spaces(hm, ours_p)
                distances.solve_pairs(spaces, spaces, pairs[:2], ours_p)  # warm-up
                ours, t_ours = _best_of(args.repeat, distances.solve_pairs, spaces, spaces,
                                        pairs, ours_p, clock=args.clock)  # fmt: skip
                row: dict[str, Any] = {
                    "mode": "pairs", "solver": solver, "n": len(hm), "pairs": len(pairs),
                    "pot_pairs": n_pot, "support": support, "mean_support_size": round(
                        float(np.mean([len(s.weights) for s in spaces])), 1),
                    "metric": args.metric, "epsilon": eps, "device": args.device,
                    "dtype": args.dtype, "threads": args.threads, "repeat": args.repeat,
                    "clock": args.clock,
                    "ours_pairs_per_s": round(len(pairs) / t_ours, 3),
                }  # fmt: skip
                if solver == "batched":
                    row.update(_vs_pot_entropic(pot_spaces, sub, eps, common, ours, t_ours,
                                                len(pairs), args))  # fmt: skip
                if exact is not None:
                    ex_pps = n_pot / t_ex
                    err_max, err_med = _rel(ours[:n_pot], exact)
                    row["pot_exact_pairs_per_s"] = round(ex_pps, 3)
                    row["speedup_vs_exact"] = round((len(pairs) / t_ours) / ex_pps, 2)
                    row["spearman_vs_exact"] = round(float(spearmanr(ours[:n_pot], exact)[0]), 4)
                    row["max_rel_err_vs_exact"] = err_max
                    row["median_rel_err_vs_exact"] = err_med
                    row["median_ours_over_exact"] = round(float(np.median(ours[:n_pot] / exact)), 3)
                if args.device != "cpu":
                    cpu_p = distances.GWParams(solver=solver, epsilon=eps, dtype=args.dtype,
                                               **common)  # fmt: skip
                    cpu = distances.solve_pairs(spaces, spaces, pairs, cpu_p)
                    row["max_rel_err_vs_cpu"] = _rel(ours, cpu)[0]
                row["projected_s_n2000"] = round(N_REF * (N_REF - 1) / 2 * t_ours / len(pairs))
                rows.append(row)
    return rows


def _vs_pot_entropic(
    pot_spaces: list[Any],
    sub: list[tuple[int, int]],
    eps: float,
    common: dict[str, Any],
    ours: np.ndarray,
    t_ours: float,
    n_pairs: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """POT's entropic GW (and ot.batch, ott-jax) on ``sub``, against ours (``batched``)."""
    pot_p = distances.GWParams(solver="pot_entropic", epsilon=eps, **common)
    pot, t_pot = _best_of(args.repeat, _pot_values, pot_spaces, sub, pot_p, clock=args.clock)
    ok = np.isfinite(pot)  # POT's scaling Sinkhorn fails on some zero-mass cells
    err_max, err_med = _rel(ours[: len(sub)], pot)
    out: dict[str, Any] = {
        "pot_pairs_per_s": round(len(sub) / t_pot, 3),
        "speedup": round((n_pairs / t_ours) / (len(sub) / t_pot), 2),
        "pot_failed": int((~ok).sum()),
        "max_rel_err": err_max,
        "median_rel_err": err_med,
    }
    if not args.no_ot_batch:
        out.update(_ot_batch(pot_spaces, sub, eps, np.where(ok, pot, np.nan)))
    if not args.no_ott:
        out.update(_ott(pot_spaces, sub, eps, np.where(ok, pot, np.nan), metric=args.metric))
    return out


def _pot_values(spaces: list[Any], pairs: list[tuple[int, int]], params: Any) -> np.ndarray:
    """POT per pair; NaN where POT reports a numerical failure."""
    from poisonscan.distances._solvers import pot_pair

    out = np.full(len(pairs), np.nan)
    for k, (i, j) in enumerate(pairs):
        with contextlib.suppress(FloatingPointError):
            out[k] = pot_pair(spaces[i], spaces[j], params, pair=(i, j))
    return out


def _ot_batch(spaces: list[Any], pairs: list[tuple[int, int]], eps: float, pot: np.ndarray):
    """POT's batched GW (proximal point, dense costs) on the same pairs, padded to one size."""
    try:
        from ot.batch import solve_gromov_batch
    except ImportError:
        return {"ot_batch_pairs_per_s": None}
    n = max(spaces[k].weights.size for pair in pairs for k in pair)

    def pad(ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        # Its log-domain solver takes the log of the weights, so zero-mass padding gives
        # NaN; a padding mass of 1e-12 moved its values by 2e-7 relative (measured).
        c = np.zeros((len(ids), n, n))
        w = np.full((len(ids), n), 1e-12)
        for k, i in enumerate(ids):
            m = spaces[i].weights.size
            c[k, :m, :m], w[k, :m] = spaces[i].cost, spaces[i].weights
        return c, w / w.sum(1, keepdims=True)

    ca, a = pad([i for i, _ in pairs])
    cb, b = pad([j for _, j in pairs])
    t0 = time.perf_counter()
    res = solve_gromov_batch(ca, cb, reg=eps, a=a, b=b, loss="sqeuclidean",
                             max_iter=50, tol=0.0)  # fmt: skip
    secs = time.perf_counter() - t0
    value = np.asarray(res.value_quad, dtype=np.float64).ravel()
    # ot.batch's quadratic loss halves POT's square-loss energy or not, depending on
    # the version: report its ratio to POT's entropic value instead of an error
    return {
        "ot_batch_pairs_per_s": round(len(pairs) / secs, 3),
        "ot_batch_median_over_pot": round(float(np.nanmedian(value / pot)), 3),
    }


def _ott(
    spaces: list[Any],
    pairs: list[tuple[int, int]],
    eps: float,
    pot: np.ndarray,
    *,
    metric: str = "sqeuclidean",
) -> dict[str, Any]:
    """ott-jax's entropic GW on the same pairs as POT, with POT's regularisation.

    Parameters
    ----------
    spaces : list of MetricMeasureSpace
        Prepared spaces (``cost``, ``weights``, ``coords``), as for POT.
    pairs : list of (int, int)
        Pairs to solve.
    eps : float
        Entropic regularisation in POT's convention (see :class:`GWParams`).
    pot : ndarray of shape (len(pairs),)
        POT's entropic values on ``pairs`` (NaN where POT failed).
    metric : {"sqeuclidean", "euclidean"}
        Ground metric the costs were built with: ``sqeuclidean`` gives ott point clouds,
        which it solves through an exact rank-4 factorisation of the costs.

    Returns
    -------
    dict
        ``ott_pairs_per_s`` (after compilation and a warm-up call), ``ott_median_over_pot``
        (median of ott's value over POT's), ``ott_compile_s`` and ``ott_failed``
        (non-finite values); only the first two, as None, if ott-jax is not installed.
    """
    try:
        import jax
        import jax.numpy as jnp
        from ott.geometry import geometry, pointcloud
        from ott.problems.quadratic import quadratic_problem
        from ott.solvers.linear import sinkhorn
        from ott.solvers.quadratic import gromov_wasserstein
    except ImportError:
        return {"ott_pairs_per_s": None, "ott_median_over_pot": None}
    # ott linearises at T with constC - 2 C1 T C2 (loss f1 + f2 - h1 h2, h2 = 2y): half
    # of POT's gradient 2 constC - 4 C1 T C2, and both use the kernel exp(-cost / eps),
    # so ott's epsilon eps / 2 gives POT's iterates (checked at eps 0.05: ratio 1.0000
    # on pool8 and mass0.5 pairs, 1.04-1.6 with eps itself). Its primal_cost is
    # <T, L(C1, C2) x T> without the entropy, like POT's entropic_gromov_wasserstein2.
    solver = gromov_wasserstein.GromovWasserstein(
        # POT's Sinkhorn budget (1000 iterations) and our inner tolerance (L1 marginals)
        sinkhorn.Sinkhorn(threshold=1e-6, max_iterations=1000),
        epsilon=eps / 2,
        # ott stops on the relative change of the regularised cost, POT on the plan's
        threshold=1e-6,
        max_iterations=1000,
        warm_start=True,
    )
    point_cloud = metric == "sqeuclidean"

    def solve(xa: Any, a: Any, xb: Any, b: Any) -> Any:
        if point_cloud:
            gx, gy = pointcloud.PointCloud(xa), pointcloud.PointCloud(xb)
        else:
            gx, gy = geometry.Geometry(cost_matrix=xa), geometry.Geometry(cost_matrix=xb)
        return solver(quadratic_problem.QuadraticProblem(gx, gy, a=a, b=b)).primal_cost

    # One padded support size (zero weights, which ott's Sinkhorn masks) so that XLA
    # compiles once; jax computes in float32 unless x64 is enabled. One call per pair:
    # jax.vmap over pairs was 2-4x slower on one core (every pair then runs as many
    # outer and Sinkhorn iterations as the slowest one of its batch).
    n = max(spaces[k].weights.size for pair in pairs for k in pair)

    def arrays(i: int) -> tuple[Any, Any]:
        x = np.zeros((n, 2) if point_cloud else (n, n), np.float32)
        w = np.zeros(n, np.float32)
        m = spaces[i].weights.size
        w[:m] = spaces[i].weights
        if point_cloud:
            x[:m] = spaces[i].coords
        else:
            x[:m, :m] = spaces[i].cost
        return jnp.asarray(x), jnp.asarray(w)

    inputs = [(*arrays(i), *arrays(j)) for i, j in pairs]
    t0 = time.perf_counter()
    compiled = jax.jit(solve).lower(*inputs[0]).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*inputs[0]))  # warm-up: first-run allocations
    t0 = time.perf_counter()
    values = [jax.block_until_ready(compiled(*args)) for args in inputs]
    secs = time.perf_counter() - t0
    value = np.array([float(v) for v in values])
    ok = np.isfinite(value)
    return {
        "ott_pairs_per_s": round(len(pairs) / secs, 3),
        "ott_median_over_pot": round(float(np.nanmedian(np.where(ok, value, np.nan) / pot)), 4),
        "ott_compile_s": round(compile_s, 2),
        "ott_failed": int((~ok).sum()),
    }


def _params_from_args(args: argparse.Namespace, eps: float, support: str, n_size: int):
    pool, mass = parse_support(support, n_size)
    solver = args.solver.split(",")[0] if eps > 0 else "pot_exact"
    extra = {"dtype": args.dtype, "device": args.device} if solver.startswith("batched") else {}
    return distances.GWParams(solver=solver, pool=pool, mass=mass, metric=args.metric,
                              epsilon=eps, **extra)  # fmt: skip


def _write_group(tmp: str, hm: np.ndarray) -> str:
    from poisonscan.storage import create_array, seal_store

    path = str(Path(tmp) / "heatmaps.zarr")
    group = zarr.open_group(path, mode="w")
    create_array(group, "heatmaps", data=hm, chunks=(64, *hm.shape[1:]))
    seal_store(group)  # as the explain step does (the GW steps check every chunk)
    return path


def _dask_matrix(src: str, params: Any, args: argparse.Namespace, tmp: str):
    """The full tiled GW matrix of the heatmap group ``src`` (its output goes into ``tmp``)."""
    from poisonscan.parallel import dask_client

    out = str(Path(tmp) / f"gw_{time.monotonic_ns()}.zarr")
    with dask_client({"cluster": "local"}, n_workers=args.workers) as client:
        client.run(lambda: None)  # workers up before the clock starts
        return _timed(distances.gw_distance_matrix, src, out, params, client, args.tile)


def dask_row(hm: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """The ``dask`` mode: seconds of the full tiled matrix."""
    support = args.support.split(",")[0]
    eps = float(args.epsilon.split(",")[0])
    params = _params_from_args(args, eps, support, hm.shape[1])
    with tempfile.TemporaryDirectory() as tmp:
        _, secs = _dask_matrix(_write_group(tmp, hm), params, args, tmp)
    n_pairs = len(hm) * (len(hm) - 1) // 2
    return {
        "mode": "dask", "n": len(hm), "pairs": n_pairs, "support": support, "epsilon": eps,
        "solver": params.solver, "workers": args.workers, "tile": args.tile,
        "seconds": round(secs, 1), "pairs_per_s": round(n_pairs / secs, 2),
        "projected_s_n2000": round(N_REF * (N_REF - 1) / 2 * secs / n_pairs),
    }  # fmt: skip


def _exact_class_rows(
    group: str, n: int, rows: np.ndarray, params: Any, client: Any
) -> tuple[np.ndarray, int]:
    """Rows ``rows`` of the full GW matrix of the ``n`` heatmaps of ``group``, shape (R, n),
    and the number of pairs solved for them."""
    todo = {(min(i, j), max(i, j)) for i in rows for j in range(n) if j != i}
    pairs = np.array(sorted(todo), dtype=np.int64)
    done, values = distances.gw_pair_values(group, pairs, params, client, what="exact-row tasks")
    exact = np.full((n, n), np.nan)
    exact[done[:, 0], done[:, 1]] = exact[done[:, 1], done[:, 0]] = values
    exact[rows, rows] = 0.0
    return exact[rows], len(pairs)


def _exact_rows(
    src: str, n: int, params: Any, args: argparse.Namespace
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """GW of ``--recall-rows`` random heatmaps against all others, through Dask.

    Returns the sorted row indices (R,), their rows of the matrix (R, n), the seconds and
    the number of pairs solved.
    """
    from poisonscan.parallel import dask_client

    rows = np.sort(np.random.default_rng(args.seed).choice(n, args.recall_rows, replace=False))
    with dask_client({"cluster": "local"}, n_workers=args.workers) as client:
        client.run(lambda: None)
        t0 = time.perf_counter()
        exact, n_pairs = _exact_class_rows(src, n, rows, params, client)
        secs = time.perf_counter() - t0
    return rows, exact, secs, n_pairs


def knn_rows(hm: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``knn`` mode: sparse kNN matrices (one per ``--rounds`` value) against the full one.

    With ``--recall-rows R`` the exact k-NN come from R random full rows instead (recall is then
    an estimate with its standard error, and ``seconds_full`` is projected from those rows).
    """
    from poisonscan.parallel import dask_client

    support = args.support.split(",")[0]
    eps = float(args.epsilon.split(",")[0])
    params = _params_from_args(args, eps, support, hm.shape[1])
    n = len(hm)
    n_pairs = n * (n - 1) // 2
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        src = _write_group(tmp, hm)
        if args.recall_rows:
            rows, exact, secs, done = _exact_rows(src, n, params, args)
            t_full = secs * n_pairs / done
        else:
            full, t_full = _dask_matrix(src, params, args, tmp)
        for max_rounds in (int(r) for r in str(args.rounds).split(",")):
            knn = distances.KNNParams(
                n_neighbors=args.k, candidates=args.candidates, refine=args.refine,
                max_rounds=max_rounds, bound=args.bound,
            )  # fmt: skip
            with dask_client({"cluster": "local"}, n_workers=args.workers) as client:
                client.run(lambda: None)
                (sparse, info), t_knn = _timed(distances.gw_knn_matrix, src, params, knn, client)
            row = {
                "mode": "knn", "n": n, "support": support, "epsilon": eps,
                "solver": params.solver, "k": args.k, "bound": args.bound,
                "candidates": args.candidates, "refine": args.refine, "max_rounds": max_rounds,
                "rounds": info["rounds"], "pairs_full": n_pairs, "pairs_knn": info["pairs"],
                "fraction": round(info["fraction"], 4), "seconds_full": round(t_full, 1),
                "seconds_knn": round(t_knn, 1), "seconds_bound": round(info["seconds_bound"], 2),
                "speedup": round(t_full / t_knn, 2),
            }  # fmt: skip
            if args.recall_rows:
                per_row = distances.knn_row_recall(exact, sparse, args.k, rows)
                row["recall_rows"] = len(rows)
                row["recall"] = round(float(per_row.mean()), 4)
                row["recall_se"] = round(float(per_row.std(ddof=1) / np.sqrt(len(rows))), 4)
            else:
                row["recall"] = round(distances.knn_recall(full, sparse, args.k), 4)
            out.append(row)
    return out


def scan_row(args: argparse.Namespace) -> dict[str, Any]:
    """The ``scan`` mode (see the module docstring)."""
    from poisonscan.clustering import rank_classes
    from poisonscan.config import read_config
    from poisonscan.explain.store import class_group_path, store_classes
    from poisonscan.parallel import dask_client
    from poisonscan.steps.distances import distances_gw_classes
    from poisonscan.steps.scan import scan_classes

    if args.store is None:
        raise ValueError("--mode scan needs --store: an explanation store with every class")
    cfg = read_config(args.config, Path(args.config).parent / "schema.yaml")
    support = args.support.split(",")[0]
    eps = float(args.epsilon.split(",")[0])
    classes = store_classes(args.store)
    groups = {c: class_group_path(args.store, c) for c in classes}
    sizes = {c: int(zarr.open_group(g, mode="r")["heatmaps"].shape[0]) for c, g in groups.items()}
    size = zarr.open_group(groups[classes[0]], mode="r")["heatmaps"].shape[1]
    if args.gw_store is None:
        params = _params_from_args(args, eps, support, size)
        knn = {"n_neighbors": args.k, "candidates": args.candidates, "refine": args.refine,
               "bound": args.bound, "max_rounds": int(str(args.rounds).split(",")[0]),
               "pairs_per_task": args.pairs_per_task}  # fmt: skip
    else:  # the workflow's kNN graphs: their own parameters
        attrs = zarr.open_group(str(args.gw_store), mode="r").attrs
        params, knn = distances.GWParams.from_config(attrs["params"]), dict(attrs["knn"])
        support = f"pool{size // params.pool}+mass{params.mass}"
    section = {**params.to_dict(), "tile": args.tile, "mode": "knn", "knn": knn}
    row: dict[str, Any] = {
        "mode": "scan", "classes": len(classes), "n": sum(sizes.values()),
        "pairs_all": sum(n * (n - 1) // 2 for n in sizes.values()), "solver": params.solver,
        "support": support, "epsilon": params.epsilon, "metric": params.metric,
        "workers": args.workers, **{k: v for k, v in knn.items() if k != "pairs_per_task"},
    }  # fmt: skip
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    folder = contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()
    with folder as tmp:
        out = str(args.gw_store or Path(tmp) / "gw_classes.zarr")
        if args.gw_store is None:
            t0 = time.perf_counter()
            distances_gw_classes(args.store, out, section, {"cluster": "local"},
                                 threads=args.workers)  # fmt: skip
            row["seconds"] = round(time.perf_counter() - t0, 1)
        sparse = {c: distances.read_distance_store(f"{out}/{c}") for c in classes}
        row["pairs_solved"] = int(sum(np.isfinite(d).sum() - len(d) for d in sparse.values()) // 2)
        row["fraction"] = round(row["pairs_solved"] / row["pairs_all"], 4)
        if args.recall_rows:
            # R heatmaps drawn from the whole store; each one's full row within its class
            owner = np.repeat(classes, [sizes[c] for c in classes])
            local = np.concatenate([np.arange(sizes[c]) for c in classes])
            pick = np.random.default_rng(args.seed).choice(len(owner), args.recall_rows,
                                                           replace=False)  # fmt: skip
            recall: dict[int, np.ndarray] = {}
            k = int(knn["n_neighbors"])
            t0 = time.perf_counter()
            with dask_client({"cluster": "local"}, n_workers=args.workers) as client:
                for c in classes:
                    rows = np.sort(local[pick[owner[pick] == c]])
                    if len(rows):
                        exact, _ = _exact_class_rows(groups[c], sizes[c], rows, params, client)
                        recall[c] = distances.knn_row_recall(exact, sparse[c], k, rows)
            per_row = np.concatenate([np.asarray(v) for v in recall.values()])
            row["seconds_exact_rows"] = round(time.perf_counter() - t0, 1)
            row["recall_rows"] = len(per_row)
            row["recall"] = round(float(per_row.mean()), 4)
            row["recall_se"] = round(float(per_row.std(ddof=1) / np.sqrt(len(per_row))), 4)
            row["recall_min_class"] = round(min(float(np.mean(v)) for v in recall.values()), 4)
        target = zarr.open_group(str(args.store), mode="r").attrs.get("target_class")
        spray, decision = cfg["clustering"]["spray"], cfg["clustering"]["decision"]
        t0 = time.perf_counter()
        png = Path(tmp) / "scan.png" if args.keep else None
        ranks = scan_classes(args.store, Path(tmp) / "scan.csv", png, spray, decision,
                             target=target, gw=out)  # fmt: skip
        row["seconds_scan"] = round(time.perf_counter() - t0, 1)
        import csv

        with open(Path(tmp) / "scan.csv") as f:
            table = list(csv.DictReader(f))
    row["target_class"] = target
    for name in ranks:
        row[f"target_rank_{name}"] = ranks[name]
        ranked = sorted((r for r in table if r["distance"] == name), key=lambda r: int(r["rank"]))
        row[f"first_{name}"] = [int(r["class"]) for r in ranked if r["rank"] == "1"]
        # the two highest cluster separations (a clean control shows how high they go
        # unattacked)
        row[f"top_{name}"] = [[int(r["class"]), round(float(r["cluster_separation"]), 3)]
                              for r in ranked[:2]]  # fmt: skip
        # the same by the separation of the decision rule's flags (reported, not ranking)
        by_rule = sorted(rank_classes(ranked, by="separation"), key=lambda r: r["rank"])
        row[f"target_rank_rule_{name}"] = next(
            (r["rank"] for r in by_rule if r["is_target"] == "True"), None
        )
        row[f"top_rule_{name}"] = [[int(r["class"]), round(float(r["separation"]), 3)]
                                   for r in by_rule[:2]]  # fmt: skip
    return row


def median_excess_on_knn(d: np.ndarray, reference: np.ndarray, k: int) -> float:
    """Median of ``d / reference - 1`` over the k-NN edges of ``reference`` (its k smallest
    off-diagonal entries per row, ties by index; pairs of value 0 left out): where the k-NN
    graph is decided, how much larger ``d`` is (0 for the reference itself)."""
    cols = distances.knn_columns(reference, k, np.arange(len(reference)))
    ref = np.take_along_axis(reference, cols, 1)
    mine = np.take_along_axis(d, cols, 1)
    keep = ref > 0
    return float(np.median(mine[keep] / ref[keep] - 1.0)) if keep.any() else 0.0


def detect_rows(
    hm: np.ndarray, poison: np.ndarray | None, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The ``detect`` mode: SpRAy detection quality per GW configuration and SpRAy k.

    Each row also compares with the first configuration (the reference, e.g. POT exact):
    the share of images labelled alike and of its k-NN edges found again.
    """
    from poisonscan import clustering, evaluate

    if poison is None:
        raise ValueError("--mode detect needs ground truth: a store with 'poison', or --synthetic")
    rows: list[dict[str, Any]] = []
    first_d, first_labels = None, {}  # the first configuration's matrix and labels per k
    for spec in args.configs.split(","):
        solver, support, eps_text, *view = spec.split(":")
        if view not in ([], ["transposed"]):
            raise ValueError(f"config {spec!r}: use solver:support:epsilon[:transposed]")
        pool, mass = parse_support(support, hm.shape[1])
        batched = solver.startswith("batched")
        extra = {"dtype": args.dtype, "device": args.device} if batched else {}
        params = distances.GWParams(solver=solver, pool=pool, mass=mass, metric=args.metric,
                                    epsilon=float(eps_text), **extra)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            heatmaps = np.ascontiguousarray(hm.transpose(0, 2, 1)) if view else hm
            d, secs = _dask_matrix(_write_group(tmp, heatmaps), params, args, tmp)
        first_d = d if first_d is None else first_d
        for k in [int(k) for k in args.spray_k.split(",")]:
            est = clustering.SpectralRelevanceAnalysis(n_neighbors=k, n_clusters=2).fit(d)
            flagged = clustering.smaller_cluster(est.labels_)
            reference = first_labels.setdefault(k, flagged)
            m = evaluate.detection_metrics(flagged, poison)
            rows.append({
                "mode": "detect", "n": len(hm), "n_poison": int(poison.sum()), "solver": solver,
                "support": support, "metric": args.metric, "epsilon": float(eps_text),
                "transposed": bool(view), "k": k,
                "seconds": round(secs, 1), "tp": m["tp"], "fp": m["fp"],
                "tpr": round(float(m["tpr"]), 3), "tnr": round(float(m["tnr"]), 3),
                "f1": round(float(m["f1"]), 3),
                "labels_as_first": round(float((flagged == reference).mean()), 3),
                "knn_edges_of_first": round(distances.knn_recall(first_d, d, k), 3),
                "excess_on_first_knn": round(median_excess_on_knn(d, first_d, k), 4),
                "projected_s_n2000": round(N_REF * (N_REF - 1) / len(hm) / (len(hm) - 1) * secs),
            })  # fmt: skip
    return rows
