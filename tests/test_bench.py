from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from poisonscan import bench


def test_bench_gw_prints_one_json_line_per_epsilon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    hm = rng.random((6, 16, 16)).astype(np.float32) ** 4
    hm /= hm.sum(axis=(1, 2), keepdims=True)
    root = zarr.open_group(str(tmp_path / "explain.zarr"), mode="w")
    arrays = {
        "heatmaps": hm,
        "activations": np.zeros((6, 2), np.float32),
        "index": np.arange(6),
        "label": np.zeros(6, int),
        "prediction": np.zeros(6, int),
        "poison": np.zeros(6, bool),
    }
    for name, arr in arrays.items():
        root.create_array(name, data=arr)
    bench.main(["gw", str(tmp_path / "explain.zarr"), "--epsilons", "0,0.1", "--pairs", "3"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["epsilon"] for r in rows] == [0.0, 0.1]
    for row in rows:
        assert row["pairs"] == 3 and row["s_per_pair"] > 0
        # GW never exceeds the loss of the independent coupling by much, and is positive
        assert 0 < row["median_loss_over_independent"] <= 1.01
