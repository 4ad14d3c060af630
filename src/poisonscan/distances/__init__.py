"""Euclidean and Gromov-Wasserstein distance matrices between relevance heatmaps.

A heatmap is read as a *metric measure space*: its cells are points in the
plane, the (non-negative, renormalised) relevance is a probability measure on
them, and the cost between two cells is their normalised spatial distance
(:func:`heatmap_to_mm_space`). The Gromov-Wasserstein (GW) discrepancy compares
two such spaces without aligning them, so it is invariant to translations,
rotations and mirror images of the relevance pattern and sensitive to its *shape*.

Solvers (``GWParams.solver``, registry :data:`GW_SOLVERS`): POT's exact
conditional gradient, POT's entropic GW, our batched torch solver of the same
entropic problem (:func:`batched_entropic_gw`: many pairs per call, low-rank
squared-Euclidean costs, log-stabilised warm-started Sinkhorn, CPU or CUDA), and
``batched_cg``, POT's exact conditional gradient batched in torch (an exact first
step, entropic linear steps, the best feasible plan's loss; ``_batched_cg``).

The GW matrix of many heatmaps is computed tile by tile on a Dask cluster
(:func:`gw_distance_matrix`); every tile is written to a zarr *distance store* as
soon as it is finished, which makes the computation resumable. The sparse mode
(:func:`gw_knn_matrix`) solves only the pairs needed for a kNN graph and marks the
others ``+inf``; :func:`gw_knn_matrices` does so for many groups (every class) at once.

Modules (private; the names below are the public API):
``_spaces`` heatmap -> support, measure, costs; ``_params`` :class:`GWParams`;
``_batched_gw`` and ``_batched_cg`` the torch kernels; ``_solvers`` solver registry;
``_store`` the distance store; ``_tiles`` the tiled Dask computation; ``_knn`` the sparse mode;
``_euclidean`` the Euclidean baseline. The modules that import POT (which imports
torch) load on first use, so reading a distance store or computing Euclidean
distances loads neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from poisonscan.distances._batched_gw import BatchedGWOptions, batched_entropic_gw
from poisonscan.distances._euclidean import euclidean_distances
from poisonscan.distances._params import SOLVERS, GWParams
from poisonscan.distances._spaces import MetricMeasureSpace, heatmap_support, heatmap_to_mm_space
from poisonscan.distances._store import read_distance_store, tile_plan, write_distance_store

if TYPE_CHECKING:
    from poisonscan.distances._knn import (
        BOUNDS,
        KNNParams,
        distance_quantiles,
        gw_knn_matrices,
        gw_knn_matrix,
        gw_pair_values,
        knn_columns,
        knn_recall,
        knn_row_recall,
        second_lower_bound,
    )
    from poisonscan.distances._solvers import (
        GW_SOLVERS,
        gromov_wasserstein,
        pot_pair,
        prepare_spaces,
        solve_pairs,
    )
    from poisonscan.distances._tiles import compute_tile, gw_distance_matrix

__all__ = [
    "BOUNDS",
    "GW_SOLVERS",
    "SOLVERS",
    "BatchedGWOptions",
    "GWParams",
    "KNNParams",
    "MetricMeasureSpace",
    "batched_entropic_gw",
    "compute_tile",
    "distance_quantiles",
    "euclidean_distances",
    "gromov_wasserstein",
    "gw_distance_matrix",
    "gw_knn_matrices",
    "gw_knn_matrix",
    "gw_pair_values",
    "heatmap_support",
    "heatmap_to_mm_space",
    "knn_columns",
    "knn_recall",
    "knn_row_recall",
    "pot_pair",
    "prepare_spaces",
    "read_distance_store",
    "second_lower_bound",
    "solve_pairs",
    "tile_plan",
    "write_distance_store",
]

_LAZY = {
    **dict.fromkeys(("BOUNDS", "KNNParams", "distance_quantiles", "gw_knn_matrices",
                     "gw_knn_matrix", "gw_pair_values", "knn_columns", "knn_recall",
                     "knn_row_recall", "second_lower_bound"), "_knn"),
    **dict.fromkeys(("GW_SOLVERS", "gromov_wasserstein", "pot_pair", "prepare_spaces",
                     "solve_pairs"), "_solvers"),
    **dict.fromkeys(("compute_tile", "gw_distance_matrix"), "_tiles"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
