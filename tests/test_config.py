from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poisonscan.config import (
    ConfigError,
    check_devices,
    check_yaml,
    class_counts,
    load_schema,
    read_config,
    section,
    validate_config,
)

SCHEMA = load_schema(REPO / "config" / "schema.yaml")
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def with_change(path: str, value: Any) -> dict:
    cfg = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = cfg
    for key in parents:  # config.yaml holds only what differs from the schema
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


def test_default_config_is_valid_and_defaults_are_filled() -> None:
    cfg = validate_config(DEFAULT, SCHEMA)
    assert cfg["scenarios"]["sticker_p15_s3"]["poison_rate"] == 0.15
    minimal = validate_config(
        {"dataset": {"name": "synthetic"},
         "scenarios": {"a": {"attack": "sticker", "source": 2, "target": 5, "poison_rate": 0.1}}},
        SCHEMA,
    )  # fmt: skip
    assert minimal["training"]["epochs"] == 20
    assert minimal["scenarios"]["a"]["sticker_size"] == 3
    assert minimal["distances"]["gw"]["pool"] == 4
    assert DEFAULT["scenarios"]["sticker_p15_s3"].get("nonexistent") is None  # input untouched


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("scenarios.sticker_p15_s3.poison_rate", 0, r"poison_rate': 0 is less than or equal"),
        ("scenarios.sticker_p15_s3.poison_rate", 1.0, r"poison_rate': 1.0 is greater than or"),
        ("scenarios.sticker_p15_s3.poison_rate", "high", r"poison_rate': 'high' is not of type"),
        ("scenarios.sticker_p15_s3.source", 43, r"source': class 43 does not exist.*0\.\.11"),
        ("scenarios.sticker_p15_s3.target", 2, r"source and target are both class 2"),
        ("scenarios.sticker_p15_s3.sticker_size", 40, r"sticker_size': 40 is larger than"),
        ("scenarios.sticker_p15_s3.window", [16, 16, 40, 24], r"window'.*not a rectangle"),
        ("scenarios.sticker_p15_s3.color", "yellow", r"color': 'yellow' does not match"),
        ("training.epochs", 0, r"training.epochs': 0 is less than the minimum of 1"),
        ("training.epochs", 2.5, r"training.epochs': 2.5 is not of type 'integer'"),
        ("model.name", "resnet", r"model.name': 'resnet' is not allowed; allowed values: 'net'"),
        ("explain.composite", "magic", r"explain.composite'.*allowed values: 'epsilon'"),
        ("training.nesterov", True, r"'training'.*'nesterov' was unexpected.*known keys"),
        ("dask.cluster", "address", r"dask.address' is required"),
        ("distances.gw.pool", 5, r"distances.gw.pool': 5 does not divide"),
    ],
)
def test_bad_values_name_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(with_change(path, value), SCHEMA)


def test_missing_files_and_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        read_config(tmp_path / "nope.yaml", REPO / "config" / "schema.yaml")
    with pytest.raises(ConfigError, match="'scenarios' is a required property"):
        validate_config({"dataset": {"name": "synthetic"}}, SCHEMA)
    with pytest.raises(ConfigError, match="must be a mapping"):
        validate_config(["not", "a", "mapping"], SCHEMA)  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.floats(-2, 2) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
