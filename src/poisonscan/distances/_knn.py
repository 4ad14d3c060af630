"""Sparse GW: the k-nearest-neighbour graph from a fraction of the pairs.

Spectral clustering needs only a kNN graph. Instead of all n(n-1)/2 GW problems,

1. a cheap score ranks, for every heatmap, all others: Mémoli's *second lower bound*
   (``"slb"``) or the Euclidean distance of the heatmaps (``"euclidean"``), or both;
2. round 0 solves GW for each heatmap's ``candidates`` best-ranked partners (pairs
   shared between heatmaps are solved once);
3. each further round (at most ``max_rounds``) solves, per heatmap, the ``refine``
   best-ranked unsolved pairs among the neighbours of its current k nearest neighbours
   and of the heatmaps that have it among theirs (NN-descent), plus its next ``refine``
   best-ranked unsolved partners; it stops when no pair is left.

The result is an n x n matrix with the solved values, a zero diagonal and ``+inf``
for the pairs never solved: a consumer building a kNN affinity must read ``+inf``
as "not a neighbour".

The second lower bound
----------------------
Each heatmap's distance distribution is the law of ``C(x, x')`` for ``x, x'`` drawn
independently from its measure. Any coupling ``T`` of ``p`` and ``q`` makes
``T (x) T`` a coupling of the two distance distributions, so the square-loss GW
energy of *any* plan is at least their squared 2-Wasserstein distance (Mémoli 2011,
SLB), ``int_0^1 (F1^-1(t) - F2^-1(t))^2 dt``. On a grid the distribution depends
only on the autocorrelation of the measure (an FFT), and the integral is evaluated
at ``quantiles`` midpoints, so the bound of all pairs is one squared-Euclidean
distance matrix of (n, quantiles) vectors. The midpoint rule makes it approximate:
a pair can be skipped whose true GW value is slightly below the k-th found value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse
import zarr
from scipy.spatial.distance import cdist

from poisonscan.distances._euclidean import euclidean_distances
from poisonscan.distances._params import GWParams
from poisonscan.distances._solvers import prepare_spaces, solve_pairs
from poisonscan.distances._spaces import heatmap_support
from poisonscan.distances._tiles import Progress, n_heatmaps
from poisonscan.parameters import from_section

if TYPE_CHECKING:
    import distributed

__all__ = [
    "BOUNDS",
    "KNNParams",
    "candidate_scores",
    "compute_pairs",
    "distance_quantiles",
    "gw_knn_matrix",
    "gw_pair_values",
    "knn_recall",
    "knn_row_recall",
    "second_lower_bound",
]

logger = logging.getLogger("poisonscan.distances")

BOUNDS = ("slb", "euclidean", "slb+euclidean")


@dataclass(frozen=True)
class KNNParams:
    """Parameters of the sparse kNN mode.

    Attributes
    ----------
    n_neighbors : int
        k of the kNN graph the sparse matrix must contain.
    candidates : int
        Round 0: GW pairs per heatmap, its best-ranked partners (with
        ``"slb+euclidean"`` this many from each score).
    refine : int
        Later rounds: per heatmap, this many best-ranked neighbours of neighbours and
        this many next best-ranked partners.
    bound : {"slb", "euclidean", "slb+euclidean"}
        Score that ranks partners (later rounds rank by the first one).
    max_rounds : int
        Neighbour-of-neighbour rounds after round 0 (0: candidates only). With the
        defaults, 10 rounds found 96.6 % of the exact 10-NN edges of 2000 real GTSRB
        heatmaps (5 rounds: 74 %; README, GW at scale).
    quantiles : int
        Midpoints of the quantile functions in the SLB.
    pairs_per_task : int
        GW pairs per Dask task.
    """

    n_neighbors: int = 10
    candidates: int = 20
    refine: int = 10
    bound: str = "slb"
    max_rounds: int = 10
    quantiles: int = 256
    pairs_per_task: int = 2048

    def __post_init__(self) -> None:
        for name in ("n_neighbors", "candidates", "refine", "quantiles", "pairs_per_task"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"knn.{name} must be a positive integer, got {value!r}")
        if isinstance(self.max_rounds, bool) or not isinstance(self.max_rounds, int):
            raise ValueError(f"knn.max_rounds must be an integer >= 0, got {self.max_rounds!r}")
        if self.max_rounds < 0:
            raise ValueError(f"knn.max_rounds must be >= 0, got {self.max_rounds!r}")
        if self.bound not in BOUNDS:
            raise ValueError(f"knn.bound must be one of {BOUNDS}, got {self.bound!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> KNNParams:
        """Build from a plain dict; unknown keys raise ValueError."""
        return from_section(cls, "distances.gw.knn", config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distance_quantiles(
    heatmaps: np.ndarray, params: GWParams, n_quantiles: int = 256
) -> np.ndarray:
    """Quantile functions of each heatmap's distance distribution at ``n_quantiles`` midpoints.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, H, W)
    params : GWParams
        ``pool``, ``mass`` and ``metric`` define the metric measure space.
    n_quantiles : int

    Returns
    -------
    ndarray of shape (n, n_quantiles), float64
        ``F_i^-1((m + 0.5) / n_quantiles)``; ``mean((Q_i - Q_j)**2)`` approximates the SLB.
    """
    heatmaps = np.asarray(heatmaps)
    n, h, w = heatmaps.shape
    hp, wp = h // params.pool, w // params.pool
    grids = np.zeros((n, hp, wp))
    for k, hm in enumerate(heatmaps):
        coords, weights = heatmap_support(hm, params.pool, params.mass)
        diag = math.hypot(hp - 1, wp - 1) or 1.0
        rows = np.rint(coords[:, 0] * diag).astype(int)
        cols = np.rint(coords[:, 1] * diag).astype(int)
        grids[k, rows, cols] = weights
    # autocorrelation = distribution of the offsets between two independent cells
    shape = (2 * hp - 1, 2 * wp - 1)
    f = np.fft.rfft2(grids, s=shape)
    auto = np.clip(np.fft.irfft2(f * np.conj(f), s=shape), 0.0, None)
    dy = np.fft.ifftshift(np.arange(-(hp - 1), hp))  # offset of each FFT index
    dx = np.fft.ifftshift(np.arange(-(wp - 1), wp))
    diag = math.hypot(hp - 1, wp - 1) or 1.0
    dist = np.hypot(dy[:, None], dx[None, :]) / diag
    if params.metric == "sqeuclidean":
        dist = dist**2
    values, inverse = np.unique(np.round(dist.ravel(), 12), return_inverse=True)
    mass = np.zeros((n, values.size))
    for k in range(n):
        mass[k] = np.bincount(inverse, weights=auto[k].ravel(), minlength=values.size)
    cdf = np.cumsum(mass, axis=1)
    cdf /= cdf[:, -1:]
    levels = (np.arange(n_quantiles) + 0.5) / n_quantiles
    idx = np.empty((n, n_quantiles), dtype=np.int64)
    for k in range(n):
        idx[k] = np.minimum(np.searchsorted(cdf[k], levels, side="left"), values.size - 1)
    return values[idx]


def second_lower_bound(quantiles: np.ndarray) -> np.ndarray:
    """SLB matrix ``mean_m (Q_i[m] - Q_j[m])**2`` of (n, Q) quantile vectors; shape (n, n)."""
    q = np.asarray(quantiles, dtype=np.float64)
    return cdist(q, q, metric="sqeuclidean") / q.shape[1]


def candidate_scores(heatmaps: np.ndarray, params: GWParams, knn: KNNParams) -> list[np.ndarray]:
    """The (n, n) score matrices that rank partners (one per score named in ``knn.bound``)."""
    scores = []
    if "slb" in knn.bound:
        scores.append(second_lower_bound(distance_quantiles(heatmaps, params, knn.quantiles)))
    if "euclidean" in knn.bound:
        scores.append(euclidean_distances(heatmaps))
    return scores


def compute_pairs(
    heatmap_store: str, pairs: np.ndarray, params: GWParams
) -> tuple[np.ndarray, np.ndarray]:
    """GW values of the given (i, j) pairs of a heatmap store (runs inside a Dask worker).

    Reads only the heatmaps the pairs need. Returns ``(pairs, values)``.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    heatmaps = zarr.open_group(heatmap_store, mode="r")["heatmaps"]
    ids = np.unique(pairs)
    spaces = prepare_spaces(heatmaps.get_orthogonal_selection((ids,)), params)
    local = np.searchsorted(ids, pairs)
    values = solve_pairs(spaces, spaces, [tuple(p) for p in local], params,
                         labels=[tuple(p) for p in pairs])  # fmt: skip
    return pairs, values


