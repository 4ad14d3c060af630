"""GW solvers behind one interface: prepare one space per heatmap, solve a list of pairs.

Registry :data:`GW_SOLVERS` maps ``GWParams.solver`` to a :class:`GWSolver`:

``pot_exact``
    POT's conditional gradient (``ot.gromov.gromov_wasserstein2``), one pair per call.
``pot_entropic``
    POT's entropic projected gradient (``entropic_gromov_wasserstein2``), one pair per call.
``batched``
    Our torch solver of the same entropic problem (:mod:`._batched_gw`): the pairs are
    sorted by support size and cut into batches of at most ``batch_mb`` MB per plan
    tensor, padded with zero-mass points.
``batched_cg``
    Our torch conditional gradient for exact GW (:mod:`._batched_cg`): POT's exact first
    step, then Frank-Wolfe steps whose linear OT problems are solved entropically at
    ``epsilon``; batched like ``batched``. Its iteration budget is fixed
    (:class:`BatchedCGOptions`); ``max_iter``, ``tol``, ``rtol`` and ``inner_tol`` do not
    apply to it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import ot

from poisonscan.distances._batched_cg import BatchedCGOptions, batched_cg_gw
from poisonscan.distances._batched_gw import (
    BatchedGWOptions,
    batched_entropic_gw,
    square_cost_vector,
)
from poisonscan.distances._params import GWParams
from poisonscan.distances._spaces import MetricMeasureSpace, heatmap_support, heatmap_to_mm_space

__all__ = [
    "GW_SOLVERS",
    "CostCloud",
    "GWSolver",
    "PointCloud",
    "gromov_wasserstein",
    "solve_pairs",
]

logger = logging.getLogger("poisonscan.distances")

# POT messages that mean the Sinkhorn iterations broke down numerically.
_POT_FAILURES = ("numerical errors", "failed to produce a transport plan")


class PointCloud(NamedTuple):
    """A heatmap's support as the batched solver needs it.

    Attributes
    ----------
    coords : ndarray of shape (m, 2), float64
        Scaled cell centres (see :func:`heatmap_support`).
    weights : ndarray of shape (m,), float64
    sq : ndarray of shape (m,), float64
        ``(C * C) @ weights``, needed once per heatmap for the GW value.
    """

    coords: np.ndarray
    weights: np.ndarray
    sq: np.ndarray


class CostCloud(NamedTuple):
    """A heatmap's support as ``batched_cg`` needs it.

    Attributes
    ----------
    cost : ndarray of shape (m, m), float64
        Normalised cost matrix of the support cells (see :func:`heatmap_to_mm_space`).
    weights : ndarray of shape (m,), float64
    sq : ndarray of shape (m,), float64
        ``(C * C) @ weights``.
    """

    cost: np.ndarray
    weights: np.ndarray
    sq: np.ndarray


@dataclass(frozen=True)
class GWSolver:
    """A GW solver: ``prepare(heatmap, params)`` once per heatmap, ``solve`` per list of pairs."""

    prepare: Callable[[np.ndarray, GWParams], Any]
    solve: Callable[[Sequence[Any], Sequence[Any], Sequence[tuple[int, int]], GWParams], Any]


def _prepare_pot(heatmap: np.ndarray, params: GWParams) -> MetricMeasureSpace:
    return heatmap_to_mm_space(heatmap, pool=params.pool, mass=params.mass, metric=params.metric)


def _prepare_cloud(heatmap: np.ndarray, params: GWParams) -> PointCloud:
    coords, weights = heatmap_support(heatmap, params.pool, params.mass)
    # Zero-mass cells change neither the plans nor the value; dropping them shrinks the
    # problem (16x16 grids of real GTSRB heatmaps: 42 of 256 cells, 1.4x faster).
    keep = weights > 0
    coords, weights = coords[keep], weights[keep]
    return PointCloud(coords, weights, square_cost_vector(coords, weights, params.metric))


def _prepare_cost_cloud(heatmap: np.ndarray, params: GWParams) -> CostCloud:
    space = heatmap_to_mm_space(heatmap, pool=params.pool, mass=params.mass,
                                metric=params.metric)  # fmt: skip
    # zero-mass cells change neither the plans nor the value (see _prepare_cloud)
    keep = space.weights > 0
    cost = np.ascontiguousarray(space.cost[np.ix_(keep, keep)])
    weights = space.weights[keep]
    return CostCloud(cost, weights, (cost * cost) @ weights)


def pot_pair(
    s1: MetricMeasureSpace,
    s2: MetricMeasureSpace,
    params: GWParams,
    pair: tuple[int, int] | None = None,
) -> float:
    """GW loss of one pair with POT's exact or entropic solver (square loss).

    Raises
    ------
    FloatingPointError
        If POT returns NaN/inf or reports a numerical breakdown.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if params.solver == "pot_exact":
            value = ot.gromov.gromov_wasserstein2(
                s1.cost, s2.cost, s1.weights, s2.weights, loss_fun="square_loss",
                symmetric=True, max_iter=params.max_iter, tol_rel=params.tol, tol_abs=params.tol,
            )  # fmt: skip
        else:
            value = ot.gromov.entropic_gromov_wasserstein2(
                s1.cost, s2.cost, s1.weights, s2.weights, loss_fun="square_loss",
                epsilon=params.epsilon, symmetric=True, max_iter=params.max_iter, tol=params.tol,
            )  # fmt: skip
    value = float(value)
    messages = [str(w.message) for w in caught]
    failures = [m for m in messages if any(f in m for f in _POT_FAILURES)]
    for message in messages:
        logger.debug("POT warning for pair %s: %s", pair, message)
    if not math.isfinite(value) or failures:
        what = f"pair {pair}" if pair is not None else "this pair"
        raise FloatingPointError(
            f"GW solver failed for {what} (value {value}, solver={params.solver}, "
            f"epsilon={params.epsilon}{', POT: ' + failures[0] if failures else ''}); "
            "increase epsilon or use solver 'pot_exact'"
        )
    # The loss is a sum of squares; round-off can leave a tiny negative value.
    return max(value, 0.0)


