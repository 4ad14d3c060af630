from __future__ import annotations

import argparse
import json

import pytest
import torch
from conftest import random_dataset

from poisonscan import training
from poisonscan.bench import train as bench_train
from poisonscan.bench.train import time_training


def run_subcommand(argv: list[str]) -> list[dict]:
    """Parse and run ``bench train`` alone (``bench.main`` also imports the other modules)."""
    parser = argparse.ArgumentParser()
    bench_train.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return [json.loads(json.dumps(row)) for row in args.run(args)]  # JSON-able rows


def test_bench_train_gives_one_row_per_model() -> None:
    argv = ["train", "--model", "net", "--model", "vgg", "--n-per-class", "8"]
    rows = run_subcommand(
        [*argv, "--batches", "2", "--batch-size", "8", "--augment", "rotation,grayscale"]
    )
    assert [r["model"] for r in rows] == ["net", "vgg"]
    for row in rows:
        assert row["dataset"] == "synthetic" and row["device"] == "cpu"
        assert row["augment"] == "rotation,grayscale" and row["batches"] == 2
        assert row["n_train"] + row["n_val"] == 12 * 8 and row["n_val"] > 0
        assert row["train_images_per_s"] > 0 and row["eval_images_per_s"] > 0
        expected = (
            row["n_train"] / row["train_images_per_s"] + row["n_val"] / row["eval_images_per_s"]
        )
        assert row["s_per_epoch"] == pytest.approx(expected, rel=0.02, abs=0.06)
    assert rows[0]["n_parameters"] < rows[1]["n_parameters"]


def test_time_training_needs_a_batch() -> None:
    data = random_dataset(n_classes=2, n_train=4, n_test=1)
    with pytest.raises(ValueError, match="at least 1 timed batch, got 0"):
        time_training(data, "net", training.TrainParams(), 0, torch.device("cpu"))


def test_bench_train_times_before_and_after_in_one_run() -> None:
    argv = ["train", "--model", "net", "--n-per-class", "8", "--batches", "2"]
    rows = run_subcommand([*argv, "--batch-size", "8", "--variant", "before,after"])
    assert [(r["model"], r["variant"]) for r in rows] == [("net", "before"), ("net", "after")]
    for row in rows:
        assert row["clock"] == "wall" and row["train_images_per_s"] > 0
        assert row["s_per_epoch"] > 0 and row["batches"] == 2
    assert rows[0]["n_parameters"] == rows[1]["n_parameters"]
    rows = run_subcommand([*argv, "--clock", "cpu"])  # default: the workflow's path only
    assert [r["variant"] for r in rows] == ["after"] and rows[0]["clock"] == "cpu"
    with pytest.raises(SystemExit, match="unknown \\['fastest'\\]"):
        run_subcommand([*argv, "--variant", "after,fastest"])


def test_time_training_names_unknown_variants() -> None:
    data = random_dataset(n_classes=2, n_train=4, n_test=1)
    with pytest.raises(ValueError, match="unknown variant"):
        time_training(data, "net", training.TrainParams(), 1, torch.device("cpu"), variants=["x"])