def _top(score: np.ndarray, allowed: np.ndarray, count: int) -> np.ndarray:
    """Per row, the columns of the ``count`` smallest allowed scores (as (n, count) with -1)."""
    s = np.where(allowed, score, np.inf)
    count = min(count, s.shape[1])
    part = np.argpartition(s, count - 1, axis=1)[:, :count]
    ok = np.isfinite(np.take_along_axis(s, part, axis=1))
    return np.where(ok, part, -1)


def _neighbours_of_neighbours(d: np.ndarray, k: int) -> np.ndarray:
    """(n, n) mask: j is a current k-NN of a current k-NN (or reverse k-NN) of i."""
    n = d.shape[0]
    off = np.where(np.eye(n, dtype=bool), np.inf, d)
    k = min(k, n - 1)
    nn = np.argpartition(off, k - 1, axis=1)[:, :k]
    known = np.isfinite(np.take_along_axis(off, nn, axis=1))
    rows = np.repeat(np.arange(n), k)[known.ravel()]
    cols = nn.ravel()[known.ravel()]
    adj = scipy.sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsr()
    adj = adj + adj.T  # neighbours and reverse neighbours
    return (adj @ adj).toarray() > 0


def _pairs_from(rows_cols: np.ndarray) -> np.ndarray:
    """Unique (i < j) pairs from an (n, c) table of partner columns (-1 = none)."""
    n, c = rows_cols.shape
    i = np.repeat(np.arange(n), c)
    j = rows_cols.ravel()
    keep = j >= 0
    i, j = i[keep], j[keep]
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def gw_knn_matrix(
    heatmap_store: str,
    params: GWParams,
    knn: KNNParams,
    client: distributed.Client | None = None,
    log: logging.Logger | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Sparse GW matrix holding every heatmap's k nearest neighbours (see module docstring).

    Parameters
    ----------
    heatmap_store : str
        Path of a zarr group with ``heatmaps`` (n, H, W).
    params : GWParams
    knn : KNNParams
    client : distributed.Client, optional
        Cluster for the GW pairs (None: solve in this process).
    log : logging.Logger, optional

    Returns
    -------
    distances : ndarray of shape (n, n), float64
        Solved GW values, zero diagonal, ``+inf`` for pairs not solved; symmetric.
    info : dict
        ``pairs`` solved, ``fraction`` of all pairs, ``rounds``, ``seconds_bound``.
    """
    import time

    log = log or logger
    heatmap_store = str(heatmap_store)
    n = n_heatmaps(heatmap_store, log)
    if not 1 <= knn.n_neighbors < max(n, 2):
        raise ValueError(f"knn.n_neighbors must lie in [1, {n - 1}] for {n} heatmaps")
    t0 = time.perf_counter()
    heatmaps = zarr.open_group(heatmap_store, mode="r")["heatmaps"][...]
    scores = candidate_scores(heatmaps, params, knn)
    t_bound = time.perf_counter() - t0
    d = np.full((n, n), np.inf)
    np.fill_diagonal(d, 0.0)
    solved = np.eye(n, dtype=bool)
    first = np.concatenate([_top(s, ~solved, knn.candidates) for s in scores], axis=1)
    todo = _pairs_from(first)
    rounds = 0
    total_pairs = n * (n - 1) // 2
    log.info(
        "GW kNN n=%d, k=%d: bound %s in %.1f s; round 0 solves %d of %d pairs",
        n, knn.n_neighbors, knn.bound, t_bound, len(todo), total_pairs,
    )  # fmt: skip
    while len(todo):
        pairs, values = gw_pair_values(heatmap_store, todo, params, client, log=log,
                                       pairs_per_task=knn.pairs_per_task,
                                       what=f"round {rounds} tasks")  # fmt: skip
        d[pairs[:, 0], pairs[:, 1]] = values
        d[pairs[:, 1], pairs[:, 0]] = values
        solved[pairs[:, 0], pairs[:, 1]] = solved[pairs[:, 1], pairs[:, 0]] = True
        if rounds >= knn.max_rounds:
            break
        rounds += 1
        nn_mask = _neighbours_of_neighbours(d, knn.n_neighbors) & ~solved
        todo = _pairs_from(np.concatenate(
            [_top(scores[0], nn_mask, knn.refine), _top(scores[0], ~solved, knn.refine)], axis=1
        ))  # fmt: skip
        log.info("GW kNN round %d: %d new pairs among neighbours of neighbours", rounds, len(todo))
    n_solved = int(np.triu(solved, 1).sum())
    info = {
        "pairs": n_solved,
        "fraction": n_solved / max(total_pairs, 1),
        "rounds": rounds,
        "seconds_bound": t_bound,
    }
    log.info("GW kNN: solved %d pairs (%.1f %% of all) in %d round(s)",
             n_solved, 100 * info["fraction"], rounds + 1)  # fmt: skip
    return d, info


def gw_pair_values(
    heatmap_store: str,
    todo: np.ndarray,
    params: GWParams,
    client: distributed.Client | None,
    *,
    log: logging.Logger | None = None,
    pairs_per_task: int = 2048,
    what: str = "tasks",
) -> tuple[np.ndarray, np.ndarray]:
    """GW values of a list of pairs of a heatmap store, as Dask tasks of ``pairs_per_task``.

    Parameters
    ----------
    heatmap_store : str
        Zarr group with a ``heatmaps`` array (n, H, W); every task reads it itself.
    todo : ndarray of shape (P, 2), int
        The pairs ``(i, j)``.
    params : GWParams
    client : distributed.Client or None
        None solves in this process.
    log : logging.Logger, optional
        Progress goes here (tasks done, pairs per second, ETA).
    pairs_per_task : int, default 2048
    what : str, default "tasks"
        What the progress lines count.

    Returns
    -------
    pairs : ndarray of shape (P, 2)
        The pairs in the order they finished.
    values : ndarray of shape (P,), float64
    """
    log = log or logger
    chunks = [todo[s : s + pairs_per_task] for s in range(0, len(todo), pairs_per_task)]
    progress = Progress(log, len(chunks), len(todo))
    results = []
    if client is None:
        for chunk in chunks:
            results.append(compute_pairs(heatmap_store, chunk, params))
            progress.update(len(chunk), what=what)
    else:
        from distributed import as_completed

        futures = client.map(
            compute_pairs, [heatmap_store] * len(chunks), chunks, [params] * len(chunks),
            retries=2, pure=False,
        )  # fmt: skip
        try:
            for future in as_completed(futures):
                results.append(future.result())
                progress.update(len(results[-1][0]), what=what)
        except BaseException:
            client.cancel(futures)
            raise
    pairs = np.concatenate([r[0] for r in results])
    values = np.concatenate([r[1] for r in results])
    return pairs, values


def knn_recall(exact: np.ndarray, sparse: np.ndarray, k: int) -> float:
    """Share of the exact k-NN edges (from a full matrix) that ``sparse`` also ranks in its k-NN.

    Both matrices are (n, n) with a zero diagonal; ``+inf`` in ``sparse`` is "not a neighbour".
    Ties are broken by index order.
    """
    return float(knn_row_recall(exact, sparse, k, np.arange(exact.shape[0])).mean())


def knn_row_recall(
    exact_rows: np.ndarray, sparse: np.ndarray, k: int, rows: np.ndarray
) -> np.ndarray:
    """Per row: the share of its exact k-NN that ``sparse`` also ranks in its k-NN.

    Parameters
    ----------
    exact_rows : ndarray of shape (R, n)
        Rows ``rows`` of the exact matrix (a sample of rows estimates the recall).
    sparse : ndarray of shape (n, n)
        ``+inf`` is "not a neighbour"; the diagonal is ignored.
    k : int
    rows : ndarray of shape (R,), int

    Returns
    -------
    ndarray of shape (R,)
        Ties are broken by index order.
    """
    rows = np.asarray(rows)
    own = np.arange(sparse.shape[1])[None, :] == rows[:, None]

    def neighbours(d: np.ndarray) -> np.ndarray:
        return np.argsort(np.where(own, np.inf, d), axis=1, kind="stable")[:, :k]

    truth, found = neighbours(exact_rows), neighbours(sparse[rows])
    return np.array([len(np.intersect1d(t, f)) / k for t, f in zip(truth, found, strict=True)])
