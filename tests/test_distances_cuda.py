"""The batched GW solvers on CUDA (float32, batched): the CPU code path, the same values.

Skipped without a CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blob_heatmaps

from poisonscan.distances import GWParams, prepare_spaces, solve_pairs

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SUPPORT = {"pool": 2, "mass": 0.99, "metric": "euclidean"}  # 8x8 grid, 99 % of the mass


@pytest.mark.parametrize(("solver", "eps"), [("batched_cg", 0.005), ("batched", 0.01)])
def test_cuda_values_equal_the_cpu_values(solver: str, eps: float) -> None:
    hm = np.concatenate([blob_heatmaps(5, seed=1), blob_heatmaps(3, seed=2, patch=0.4)])
    pairs = [(i, j) for i in range(len(hm)) for j in range(i + 1, len(hm))]
    values = {}
    for device in ("cpu", "cuda"):
        params = GWParams(solver=solver, epsilon=eps, dtype="float32", device=device,
                          **SUPPORT)  # fmt: skip
        spaces = prepare_spaces(hm, params)
        values[device] = solve_pairs(spaces, spaces, pairs, params)
    assert np.isfinite(values["cuda"]).all()
    np.testing.assert_allclose(values["cuda"], values["cpu"], rtol=2e-3)


def test_cuda_batched_cg_ranks_like_pot_exact() -> None:
    from scipy.stats import spearmanr

    hm = np.concatenate([blob_heatmaps(6, seed=1), blob_heatmaps(4, seed=2, patch=0.4)])
    pairs = [(i, j) for i in range(len(hm)) for j in range(i + 1, len(hm))]
    exact_p = GWParams(solver="pot_exact", **SUPPORT)
    exact_s = prepare_spaces(hm, exact_p)
    exact = solve_pairs(exact_s, exact_s, pairs, exact_p)
    params = GWParams(solver="batched_cg", epsilon=0.005, device="cuda", **SUPPORT)
    spaces = prepare_spaces(hm, params)
    assert spearmanr(solve_pairs(spaces, spaces, pairs, params), exact)[0] >= 0.98
