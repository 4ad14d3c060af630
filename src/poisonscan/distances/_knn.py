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

import functools
import json
import logging
import math
import os
import time
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
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
from poisonscan.rulelog import PROGRESS
from poisonscan.storage import atomic_path

if TYPE_CHECKING:
    import distributed

__all__ = [
    "BOUNDS",
    "KNNParams",
    "candidate_scores",
    "compute_pairs",
    "distance_quantiles",
    "gw_knn_matrices",
    "gw_knn_matrix",
    "gw_pair_values",
    "knn_columns",
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
        Score that ranks partners (later rounds rank by the first one). On 4 GTSRB classes
        (7,918 heatmaps, 10 rounds) ``"slb"`` found 0.897 of the exact 10-NN edges and
        ``"slb+euclidean"`` 0.927 (RESULTS.md, GW on every class).
    max_rounds : int
        Neighbour-of-neighbour rounds after round 0 (0: candidates only). With the
        defaults, 15 rounds found 0.973 of the exact 10-NN edges of those 4 classes,
        solving 21.6 % of their pairs.
    quantiles : int
        Midpoints of the quantile functions in the SLB.
    pairs_per_task : int
        GW pairs per Dask task.
    """

    n_neighbors: int = 10
    candidates: int = 20
    refine: int = 10
    bound: str = "slb+euclidean"
    max_rounds: int = 15
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

    Returns ``(pairs, values)``.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    heatmaps = zarr.open_group(heatmap_store, mode="r")["heatmaps"]
    checksums = heatmaps.attrs.get("chunk_crc32c")
    if checksums:
        spaces = _group_spaces(heatmap_store, json.dumps(checksums, sort_keys=True), params)
    else:  # an unsealed group: nothing tells whether it changed, so nothing is kept
        spaces = prepare_spaces(heatmaps[...], params)
    values = solve_pairs(spaces, spaces, [tuple(p) for p in pairs], params)
    return pairs, values


@functools.lru_cache(maxsize=4)
def _group_spaces(heatmap_store: str, checksums: str, params: GWParams) -> list[Any]:
    """The prepared spaces of every heatmap of a sealed group, kept by each worker process.

    Preparing a space (support, costs) took about as long as solving the ~1.5 pairs a
    task has per heatmap (0.6 ms per heatmap on the 8x8 grid at 99 % of the mass), so the
    tasks of a group share them; the tasks run largest group first, hence few groups at a
    time. ``checksums`` (the group's recorded chunk checksums) is part of the key, so a
    long-lived worker never serves the spaces of a store since rewritten at the same path.
    """
    heatmaps = zarr.open_group(heatmap_store, mode="r")["heatmaps"][...]
    return prepare_spaces(heatmaps, params)


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


class _Search:
    """NN-descent state of one heatmap group: candidate scores, solved values, rounds."""

    def __init__(self, group: str, params: GWParams, knn: KNNParams) -> None:
        import time

        self.group, self.knn = group, knn
        n = n_heatmaps(group)
        # a group smaller than k + 1 searches the k it has (all its pairs)
        self.k = min(knn.n_neighbors, n - 1)
        t0 = time.perf_counter()
        heatmaps = zarr.open_group(group, mode="r")["heatmaps"][...]
        self.scores = candidate_scores(heatmaps, params, knn)
        self.seconds_bound = time.perf_counter() - t0
        self.d = np.full((n, n), np.inf)
        np.fill_diagonal(self.d, 0.0)
        self.solved = np.eye(n, dtype=bool)
        self.rounds = 0
        self.todo = _pairs_from(
            np.concatenate([_top(s, ~self.solved, knn.candidates) for s in self.scores], axis=1)
        )

    def add(self, pairs: np.ndarray, values: np.ndarray) -> None:
        self.d[pairs[:, 0], pairs[:, 1]] = self.d[pairs[:, 1], pairs[:, 0]] = values
        self.solved[pairs[:, 0], pairs[:, 1]] = self.solved[pairs[:, 1], pairs[:, 0]] = True

    def advance(self) -> None:
        """The next round's pairs (none once ``max_rounds`` rounds are done)."""
        if self.rounds >= self.knn.max_rounds or self.k < 1:
            self.todo = np.zeros((0, 2), dtype=np.int64)
            return
        self.rounds += 1
        nn_mask = _neighbours_of_neighbours(self.d, self.k) & ~self.solved
        self.todo = _pairs_from(np.concatenate(
            [_top(self.scores[0], nn_mask, self.knn.refine),
             _top(self.scores[0], ~self.solved, self.knn.refine)], axis=1,
        ))  # fmt: skip

    def info(self) -> dict[str, Any]:
        n = self.d.shape[0]
        n_solved = int(np.triu(self.solved, 1).sum())
        total = n * (n - 1) // 2
        return {"pairs": n_solved, "fraction": n_solved / max(total, 1),
                "rounds": self.rounds, "seconds_bound": self.seconds_bound}  # fmt: skip


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
    heatmap_store = str(heatmap_store)
    n = n_heatmaps(heatmap_store, log or logger)  # warns about empty heatmaps
    if not 1 <= knn.n_neighbors < max(n, 2):
        raise ValueError(f"knn.n_neighbors must lie in [1, {n - 1}] for {n} heatmaps")
    return gw_knn_matrices({0: heatmap_store}, params, knn, client, log)[0]


def gw_knn_matrices(
    groups: Mapping[Hashable, str],
    params: GWParams,
    knn: KNNParams,
    client: distributed.Client | None = None,
    log: logging.Logger | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> dict[Hashable, tuple[np.ndarray, dict[str, Any]]]:
    """Sparse GW kNN matrices of several heatmap groups (e.g. every class) in one computation.

    Every group searches on its own (see the module docstring for the rounds), its pairs
    cut into Dask tasks of ``knn.pairs_per_task`` pairs, larger groups' tasks first: as
    soon as the last task of a group's round is in, the group advances and submits its
    next round while the workers go on with the other groups' tasks.

    Parameters
    ----------
    groups : mapping
        Key (e.g. the class) -> path of a zarr group with ``heatmaps`` (n, H, W). A group
        of at most ``knn.n_neighbors`` heatmaps gets all its pairs.
    params : GWParams
    knn : KNNParams
    client : distributed.Client, optional
        None solves in this process.
    log : logging.Logger, optional
    resume : path, optional
        Folder for the results of finished tasks (one ``.npy`` file each, written
        atomically). A rerun with the same folder takes them instead of solving them again:
        the pairs of each round follow from the previous rounds' values, so a resumed
        computation asks for the same tasks. The caller removes the folder when it no
        longer needs it, and must not reuse it for other heatmaps or parameters.

    Returns
    -------
    dict
        Key -> ``(distances, info)`` as :func:`gw_knn_matrix` returns them.
    """
    log = log or logger
    searches = {key: _Search(str(group), params, knn) for key, group in groups.items()}
    folder = Path(resume) if resume is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    total = sum(s.d.shape[0] * (s.d.shape[0] - 1) // 2 for s in searches.values())
    log.info("GW kNN of %d group(s), %d heatmaps, k=%d, bound %s in %.1f s",
             len(searches), sum(s.d.shape[0] for s in searches.values()), knn.n_neighbors,
             knn.bound, sum(s.seconds_bound for s in searches.values()))  # fmt: skip
    _Rounds(searches, params, knn, client, folder, log).run()
    out = {key: (s.d, s.info()) for key, s in searches.items()}
    solved = sum(info["pairs"] for _, info in out.values())
    log.info("GW kNN: solved %d pairs (%.2f %% of all)", solved, 100 * solved / max(total, 1))
    return out


def _task_file(folder: Path, key: Hashable, rounds: int, chunk: int) -> Path:
    return folder / f"{key}-r{rounds}-{chunk}.npy"


class _Rounds:
    """Runs the rounds of every group, each group at its own pace.

    Once the last task of a group's round is in, that group advances and submits its next
    round while the workers go on with the other groups' tasks: no group waits for the
    others' rounds (a barrier per round left both workers idle while 43 GTSRB classes
    advanced, and while the last tasks of each round ran). Larger groups' tasks go first.
    With a ``folder``, every finished task is kept there and a rerun takes it.
    """

    def __init__(
        self,
        searches: Mapping[Hashable, _Search],
        params: GWParams,
        knn: KNNParams,
        client: distributed.Client | None,
        folder: Path | None,
        log: logging.Logger,
    ) -> None:
        self.searches, self.params, self.knn = searches, params, knn
        self.client, self.folder, self.log = client, folder, log
        self.outstanding: dict[Hashable, int] = {}
        self.ready: list[Hashable] = []  # groups whose round is complete
        self.futures: dict[Any, tuple[Hashable, int, int]] = {}
        self.pending: Any = None  # distributed.as_completed of the futures
        self.rounds_done = self.pairs = self.taken = 0
        self.start = self.last_log = time.perf_counter()

    def run(self) -> None:
        if self.client is not None:
            from distributed import as_completed

            self.pending = as_completed()
        try:
            for key in sorted(self.searches, key=lambda k: -len(self.searches[k].todo)):
                if len(self.searches[key].todo):
                    self._submit(key)
            while True:
                while self.ready:
                    key = self.ready.pop()
                    self.searches[key].advance()
                    if len(self.searches[key].todo):
                        self._submit(key)
                if self.pending is None or self.pending.is_empty():
                    break
                future = next(self.pending)
                key, rounds, chunk = self.futures.pop(future)
                pairs, values = future.result()
                self._finished(key, rounds, chunk, pairs, values)
        except BaseException:
            if self.client is not None:
                self.client.cancel(list(self.futures))
            raise
        if self.taken:
            self.log.info("GW kNN: %d task(s) taken from %s", self.taken, self.folder)

    def _submit(self, key: Hashable) -> None:
        """Submit (or take from the folder, or solve here) the tasks of the group's round."""
        search = self.searches[key]
        size, rounds = self.knn.pairs_per_task, search.rounds
        chunks = [search.todo[a : a + size] for a in range(0, len(search.todo), size)]
        self.outstanding[key] = len(chunks)
        for chunk, pairs in enumerate(chunks):
            found = self._stored(key, rounds, chunk, pairs)
            if found is not None:
                self.taken += 1
                self._finished(key, rounds, chunk, pairs, found, keep=False)
            elif self.client is None:
                _, values = compute_pairs(search.group, pairs, self.params)
                self._finished(key, rounds, chunk, pairs, values)
            else:
                future = self.client.submit(compute_pairs, search.group, pairs, self.params,
                                            retries=2, pure=False,
                                            priority=search.d.shape[0])  # fmt: skip
                self.futures[future] = (key, rounds, chunk)
                self.pending.add(future)

    def _stored(self, key: Hashable, rounds: int, chunk: int, pairs: np.ndarray) -> Any:
        """The values of a task kept in the folder by an earlier run, or None."""
        if (
            self.folder is None
            or not (path := _task_file(self.folder, key, rounds, chunk)).exists()
        ):
            return None
        try:
            found = np.load(path)
        except (OSError, ValueError):  # unreadable: solved again and rewritten
            return None
        if found.shape == (len(pairs), 3) and np.array_equal(found[:, :2], pairs):
            return found[:, 2]
        return None

    def _finished(
        self, key: Hashable, rounds: int, chunk: int, pairs: np.ndarray, values: np.ndarray,
        keep: bool = True,
    ) -> None:  # fmt: skip
        self.searches[key].add(pairs, values)
        if keep:
            self.pairs += len(pairs)
            if self.folder is not None:
                path = _task_file(self.folder, key, rounds, chunk)
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.save(f, np.column_stack([pairs, values]))
        self.outstanding[key] -= 1
        if self.outstanding[key] == 0:
            self.ready.append(key)
            self.rounds_done += 1
        now = time.perf_counter()
        if now - self.last_log >= 10.0:
            most = len(self.searches) * (self.knn.max_rounds + 1)
            self.log.info("GW kNN: %d of at most %d group rounds done, %d pairs solved, "
                          "pairs/s %.1f", self.rounds_done, most, self.pairs,
                          self.pairs / (now - self.start), extra=PROGRESS)  # fmt: skip
            self.last_log = now


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
    truth, found = knn_columns(exact_rows, k, rows), knn_columns(sparse[rows], k, rows)
    return np.array([len(np.intersect1d(t, f)) / k for t, f in zip(truth, found, strict=True)])


def knn_columns(d_rows: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    """The k nearest neighbours of each row of a distance matrix, its own column left out.

    Parameters
    ----------
    d_rows : ndarray of shape (R, n)
        Rows ``rows`` of an (n, n) distance matrix; ``+inf`` is "not a neighbour".
    k : int
    rows : ndarray of shape (R,), int

    Returns
    -------
    ndarray of shape (R, k), int
        Column indices, nearest first; ties are broken by index order.
    """
    own = np.arange(d_rows.shape[1])[None, :] == np.asarray(rows)[:, None]
    return np.argsort(np.where(own, np.inf, d_rows), axis=1, kind="stable")[:, :k]
