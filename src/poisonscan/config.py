"""Configuration: JSON-schema validation with defaults, then checks across keys.

Errors are raised as :class:`ConfigError` whose message names the offending
key (dotted path) and, where the schema has them, the allowed values.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from poisonscan.attacks import ATTACKS, AttackParameterError, attack_from_config
from poisonscan.experiments import expand_matrix

__all__ = [
    "AUDIT_SCENARIO",
    "ConfigError",
    "check_devices",
    "check_yaml",
    "class_counts",
    "load_schema",
    "read_config",
    "section",
    "validate_config",
]


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


def load_schema(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the YAML/JSON schema at ``path``; the allowed detection methods and heatmap
    distances come from their registry (:data:`poisonscan.detectors.DETECTORS`), the
    dataset names from theirs (:data:`poisonscan.datasets.DATASETS`), the attack names from
    :data:`poisonscan.attacks.ATTACKS`."""
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
    props["scenarios"]["additionalProperties"]["properties"]["attack"]["enum"] = sorted(ATTACKS)
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


# The one scenario of an audit (config key audit): results go to results/<dataset>/audit/.
AUDIT_SCENARIO = "audit"


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
    if cfg["audit"]:
        # one scenario without an attack: every class of the user's data is analysed
        cfg["scenarios"] = {AUDIT_SCENARIO: {"attack": "clean", "target": None}}
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: dict[str, Any]) -> None:
    ds = cfg["dataset"]
    n_classes = _check_dataset(cfg)  # the dataset's classes decide valid ids
    size = ds["image_size"]
    counts = class_counts(ds)  # read once: the scenarios' poison counts and the class sizes
    for name, sc in cfg["scenarios"].items():
        _check_scenario(name, sc, ds, n_classes, counts)
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
    _check_explain_classes(cfg, n_classes)
    _check_class_sizes(cfg, counts)


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
    """Build the typed parameter objects whose rules span several keys (a GW solver and its
    epsilon, the verdicts' thresholds), so that such an error stops the run before any work,
    naming the section. Only torch-free modules are imported: every job of a SLURM run
    parses the workflow. (The schema already checks each key of the training and kNN
    sections on its own; ``tests/test_config.py`` keeps their defaults equal.)"""
    from poisonscan.distances import GWParams
    from poisonscan.explain import ExplainParams
    from poisonscan.parameters import field_names
    from poisonscan.verdicts import VerdictParams

    gw = cfg["distances"]["gw"]
    checks = (
        ("explain", ExplainParams.from_config, cfg["explain"]),
        ("distances.gw", GWParams.from_config,
         {k: v for k, v in gw.items() if k in field_names(GWParams)}),
        ("verdicts", lambda v: VerdictParams(**v), cfg["verdicts"]),
    )  # fmt: skip
    for where, build, values in checks:
        try:
            build(values)
        except (TypeError, ValueError) as err:
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
    name: str,
    sc: Mapping[str, Any],
    ds: Mapping[str, Any],
    n_classes: int,
    counts: np.ndarray | None = None,
) -> None:
    """What the schema cannot check about one scenario: classes, sizes, poison counts.

    The attack's own ``check`` (and ``n_poison`` where the class sizes are known before
    the data is read: the synthetic dataset, GTSRB's and CIFAR-10's npz labels, a user's
    folder) decides; its :class:`AttackParameterError` names the key.
    """
    at = f"scenarios.{name}"
    if name == AUDIT_SCENARIO and sc.get("target", 0) is not None:
        raise ConfigError(
            f"config key '{at}': the scenario name 'audit' is reserved (results/<dataset>/audit "
            "holds the audit of a dataset; set audit: true for one)"
        )
    if name == "proxy":
        raise ConfigError(
            f"config key '{at}': the scenario name 'proxy' is reserved (results/<dataset>/proxy "
            "holds the clean proxy model of the label-consistent attack)"
        )
    for key in ("source", "target"):
        if sc.get(key) is not None and sc[key] >= n_classes:
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
        if counts is not None:  # training images per class, where known before any work
            attack.n_poison(np.asarray(counts))
    except AttackParameterError as err:
        raise ConfigError(f"config key '{at}.{err.key}': {err.detail}") from err
    except ValueError as err:
        raise ConfigError(f"config key '{at}': {err}") from err


def _check_explain_classes(cfg: Mapping[str, Any], n_classes: int) -> None:
    """Every class id of ``explain.classes`` exists in the dataset."""
    classes = cfg["explain"]["classes"]
    if isinstance(classes, list):
        unknown = sorted(c for c in classes if c >= n_classes)
        if unknown:
            raise ConfigError(
                f"config key 'explain.classes': classes {unknown} do not exist in dataset "
                f"{cfg['dataset']['name']!r} (allowed: 0..{n_classes - 1})"
            )


def class_counts(dataset: Mapping[str, Any]) -> np.ndarray | None:
    """Training images per class of the ``dataset`` config section, known before any work.

    From the dataset's registry entry (:func:`poisonscan.datasets.inspect_dataset`):
    synthetic: ``n_train_per_class`` each; GTSRB: the npz labels or the class folders; an
    image folder or npz: the usable images per kept class (before a held-out test split).
    None if unknown before loading (the dataset step then reports what is wrong).
    """
    from poisonscan.datasets import DatasetError, inspect_dataset

    try:
        return inspect_dataset(dataset).counts
    except DatasetError:
        return None


