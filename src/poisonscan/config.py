"""Configuration: JSON-schema validation with defaults, then checks across keys.

Errors are raised as :class:`ConfigError` whose message names the offending
key (dotted path) and, where the schema has them, the allowed values.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from poisonscan.attacks import AttackParameterError, attack_from_config
from poisonscan.experiments import expand_matrix

__all__ = ["ConfigError", "load_schema", "read_config", "section", "validate_config"]


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


def load_schema(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the YAML/JSON schema at ``path``; the allowed detection methods and heatmap
    distances come from their registry (:data:`poisonscan.detectors.DETECTORS`), the
    dataset names from theirs (:data:`poisonscan.datasets.DATASETS`)."""
    from poisonscan.datasets import DATASETS
    from poisonscan.detectors import DETECTORS, DISTANCES

    with open(path) as f:
        schema = yaml.safe_load(f)
    props = schema["properties"]
    methods = {"enum": sorted(DETECTORS)}
    props["clustering"]["properties"]["methods"]["items"] = methods
    props["removal"]["properties"]["methods"]["items"] = methods
    props["distances"]["properties"]["methods"]["items"] = {"enum": list(DISTANCES)}
    props["dataset"]["properties"]["name"]["enum"] = list(DATASETS)
    return schema


def section(config: Mapping[str, Any], path: str) -> Any:
    """The config section at the dotted ``path``, e.g. ``"clustering.spray"``.

    Raises
    ------
    ConfigError
        If a key on the path is missing.
    """
    node: Any = config
    for depth, key in enumerate(path.split(".")):
        if not isinstance(node, Mapping) or key not in node:
            where = ".".join(path.split(".")[: depth + 1])
            raise ConfigError(f"config key '{where}' is missing")
        node = node[key]
    return node


# Keys that moved: old place -> new place (the error says where they went).
_MOVED = {
    **{f"clustering.{k}": f"clustering.spray.{k}"
       for k in ("affinity", "n_neighbors", "bandwidth", "n_clusters", "k_max", "n_eigenvalues",
                 "dense_max", "n_init", "single_group_no_flag", "seed")},
    "clustering.decision_rule": "clustering.decision.rule",
    "clustering.size_threshold": "clustering.decision.size_threshold",
    "clustering.silhouette_threshold": "clustering.decision.silhouette_threshold",
}  # fmt: skip


def _check_moved(cfg: Mapping[str, Any]) -> None:
    for old, new in _MOVED.items():
        parent, _, key = old.rpartition(".")
        node = cfg.get(parent)
        if isinstance(node, Mapping) and key in node:
            raise ConfigError(f"config key '{old}' has moved to '{new}' (poisonscan 0.2)")


def _fill_defaults(validator_cls: type[jsonschema.protocols.Validator]) -> Any:
    """A validator class that also inserts each property's ``default`` when absent."""
    check_properties = validator_cls.VALIDATORS["properties"]

    def properties(
        validator: Any, props: Mapping[str, Any], instance: Any, schema: Any
    ) -> Iterator:
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": properties})


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key(error.absolute_path)
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"config key '{where}': {error.instance!r} is not allowed; allowed values: {allowed}"
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        hint = f"; known keys: {', '.join(known)}" if known else ""
        return f"config key '{where}': {error.message}{hint}"
    return f"config key '{where}': {error.message}"


