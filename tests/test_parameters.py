"""Performance knobs: out of the rules' params, into their resources, back into the sections."""

from __future__ import annotations

import yaml
from conftest import REPO

from poisonscan.config import load_schema, validate_config
from poisonscan.parameters import (
    PERFORMANCE,
    merge_performance,
    performance_resources,
    performance_values,
    without_performance,
)


def _config() -> dict:
    schema = load_schema(REPO / "config" / "schema.yaml")
    return validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), schema)


def test_performance_knobs_travel_as_resources_and_come_back() -> None:
    cfg = _config()
    gw = cfg["distances"]["gw"]
    gw["batch_mb"] = 1.5  # Snakemake would round a float resource: it travels as a string
    params = without_performance(gw, "distances.gw")
    assert "tile" not in params and "batch_mb" not in params
    assert "pairs_per_task" not in params["knn"] and params["knn"]["n_neighbors"] == 10
    assert params["solver"] == gw["solver"] and "tile" in gw  # the config is untouched
    resources = performance_resources(cfg, "distances.gw")
    assert resources == {"gw_tile": gw["tile"], "gw_batch_mb": "1.5",
                         "gw_pairs_per_task": gw["knn"]["pairs_per_task"]}  # fmt: skip
    values = performance_values({**resources, "mem_mb": 6000, "tmpdir": "/tmp"})
    assert values == {"distances.gw.tile": gw["tile"], "distances.gw.batch_mb": 1.5,
                      "distances.gw.knn.pairs_per_task": gw["knn"]["pairs_per_task"]}  # fmt: skip
    assert merge_performance(params, "distances.gw", values) == gw
    assert performance_resources(cfg, "explain") == {"explain_batch_size": 128}
    assert merge_performance({"a": 1}, "explain", values) == {"a": 1}  # other sections' knobs


def test_every_performance_knob_is_a_config_key_with_a_schema_default() -> None:
    schema = load_schema(REPO / "config" / "schema.yaml")
    for key in PERFORMANCE:
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        assert "default" in node, key
