"""Test of the ``explain`` benchmark subcommand (tiny run)."""

from __future__ import annotations

import json

import pytest

from poisonscan import bench


def test_bench_explain_prints_one_row_per_model_and_method(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = "--model net --method saliency,lrp --images 4 --batch-size 2 --n-classes 5 --repeat 2"
    bench.main(["explain", *args.split(), "--threads", "1"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["model"], r["method"]) for r in rows] == [("net", "saliency"), ("net", "lrp")]
    assert rows[0]["composite"] is None and rows[1]["composite"] == "epsilon_alpha2_beta1"
    for row in rows:
        assert row["images"] == 4 and row["seconds"] > 0
        assert row["heatmaps_per_s"] > 0