def _expand_matrix(cfg: dict[str, Any]) -> None:
    """Add the scenarios of ``cfg["matrix"]`` to ``cfg["scenarios"]`` (names must not clash)."""
    matrix = cfg.get("matrix")
    if not matrix:
        return
    if not isinstance(matrix, Mapping):
        raise ConfigError(f"config key 'matrix': must be a mapping of blocks, got {matrix!r}")
    try:
        expanded = expand_matrix(matrix)
    except ValueError as err:
        raise ConfigError(f"config key 'matrix': {err}") from err
    scenarios = cfg.get("scenarios")
    scenarios = dict(scenarios) if isinstance(scenarios, Mapping) else {}
    for sc in expanded:
        if sc.name in scenarios:
            raise ConfigError(
                f"config key 'matrix.{sc.block}': scenario {sc.name!r} is also in 'scenarios'"
            )
        scenarios[sc.name] = sc.config
    cfg["scenarios"] = scenarios


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``config`` against ``schema``; return a copy with defaults filled in.

    Raises
    ------
    ConfigError
        On the first (most specific) schema violation, or a violation of a rule
        that spans several keys (unknown class, sticker larger than the image ...).
    """
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"config must be a mapping of keys to values, got {type(config).__name__}"
        )
    cfg = copy.deepcopy(dict(config))
    _check_moved(cfg)
    _expand_matrix(cfg)
    validator = _fill_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (-len(e.absolute_path), e.path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_describe(best))
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: dict[str, Any]) -> None:
    ds = cfg["dataset"]
    n_classes = _check_dataset(cfg)  # the dataset's classes decide valid ids
    size = ds["image_size"]
    for name, sc in cfg["scenarios"].items():
        _check_scenario(name, sc, ds, n_classes)
    dask = cfg["dask"]
    for mode in ("address", "scheduler_file"):
        if dask["cluster"] == mode and not dask.get(mode):
            raise ConfigError(f"config key 'dask.{mode}' is required when dask.cluster is {mode!r}")
    gw = cfg["distances"]["gw"]
    if size % gw["pool"]:
        raise ConfigError(
            f"config key 'distances.gw.pool': {gw['pool']} does not divide the image size {size}"
        )
    _check_parameters(cfg)
    _check_methods(cfg)


def _check_dataset(cfg: Mapping[str, Any]) -> int:
    """Bad input (unreadable images, tiny classes ...) and a user's model file are checked
    before any work (:func:`poisonscan.datasets.check_input`,
    :func:`poisonscan.modelfile.check_model_config`); return the class count."""
    from poisonscan.datasets import DatasetError, check_input
    from poisonscan.modelfile import ModelFileError, check_model_config

    try:
        info = check_input(cfg["dataset"])
    except DatasetError as err:
        text = str(err)
        raise ConfigError(text if text.startswith("config key") else
                          f"config key 'dataset.path': {text}") from err  # fmt: skip
    try:
        check_model_config(cfg)
    except ModelFileError as err:
        raise ConfigError(str(err)) from err
    assert info.n_classes is not None  # every registered dataset knows its classes
    return info.n_classes


def _check_parameters(cfg: Mapping[str, Any]) -> None:
    """Build every typed parameter object once, so that an error across keys (a solver
    and its epsilon, ...) stops the run before any work, naming the section."""
    from poisonscan.distances import GWParams, KNNParams
    from poisonscan.explain import ExplainParams
    from poisonscan.parameters import field_names
    from poisonscan.training import TrainParams

    gw = cfg["distances"]["gw"]
    checks = (
        ("training", TrainParams.from_config, cfg["training"]),
        ("explain", ExplainParams.from_config, cfg["explain"]),
        ("distances.gw", GWParams.from_config,
         {k: v for k, v in gw.items() if k in field_names(GWParams)}),
        ("distances.gw.knn", KNNParams.from_config, gw["knn"]),
    )  # fmt: skip
    for where, build, values in checks:
        try:
            build(values)
        except ValueError as err:
            raise ConfigError(f"config key '{where}': {err}") from err


def _check_methods(cfg: Mapping[str, Any]) -> None:
    """Every detection method's distance is computed; removal uses detection methods only."""
    from poisonscan.detectors import DETECTORS

    computed = cfg["distances"]["methods"]
    methods = cfg["clustering"]["methods"]
    removal = cfg["removal"]["methods"]
    missing = sorted(set(removal) - set(methods))
    if missing:
        raise ConfigError(
            f"config key 'removal.methods': {missing} are not in clustering.methods {methods}"
        )
    for method in methods:
        needs = DETECTORS[method].distance
        if needs is not None and needs not in computed:
            raise ConfigError(
                f"config key 'clustering.methods': method {method!r} needs distance {needs!r}, "
                f"which distances.methods {computed} does not compute; add it there or drop "
                "the method"
            )


def _check_scenario(
    name: str, sc: Mapping[str, Any], ds: Mapping[str, Any], n_classes: int
) -> None:
    """What the schema cannot check about one scenario: classes, sizes, poison counts.

    The attack's own ``check`` (and ``n_poison`` where class sizes are known
    before the data is read: the synthetic dataset) decides; its
    :class:`AttackParameterError` names the key.
    """
    at = f"scenarios.{name}"
    if name == "proxy":
        raise ConfigError(
            f"config key '{at}': the scenario name 'proxy' is reserved (results/<dataset>/proxy "
            "holds the clean proxy model of the label-consistent attack)"
        )
    for key in ("source", "target"):
        if key in sc and sc[key] >= n_classes:
            raise ConfigError(
                f"config key '{at}.{key}': class {sc[key]} does not exist in dataset "
                f"{ds['name']!r} (allowed: 0..{n_classes - 1})"
            )
    if "source" in sc and sc["source"] == sc["target"]:
        raise ConfigError(f"config key '{at}': source and target are both class {sc['source']}")
    size = ds["image_size"]
    try:
        attack = attack_from_config(sc)
        attack.check(n_classes, (size, size))
        if ds["name"] == "synthetic":  # elsewhere class sizes are known only in the poison step
            attack.n_poison([ds["n_train_per_class"]] * n_classes)
    except AttackParameterError as err:
        raise ConfigError(f"config key '{at}.{err.key}': {err.detail}") from err
    except ValueError as err:
        raise ConfigError(f"config key '{at}': {err}") from err


def read_config(path: str | os.PathLike[str], schema_path: str | os.PathLike[str]) -> dict:
    """Load and validate the YAML config at ``path``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    with open(p) as f:
        return validate_config(yaml.safe_load(f) or {}, load_schema(schema_path))