# Keys bounded by the size of the analysed class, per config section: (key, the value must
# be smaller than the class, as a neighbour count is; else at most the class size).
_CLASS_BOUNDED: dict[str, tuple[tuple[str, bool], ...]] = {
    "clustering.spray": (("n_neighbors", True), ("n_clusters", False)),
    "clustering.agglomerative": (("n_clusters", False),),
    "clustering.gw_kmeans": (("n_clusters", False),),
    "activation_clustering": (("nb_clusters", False),),
    "baselines.raw": (("nb_clusters", False),),
}


def _check_class_sizes(cfg: Mapping[str, Any], counts: np.ndarray | None) -> None:
    """Neighbour and cluster counts of the configured methods fit the class each scenario
    analyses (its target class after poisoning: relabelling attacks add their poison);
    ``counts``: :func:`class_counts` of the dataset (None: unknown, nothing to check)."""
    from poisonscan.detectors import DETECTORS

    if counts is None:
        return
    sections = {path for m in cfg["clustering"]["methods"] for path in
                DETECTORS[m].sections.values() if path in _CLASS_BOUNDED}  # fmt: skip
    bounded = [(f"{path}.{key}", section(cfg, path)[key], strict)
               for path in sorted(sections) for key, strict in _CLASS_BOUNDED[path]]  # fmt: skip
    gw = cfg["distances"]["gw"]
    if "gw" in cfg["distances"]["methods"] and gw["mode"] == "knn":
        bounded.append(("distances.gw.knn.n_neighbors", gw["knn"]["n_neighbors"], True))
    spray = cfg["clustering"]["spray"]
    if spray["affinity"] == "gaussian" and spray["bandwidth"] != "local":
        bounded = [b for b in bounded if b[0] != "clustering.spray.n_neighbors"]  # unused
    for name, sc in cfg["scenarios"].items():
        target = sc["target"]
        if target is None:  # an audit: every class is analysed by the verdicts only
            continue
        n = int(counts[target])
        attack = attack_from_config(sc)
        if getattr(attack, "source", None) is not None:  # relabelled into the target class
            n += attack.n_poison(counts)
        for key, value, strict in bounded:
            if value is not None and (value >= n if strict else value > n):
                relation = "not smaller than" if strict else "more than"
                raise ConfigError(
                    f"config key '{key}': {value} is {relation} the {n} training images of "
                    f"class {target}, which scenario {name!r} analyses"
                )


def check_devices(cfg: Mapping[str, Any], gpu_rules: Collection[str] = ()) -> None:
    """A CUDA device in ``distances.gw.device`` exists where the rules using it run.

    Parameters
    ----------
    cfg : mapping
        The validated config.
    gpu_rules : collection of str
        Rules the executor gives a GPU (the profile's ``gpu`` / ``gres`` resources);
        for those, the device is taken to exist there. The others run here: this
        machine must have the device.

    Raises
    ------
    ConfigError
        If a batched solver is to run on a CUDA device that this machine lacks,
        naming the key and the rules.
    """
    gw = cfg["distances"]["gw"]
    device = str(gw["device"])
    if gw["solver"] not in ("batched", "batched_cg") or not device.startswith("cuda"):
        return
    users = ["distances_gw"] if "gw" in cfg["distances"]["methods"] else []
    users += ["distances_gw_classes"] if cfg["scan"]["gw"] else []
    users += ["detect"] if "gw_kmeans" in cfg["clustering"]["methods"] else []
    local = [r for r in users if r not in set(gpu_rules)]
    if not local:
        return
    import torch

    index = int(device.partition(":")[2] or 0)
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= available:
        raise ConfigError(
            f"config key 'distances.gw.device': {device!r}, but this machine has "
            f"{available} CUDA device(s) and rules {local} get no GPU from the profile; "
            "set device: cpu, or give those rules a GPU (set-resources: gpu)"
        )


def check_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse the YAML file at ``path``.

    Raises
    ------
    ConfigError
        On a syntax error, naming the file, the line and the column.
    """
    p = Path(path)
    try:
        with open(p) as f:
            return yaml.safe_load(f)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{p}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(p)
        raise ConfigError(f"{where}: {err.problem or err.context}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: {err}") from err


def read_config(path: str | os.PathLike[str], schema_path: str | os.PathLike[str]) -> dict:
    """Load and validate the YAML config at ``path`` (YAML errors name the file and line)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    return validate_config(check_yaml(p) or {}, load_schema(schema_path))


if __name__ == "__main__":  # python -m poisonscan.config CONFIG [SCHEMA]
    import sys

    args = sys.argv[1:]
    if not 1 <= len(args) <= 2:
        sys.exit("usage: python -m poisonscan.config CONFIG [SCHEMA]")
    schema_file = args[1] if len(args) > 1 else Path(__file__).parents[2] / "config/schema.yaml"
    try:
        read_config(args[0], schema_file)
    except ConfigError as err:
        sys.exit(f"ConfigError: {err}")
    print(f"{args[0]}: valid")
