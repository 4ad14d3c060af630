"""Parameter objects from plain config dicts: one check for unknown keys; the performance
knobs, which the workflow passes as resources instead of params."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "PERFORMANCE",
    "check_keys",
    "field_names",
    "from_section",
    "merge_performance",
    "performance_resources",
    "performance_values",
    "without_performance",
]

# Config keys that change speed or memory, never a stored value -> the resource that carries
# them. Rules pass them as resources, not params, so changing one reruns nothing; a profile
# may override one per rule (set-resources). Their defaults live in config/schema.yaml.
PERFORMANCE: dict[str, str] = {
    "explain.batch_size": "explain_batch_size",
    "distances.gw.tile": "gw_tile",
    "distances.gw.batch_mb": "gw_batch_mb",
    "distances.gw.knn.pairs_per_task": "gw_pairs_per_task",
}

T = TypeVar("T")


def field_names(cls: type) -> list[str]:
    """Sorted field names of the dataclass ``cls``."""
    return sorted(f.name for f in dataclasses.fields(cls))


def check_keys(section: str, given: Mapping[str, Any], allowed: list[str]) -> None:
    """Raise ValueError naming the keys of ``given`` that ``allowed`` lacks.

    ``section`` is the dotted config section, e.g. ``"distances.gw"``.
    """
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {section} parameter(s) {unknown}; allowed: {sorted(allowed)}")


def from_section(cls: type[T], section: str, config: Mapping[str, Any] | None) -> T:
    """``cls(**config)`` for the dataclass ``cls``, after :func:`check_keys`."""
    config = dict(config or {})
    check_keys(section, config, field_names(cls))
    return cls(**config)


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        node = node[key]
    return node


def without_performance(section: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A copy of the config section at dotted ``path`` without its performance knobs
    (what a rule's ``params`` may hold), keys sorted at every level: Snakemake compares
    params by their text, so the order in which a user wrote the keys must not rerun a job."""
    out = copy.deepcopy(dict(section))
    for key in PERFORMANCE:
        if key.startswith(f"{path}."):
            *parents, last = key[len(path) + 1 :].split(".")
            node = out
            for parent in parents:
                node = node.get(parent, {})
            node.pop(last, None)
    return _sorted(out)


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


def performance_resources(config: Mapping[str, Any], *paths: str) -> dict[str, int | str]:
    """The resources of the performance knobs below the dotted ``paths`` of a validated
    config, e.g. ``{"gw_tile": 64}``; floats as strings (Snakemake rounds float resources)."""
    out: dict[str, int | str] = {}
    for key, name in PERFORMANCE.items():
        if any(key.startswith(f"{p}.") for p in paths):
            value = _get(config, key)
            out[name] = repr(float(value)) if isinstance(value, float) else int(value)
    return out


def performance_values(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The performance knobs among a job's ``resources`` (a mapping, or Snakemake's
    ``snakemake.resources``), by dotted config key."""
    names = {name: key for key, name in PERFORMANCE.items()}
    return {
        names[n]: float(v) if isinstance(v, str) else v
        for n, v in dict(resources.items()).items()
        if n in names
    }


def merge_performance(
    section: Mapping[str, Any], path: str, values: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The config section at dotted ``path`` with the knobs of ``values`` (dotted keys, as
    from :func:`performance_values`) that lie below it put back in."""
    out = copy.deepcopy(dict(section))
    for key, value in (values or {}).items():
        if key.startswith(f"{path}."):
            *parents, last = key[len(path) + 1 :].split(".")
            node = out
            for parent in parents:
                node = node.setdefault(parent, {})
            node[last] = value
    return out