config_keys = st.sampled_from(
    ["dataset", "scenarios", "model", "training", "explain", "distances", "clustering", "dask"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(config_keys, json_values, max_size=6), st.data())
def test_random_configs_fail_only_with_config_errors(random: dict, data: st.DataObject) -> None:
    # merge random sections over the default, or mutate one leaf, then validate
    cfg = copy.deepcopy(DEFAULT) | random
    if data.draw(st.booleans()):
        sc = cfg.get("scenarios")
        if isinstance(sc, dict) and isinstance(sc.get("sticker_p15_s3"), dict):
            key = data.draw(st.sampled_from(sorted(sc["sticker_p15_s3"])))
            sc["sticker_p15_s3"][key] = data.draw(json_values)
    try:
        validate_config(cfg, SCHEMA)
    except ConfigError as err:
        assert str(err).startswith("config key") or "config must be" in str(err)


def test_gtsrb_dataset_needs_an_existing_path_and_has_43_classes(tmp_path: Path) -> None:
    gtsrb = with_change("dataset", {"name": "gtsrb"})
    with pytest.raises(ConfigError, match="'path' is a required property"):
        validate_config(gtsrb, SCHEMA)
    missing = with_change("dataset", {"name": "gtsrb", "path": str(tmp_path / "gtsrb32.npz")})
    with pytest.raises(ConfigError, match=r"dataset.path': .*gtsrb32.npz does not exist"):
        validate_config(missing, SCHEMA)
    (tmp_path / "gtsrb32.npz").write_bytes(b"")
    ok = with_change("dataset", {"name": "gtsrb", "path": str(tmp_path / "gtsrb32.npz")})
    ok["scenarios"]["sticker_p15_s3"]["source"] = 42
    assert validate_config(ok, SCHEMA)["dataset"]["crop_roi"] is False
    ok["scenarios"]["sticker_p15_s3"]["source"] = 43
    with pytest.raises(ConfigError, match=r"class 43 does not exist in dataset 'gtsrb'.*0\.\.42"):
        validate_config(ok, SCHEMA)


def test_distance_methods_are_validated() -> None:
    only_l2 = with_change("distances.methods", ["l2"])
    only_l2["clustering"] = {"methods": ["hc_l2", "ac"]}
    cfg = validate_config(only_l2, SCHEMA)
    assert cfg["distances"]["methods"] == ["l2"]
    only_l2["clustering"]["methods"] = ["hc_l2", "gw_kmeans"]
    with pytest.raises(ConfigError, match=r"clustering.methods': method 'gw_kmeans' needs "
                       r"distance 'gw', which distances.methods \['l2'\]"):  # fmt: skip
        validate_config(only_l2, SCHEMA)
    only_l2["clustering"]["methods"] = ["hc_l2", "ac"]
    only_l2["removal"] = {"methods": ["hc_l2", "ss"]}
    with pytest.raises(ConfigError, match=r"removal.methods': \['ss'\] are not in clustering"):
        validate_config(only_l2, SCHEMA)
    with pytest.raises(ConfigError, match=r"distances.methods.0': 'cosine' is not allowed"):
        validate_config(with_change("distances.methods", ["cosine"]), SCHEMA)


@pytest.mark.parametrize(
    "files",
    [
        ["config.yaml"],
        ["gtsrb.yaml"],
        ["gtsrb.yaml", "gtsrb-matrix.yaml"],
        ["gtsrb-quick.yaml"],
        ["gtsrb-quick.yaml", "gtsrb-quick-column.yaml"],
        ["gtsrb-column.yaml"],
        ["gtsrb-verdicts.yaml"],
        ["gtsrb-verdicts.yaml", "gtsrb-verdicts-r1.yaml"],
        ["gtsrb-verdicts.yaml", "gtsrb-verdicts-r2.yaml"],
        ["zoo-gtsrb.yaml"],
        ["zoo-gtsrb.yaml", "zoo-r1.yaml"],
        ["cifar10.yaml"],
        ["cifar10.yaml", "zoo-cifar10.yaml"],
        ["cifar10.yaml", "zoo-cifar10.yaml", "zoo-r1.yaml"],
    ],
    ids=lambda files: "+".join(files),
)
def test_every_shipped_config_validates_as_documented(files: list[str], tmp_path: Path) -> None:
    """The combinations README and the config headers tell users to pass to --configfile."""
    from snakemake.utils import update_config

    config: dict = {}
    for name in files:  # snakemake merges --configfile files in order, recursively
        update_config(config, yaml.safe_load((REPO / "config" / name).read_text()))
    if config["dataset"]["name"] == "gtsrb":
        (tmp_path / "gtsrb32.npz").touch()  # the path must exist; the data is not read
        config["dataset"]["path"] = str(tmp_path / "gtsrb32.npz")
    if config["dataset"]["name"] == "cifar10":  # only the labels and names are read
        names = np.array([f"class {c}" for c in range(10)])
        np.savez(tmp_path / "cifar10.npz", y_train=np.repeat(np.arange(10), 3000), names=names)
        config["dataset"]["path"] = str(tmp_path / "cifar10.npz")
    assert validate_config(config, SCHEMA)["scenarios"]


def test_moved_keys_say_where_they_went() -> None:
    old = with_change("clustering.n_neighbors", 5)
    with pytest.raises(ConfigError, match=r"'clustering.n_neighbors' has moved to "
                       r"'clustering.spray.n_neighbors'"):  # fmt: skip
        validate_config(old, SCHEMA)
    with pytest.raises(ConfigError, match=r"'clustering.decision_rule' has moved to "
                       r"'clustering.decision.rule'"):  # fmt: skip
        validate_config(with_change("clustering.decision_rule", "smaller"), SCHEMA)
    with pytest.raises(ConfigError, match=r"'results' was unexpected"):
        validate_config({**DEFAULT, "results": "out"}, SCHEMA)


@pytest.mark.parametrize(
    ("gw", "message"),
    [
        (
            {"solver": "batched", "epsilon": 0.0},
            r"distances.gw': solver 'batched' needs epsilon > 0",
        ),
        ({"solver": "pot_exact", "epsilon": 0.01}, r"distances.gw': epsilon=0.01 is not used by"),
        ({"solver": "pot_entropic", "epsilon": 0}, r"solver 'pot_entropic' needs epsilon > 0"),
    ],
)
def test_solver_and_epsilon_are_checked_before_any_work(gw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(with_change("distances.gw", gw), SCHEMA)


def test_detection_methods_come_from_the_registry() -> None:
    from poisonscan.detectors import DETECTORS

    items = SCHEMA["properties"]["clustering"]["properties"]["methods"]["items"]
    assert items == {"enum": sorted(DETECTORS)}
    with pytest.raises(ConfigError, match=r"clustering.methods.1': 'magic' is not allowed; "
                       r"allowed values: 'ac', 'agglo_gw'"):  # fmt: skip
        validate_config(with_change("clustering.methods", ["hc_l2", "magic"]), SCHEMA)
    cfg = validate_config(DEFAULT, SCHEMA)
    for name, detector in DETECTORS.items():  # every section a detector takes exists
        for path in detector.sections.values():
            assert isinstance(section(cfg, path), dict), (name, path)


def schema_defaults(path: str) -> dict[str, Any]:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return {k: v["default"] for k, v in node["properties"].items() if "default" in v}


def test_defaults_of_the_parameter_objects_agree_with_the_schema() -> None:
    """Every default lives in the schema; the library's own defaults must not drift from it."""
    import dataclasses

    from poisonscan.baselines import ActivationClustering, RawPixelClustering, SpectralSignatures
    from poisonscan.clustering import GromovWassersteinKMeans, SpectralRelevanceAnalysis
    from poisonscan.clustering.registry import AgglomerativeDistances, HDBSCANDistances
    from poisonscan.distances import GWParams, KNNParams
    from poisonscan.explain import ExplainParams
    from poisonscan.training import TrainParams

    def fields(cls: type) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def estimator(cls: type) -> dict[str, Any]:
        p = cls().get_params()
        if "random_state" in p:
            p["seed"] = p.pop("random_state")
        return p

    pairs = [
        ("training", fields(TrainParams)),
        ("explain", fields(ExplainParams)),
        ("distances.gw", fields(GWParams)),
        ("distances.gw.knn", fields(KNNParams)),
        ("clustering.spray", estimator(SpectralRelevanceAnalysis)),
        ("clustering.agglomerative", estimator(AgglomerativeDistances)),
        ("clustering.hdbscan", estimator(HDBSCANDistances)),
        ("clustering.gw_kmeans", estimator(GromovWassersteinKMeans)),
        ("activation_clustering", estimator(ActivationClustering)),
        ("baselines.raw", estimator(RawPixelClustering)),
        ("baselines.ss", estimator(SpectralSignatures)),
    ]
    for path, library in pairs:
        schema = schema_defaults(path)
        for key, value in schema.items():
            if isinstance(value, dict) or key not in library:
                continue  # subsections; keys the library takes elsewhere (tile, mode)
            lib = library[key]
            lib = list(lib) if isinstance(lib, tuple) else lib
            assert lib == value, f"{path}.{key}: schema {value!r}, library {lib!r}"
    decision = schema_defaults("clustering.decision")
    assert decision == {"rule": "size-gap", "size_threshold": 0.35, "silhouette_threshold": 0.1}
    assert schema_defaults("clustering.spray")["single_group_no_flag"] is False


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("explain.classes", [5, 12], r"'explain.classes': classes \[12\] do not exist .*0\.\.11"),
        # class 5 after poisoning: 400 clean + round(0.15 * 400 / 0.85) = 71 relabelled
        (
            "clustering.spray.n_neighbors",
            471,
            r"spray.n_neighbors': 471 is not smaller than "
            r"the 471 training images of class 5, which scenario 'sticker_p15_s3' analyses",
        ),
        ("clustering.spray.n_clusters", 472, r"spray.n_clusters': 472 is more than the 471"),
        ("clustering.gw_kmeans.n_clusters", 500, r"gw_kmeans.n_clusters': 500 is more than"),
        ("activation_clustering.nb_clusters", 500, r"activation_clustering.nb_clusters'"),
    ],
)
def test_class_dependent_values_are_checked_before_any_work(
    path: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(with_change(path, value), SCHEMA)
    fits = {"explain.classes": [5, 11]}.get(path, 470 if "n_neighbors" in path else 471)
    validate_config(with_change(path, fits), SCHEMA)


def test_class_sizes_follow_the_attack_and_unused_keys_are_not_checked() -> None:
    clever = with_change("scenarios", {"h": {"attack": "clever_hans", "target": 5,
                                             "poison_rate": 0.2}})  # fmt: skip
    clever["clustering"] = {"spray": {"n_neighbors": 400}}  # nothing relabelled into class 5
    with pytest.raises(ConfigError, match=r"400 is not smaller than the 400 training images"):
        validate_config(clever, SCHEMA)
    clever["clustering"]["methods"] = ["ac", "ss"]  # no SpRAy: its keys are not used
    clever["removal"] = {"methods": []}
    validate_config(clever, SCHEMA)
    knn = with_change("distances.gw", {"mode": "knn", "knn": {"n_neighbors": 471}})
    with pytest.raises(ConfigError, match=r"distances.gw.knn.n_neighbors': 471 is not smaller"):
        validate_config(knn, SCHEMA)


def test_gtsrb_class_sizes_come_from_the_label_array_alone(tmp_path: Path) -> None:
    import numpy as np

    labels = np.repeat(np.arange(43), 3)
    labels[:10] = 7  # classes 0-2 lose their 3 images, class 7 has 3 + 10
    np.savez(tmp_path / "g.npz", y_train=labels, x_train=np.zeros((1, 1)))
    counts = class_counts({"name": "gtsrb", "path": str(tmp_path / "g.npz")})
    assert counts[0] == 0 and counts[7] == 13 and counts.sum() == labels.size
    images = tmp_path / "archive" / "GTSRB" / "Final_Training" / "Images" / "00004"
    images.mkdir(parents=True)
    for i in range(3):
        (images / f"00000_0000{i}.ppm").write_bytes(b"")
    counts = class_counts({"name": "gtsrb", "path": str(tmp_path / "archive")})
    assert counts[4] == 3 and counts.sum() == 3
    assert class_counts({"name": "gtsrb", "path": str(tmp_path)}) is None


def test_cuda_device_must_exist_where_it_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = validate_config(with_change("distances.gw", {"solver": "batched", "epsilon": 0.01,
                                                        "device": "cuda"}), SCHEMA)  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=r"'distances.gw.device': 'cuda', but this machine "
        r"has 0 CUDA device\(s\) and rules \['distances_gw', 'detect'\]",
    ):
        check_devices(cfg)
    check_devices(cfg, gpu_rules=["distances_gw", "detect"])  # the profile gives them a GPU
    cfg["distances"]["gw"]["device"] = "cpu"
    check_devices(cfg)


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  name: synthetic\nscenarios: [a, b\ntraining: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml, line 4, column 9: expected ',' or ']'"):
        check_yaml(bad)
    with pytest.raises(ConfigError, match=r"bad.yaml, line 4"):
        read_config(bad, REPO / "config" / "schema.yaml")
