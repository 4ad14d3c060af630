"""Parameters of the GW distance between heatmaps (one frozen dataclass)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from poisonscan.distances._spaces import check_space_args

__all__ = ["SOLVERS", "GWParams"]

SOLVERS = ("pot_exact", "pot_entropic", "batched", "batched_cg")
_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class GWParams:
    """Parameters of the GW discrepancy between two heatmaps.

    Attributes
    ----------
    solver : {"pot_exact", "pot_entropic", "batched", "batched_cg"}
        ``pot_exact``: POT's conditional-gradient GW (``ot.gromov.gromov_wasserstein2``),
        one pair per call, ``epsilon`` must be 0. ``pot_entropic``: POT's entropic GW
        (``entropic_gromov_wasserstein2``, projected gradient, square loss), one pair
        per call. ``batched``: our torch solver of the same entropic problem, all pairs
        of a tile in few batched calls (see :mod:`poisonscan.distances._batched_gw`);
        agrees with ``pot_entropic`` to about 1e-4 (relative) in float32.
        ``batched_cg``: our torch conditional gradient for *exact* GW, batched like
        ``batched``: POT's exact first step, then steps whose linear OT problems are
        solved entropically at ``epsilon`` (see :mod:`poisonscan.distances._batched_cg`);
        its value is the GW loss of its final plan, not an entropic loss. It uses
        ``epsilon``, ``dtype``, ``device`` and ``batch_mb``; its iteration budget is
        fixed, so ``max_iter``, ``tol``, ``rtol`` and ``inner_tol`` do not apply.
    pool : int
        Sum-pooling factor before the support is chosen (4 turns 32x32 into 8x8).
    mass : float or None
        Support: None keeps every cell of the (pooled) grid; a share in (0, 1] keeps
        the most relevant cells holding that share of the relevance.
    metric : {"euclidean", "sqeuclidean"}
        Ground metric between cell centres, scaled so that opposite corner cells of
        the pooled grid are at distance 1 (cost in [0, 1] for both metrics).
    epsilon : float
        Entropic regularisation of the entropic solvers (> 0), POT's convention: the
        Sinkhorn kernel is ``exp(-grad / epsilon)`` with the square-loss gradient
        ``grad = 2 constC - 4 C1 T C2`` on costs in [0, 1]; for ``batched_cg`` that of its
        linear OT steps (> 0). Must be 0 for ``pot_exact``.
    max_iter : int
        Maximum number of outer iterations.
    tol : float
        Outer stopping tolerance. Entropic solvers: ``||T_k - T_{k-1}||_F <= tol``
        (POT's); exact: relative and absolute change of the loss.
    rtol : float
        ``batched`` only: also stop once ``||T_k - T_{k-1}||_F <= rtol * ||T_k||_F``
        (0 disables it). float32 cannot reach ``tol=1e-9`` on large supports.
    inner_tol : float
        ``batched`` only: L1 marginal error of the final Sinkhorn solve of a pair.
    dtype : {"float32", "float64"}
        ``batched`` and ``batched_cg`` only: working precision (values are accumulated in
        float64).
    device : str
        ``batched`` and ``batched_cg`` only: torch device, ``"cpu"`` or ``"cuda"``
        (``"cuda:1"``, ...), or ``"auto"``: CUDA where the process solving the pairs (a Dask
        worker) has a GPU, else the CPU (:meth:`torch_device`).
    batch_mb : float
        ``batched`` and ``batched_cg`` only: size in MB of one (pairs, N, M) tensor of a
        batch; a tile is split into batches of at most this size (about 4 such tensors are
        alive). Small batches that fit the CPU cache were fastest on the 2-core test
        machine.

    Notes
    -----
    These defaults (POT's exact solver on an 8x8 pooled grid with the 99 %-mass
    support) are also those of ``config/config.yaml``; ``solver="batched",
    epsilon=0.005`` on the same support detected better at 1.8x the time. Measured with
    ``python -m poisonscan.bench gw --mode detect`` on 300 real GTSRB heatmaps (class 5,
    47 poisoned, SpRAy k=10, 2 clusters, smaller flagged; 2 Dask workers on a shared
    2-core VM): exact TPR 0.872 / TNR 0.881 / F1 0.695 in 168 s; batched eps 0.005 TPR
    0.872 / TNR 0.976 / F1 0.872 in 311 s; batched eps 0.05 on a 16x16 grid F1 0.864
    (euclidean, 775 s, TPR 0.809) and 0.678 (sqeuclidean, 85 s; both measured with an
    inner tolerance factor of 0.1, since reverted to 0.01). The batched solver is
    15-30x faster than POT's entropic solver on 16x16 and full grids but, at eps 0.005,
    not faster than POT's exact solver on supports of ~50 points.
    """

    solver: str = "pot_exact"
    pool: int = 4
    mass: float | None = 0.99
    metric: str = "euclidean"
    epsilon: float = 0.0
    max_iter: int = 1000
    tol: float = 1e-9
    rtol: float = 1e-4
    inner_tol: float = 1e-6
    dtype: str = "float32"
    device: str = "auto"
    batch_mb: float = 8.0

    def __post_init__(self) -> None:
        check_space_args(self.pool, self.mass, self.metric)
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0.0):
            raise ValueError(f"epsilon must be >= 0, got {self.epsilon!r}")
        if self.solver == "pot_exact" and self.epsilon != 0.0:
            raise ValueError(
                f"epsilon={self.epsilon} is not used by solver 'pot_exact' (exact GW); set "
                "epsilon to 0, or choose solver 'pot_entropic' or 'batched' for entropic GW"
            )
        if self.solver != "pot_exact" and self.epsilon == 0.0:
            raise ValueError(
                f"solver {self.solver!r} needs epsilon > 0; use solver 'pot_exact' for exact GW"
            )
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int):
            raise ValueError(f"max_iter must be an integer, got {self.max_iter!r}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter!r}")
        for name in ("tol", "inner_tol", "batch_mb"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.rtol >= 0.0:
            raise ValueError(f"rtol must be >= 0, got {self.rtol!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if not isinstance(self.device, str) or not re.fullmatch(
            r"auto|cpu|cuda(:\d+)?", self.device
        ):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:k]', got {self.device!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> GWParams:
        """Build from a plain dict; missing keys take the defaults.

        Raises
        ------
        ValueError
            If ``config`` has keys that are not fields, or a value is invalid.
        """
        config = dict(config or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"unknown GW parameter(s) {unknown}; allowed: {sorted(names)}")
        if config.get("mass") is not None:
            config["mass"] = float(config["mass"])
        for key in ("epsilon", "tol", "rtol", "inner_tol", "batch_mb"):
            if key in config:
                config[key] = float(config[key])
        return cls(**config)

    def torch_device(self) -> str:
        """The torch device of the batched solvers: ``device``, with ``"auto"`` resolved to
        ``"cuda"`` when this process sees a GPU, else ``"cpu"``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a JSON-serialisable dict."""
        return dataclasses.asdict(self)