def _solve_pot(
    a: Sequence[MetricMeasureSpace],
    b: Sequence[MetricMeasureSpace],
    pairs: Sequence[tuple[int, int]],
    params: GWParams,
    labels: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    labels = labels if labels is not None else pairs
    return np.array(
        [
            pot_pair(a[i], b[j], params, pair=tuple(lab))
            for (i, j), lab in zip(pairs, labels, strict=True)
        ],
        dtype=np.float64,
    )


def batches_by_size(sizes: Sequence[tuple[int, int]], budget: float) -> list[list[int]]:
    """Group pair indices into batches whose padded size ``count * max_n * max_m <= budget``.

    Pairs are sorted by ``n * m`` (largest first), so pairs of similar size share a batch
    and little padding is needed; every batch holds at least one pair.
    """
    order = sorted(range(len(sizes)), key=lambda k: (sizes[k][0] * sizes[k][1], k), reverse=True)
    batches: list[list[int]] = []
    cur: list[int] = []
    max_n = max_m = 0
    for k in order:
        n, m = sizes[k]
        nn, mm = max(max_n, n), max(max_m, m)
        if cur and (len(cur) + 1) * nn * mm > budget:
            batches.append(cur)
            cur, nn, mm = [], n, m
        cur.append(k)
        max_n, max_m = nn, mm
    if cur:
        batches.append(cur)
    return batches


def _solve_batched(
    a: Sequence[PointCloud],
    b: Sequence[PointCloud],
    pairs: Sequence[tuple[int, int]],
    params: GWParams,
    labels: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    labels = labels if labels is not None else pairs
    options = BatchedGWOptions(
        epsilon=params.epsilon, max_iter=params.max_iter, tol=params.tol, rtol=params.rtol,
        inner_tol=params.inner_tol, dtype=params.dtype, device=params.torch_device(),
    )  # fmt: skip
    itemsize = 4 if params.dtype == "float32" else 8
    sizes = [(a[i].weights.size, b[j].weights.size) for i, j in pairs]
    values = np.empty(len(pairs))
    for batch in batches_by_size(sizes, params.batch_mb * 1e6 / itemsize):
        n = max(sizes[k][0] for k in batch)
        m = max(sizes[k][1] for k in batch)
        x1, p1, c1 = _pack([a[pairs[k][0]] for k in batch], n)
        x2, p2, c2 = _pack([b[pairs[k][1]] for k in batch], m)
        try:
            values[batch] = batched_entropic_gw(
                x1, p1, x2, p2, options, metric=params.metric, c1p=c1, c2q=c2
            )
        except FloatingPointError as err:
            which = [tuple(labels[k]) for k in batch]
            raise FloatingPointError(f"{err} (batch of pairs {which[:8]}...)") from err
    return np.maximum(values, 0.0)


def _solve_batched_cg(
    a: Sequence[CostCloud],
    b: Sequence[CostCloud],
    pairs: Sequence[tuple[int, int]],
    params: GWParams,
    labels: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    labels = labels if labels is not None else pairs
    options = BatchedCGOptions(
        epsilon=params.epsilon, dtype=params.dtype, device=params.torch_device()
    )
    itemsize = 4 if params.dtype == "float32" else 8
    values = np.empty(len(pairs))
    # Its budget of Sinkhorn iterations makes the result depend a little on the order of
    # the two spaces: solve every pair in a canonical order, so that GW(a, b) == GW(b, a).
    swap = [_order_key(a[i]) > _order_key(b[j]) for i, j in pairs]
    firsts = [b[j] if s else a[i] for (i, j), s in zip(pairs, swap, strict=True)]
    seconds = [a[i] if s else b[j] for (i, j), s in zip(pairs, swap, strict=True)]
    # Each pair is padded to a shape that depends on its own supports only, and batched with
    # pairs of that shape: padded to its batch's largest support, float32 rounding made some
    # pairs take another path to another local minimum (relative differences up to 0.31 on
    # 599 real GTSRB pairs solved in other batches; 4e-6 with a fixed shape).
    sizes = [(_padded(x.weights.size), _padded(y.weights.size))
             for x, y in zip(firsts, seconds, strict=True)]  # fmt: skip
    shapes: dict[tuple[int, int], list[int]] = {}
    for k, shape in enumerate(sizes):
        shapes.setdefault(shape, []).append(k)
    batches = [
        [members[i] for i in batch]
        for shape, members in shapes.items()
        for batch in batches_by_size([shape] * len(members), params.batch_mb * 1e6 / itemsize)
    ]
    for batch in batches:
        n, m = sizes[batch[0]]
        c1, p1, s1 = _pack_costs([firsts[k] for k in batch], n)
        c2, p2, s2 = _pack_costs([seconds[k] for k in batch], m)
        try:
            values[batch] = batched_cg_gw(c1, p1, c2, p2, options, c1p=s1, c2q=s2)
        except FloatingPointError as err:
            which = [tuple(labels[k]) for k in batch]
            raise FloatingPointError(f"{err} (batch of pairs {which[:8]}...)") from err
    return np.maximum(values, 0.0)


def _padded(size: int, step: int = 8) -> int:
    """A support of ``size`` points padded to the next multiple of ``step``."""
    return -(-size // step) * step


def _order_key(cloud: CostCloud) -> tuple[int, bytes]:
    return cloud.weights.size, cloud.weights.tobytes()


def _pack_costs(clouds: Sequence[CostCloud], size: int) -> tuple[np.ndarray, ...]:
    """Stack clouds into (B, size, size), (B, size), (B, size), padding with zero mass."""
    cost = np.zeros((len(clouds), size, size))
    p = np.zeros((len(clouds), size))
    sq = np.zeros((len(clouds), size))
    for k, c in enumerate(clouds):
        m = c.weights.size
        cost[k, :m, :m], p[k, :m], sq[k, :m] = c.cost, c.weights, c.sq
    return cost, p, sq


def _pack(clouds: Sequence[PointCloud], size: int) -> tuple[np.ndarray, ...]:
    """Stack clouds into (B, size, 2), (B, size), (B, size), padding with zero mass."""
    x = np.zeros((len(clouds), size, 2))
    p = np.zeros((len(clouds), size))
    sq = np.zeros((len(clouds), size))
    for k, c in enumerate(clouds):
        m = c.weights.size
        x[k, :m], p[k, :m], sq[k, :m] = c.coords, c.weights, c.sq
    return x, p, sq


GW_SOLVERS: dict[str, GWSolver] = {
    "pot_exact": GWSolver(_prepare_pot, _solve_pot),
    "pot_entropic": GWSolver(_prepare_pot, _solve_pot),
    "batched": GWSolver(_prepare_cloud, _solve_batched),
    "batched_cg": GWSolver(_prepare_cost_cloud, _solve_batched_cg),
}


def prepare_spaces(heatmaps: Sequence[np.ndarray] | np.ndarray, params: GWParams) -> list[Any]:
    """One prepared space per heatmap for ``params.solver``."""
    prepare = GW_SOLVERS[params.solver].prepare
    return [prepare(h, params) for h in heatmaps]


def solve_pairs(
    a: Sequence[Any],
    b: Sequence[Any],
    pairs: Sequence[tuple[int, int]],
    params: GWParams,
    labels: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """GW losses of ``(a[i], b[j])`` for every ``(i, j)`` in ``pairs``.

    Parameters
    ----------
    a, b : sequences of prepared spaces (:func:`prepare_spaces`)
    pairs : sequence of (i, j)
    params : GWParams
    labels : sequence of (int, int), optional
        Global pair names used in error messages (default: ``pairs``).

    Returns
    -------
    ndarray of shape (len(pairs),), float64, non-negative
    """
    if not pairs:
        return np.zeros(0)
    return GW_SOLVERS[params.solver].solve(a, b, pairs, params, labels)


def gromov_wasserstein(
    h1: np.ndarray, h2: np.ndarray, params: GWParams | None = None, **kwargs: Any
) -> float:
    """Gromov-Wasserstein loss between two heatmaps.

    Both heatmaps are turned into metric measure spaces (see
    :func:`heatmap_to_mm_space`); the loss is
    ``sum_ijkl (C1[i,k] - C2[j,l])**2 T[i,j] T[k,l]`` (square loss) at the plan ``T``
    found by the chosen solver: a local minimum of it (``pot_exact``) or the plan of
    the entropic problem (``pot_entropic``, ``batched``; the entropy term is not
    included). Mémoli's distance would be ``0.5 * sqrt(loss)``; the loss is returned.

    Parameters
    ----------
    h1, h2 : ndarray of shape (H, W)
        Heatmaps (may differ in shape if both are divisible by ``pool``).
    params : GWParams, optional
        Default ``GWParams()`` updated by ``kwargs``.
    **kwargs
        Fields of :class:`GWParams`, e.g. ``solver="pot_entropic", epsilon=0.01``.

    Returns
    -------
    float
        The non-negative GW loss.

    Raises
    ------
    FloatingPointError
        If the solver returns NaN/inf or POT reports a numerical breakdown.
    """
    base = (params or GWParams()).to_dict()
    params = GWParams.from_config({**base, **kwargs})
    spaces = prepare_spaces([h1, h2], params)
    return float(solve_pairs(spaces[:1], spaces[1:], [(0, 0)], params, labels=[(0, 1)])[0])
