"""Parameter objects from plain config dicts: one check for unknown keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["check_keys", "field_names", "from_section"]

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
