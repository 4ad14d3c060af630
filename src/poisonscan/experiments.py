"""Experiment matrices: a compact spec expands into named scenarios; results aggregate back.

A matrix block names an attack with its fixed parameters, a ``grid`` of
parameters to cross, and a number of ``repetitions`` (each repetition gets
another seed, so other images and other trigger positions)::

    matrix:
      standard:
        attack: sticker
        source: 2
        target: 5
        grid: {poison_rate: [0.33, 0.15], sticker_size: [2, 3]}
        repetitions: 2

expands to ``standard_p33_s2_r0``, ``standard_p33_s2_r1``, ... (four grid points
times two repetitions). :func:`aggregate` folds the summary rows of the
repetitions back into mean and standard deviation per grid point, laid out like
the reference study's tables.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MatrixScenario", "aggregate", "expand_matrix", "markdown_tables", "scenario_name"]

# Short tags of grid keys in scenario names; other keys use their own name.
_TAGS = {
    "poison_rate": "p",
    "sticker_size": "s",
    "amplitude": "a",
    "alpha": "al",
    "eps": "e",
    "fraction": "f",
}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _format(key: str, value: Any) -> str:
    if key == "poison_rate" or key == "fraction":
        return f"{round(float(value) * 100, 2):g}".replace(".", "_")
    if isinstance(value, float):
        return f"{value:g}".replace(".", "_").replace("-", "m")
    return re.sub(r"[^A-Za-z0-9]", "", str(value))


def scenario_name(block: str, point: Mapping[str, Any], repetition: int | None) -> str:
    """``block`` + one ``<tag><value>`` part per grid key (in grid order) + ``r<rep>``."""
    parts = [block] + [f"{_TAGS.get(k, k)}{_format(k, v)}" for k, v in point.items()]
    if repetition is not None:
        parts.append(f"r{repetition}")
    return "_".join(parts)


@dataclass(frozen=True)
class MatrixScenario:
    """One expanded scenario: its name, its attack config, and where it sits in the matrix."""

    name: str
    config: dict[str, Any]
    block: str
    repetition: int
    point: dict[str, Any]

    @property
    def point_label(self) -> str:
        """``"poison_rate=0.15 sticker_size=3"``: the grid point as one table cell."""
        return " ".join(f"{k}={v}" for k, v in self.point.items())


def expand_matrix(matrix: Mapping[str, Mapping[str, Any]]) -> list[MatrixScenario]:
    """Every scenario of every block of ``matrix``, in spec order.

    Parameters
    ----------
    matrix : mapping of block name to block spec
        A block spec holds the scenario's fixed keys, optionally ``grid``
        (key -> list of values, crossed in the given order) and
        ``repetitions`` (int >= 1; default 1: one scenario per grid point and
        no ``_r`` suffix). Repetition ``r`` uses ``seed + r`` (``seed``
        defaults to 0; a block with neither a seed nor repetitions gets none).

    Raises
    ------
    ValueError
        On a bad block name, an empty or non-list grid entry, a grid key that
        is also fixed, repetitions < 1, or two scenarios with the same name.
    """
    out: list[MatrixScenario] = []
    names: set[str] = set()
    for block, spec in matrix.items():
        if not _NAME.match(block):
            raise ValueError(f"matrix block name {block!r} must match {_NAME.pattern}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"matrix.{block} must be a mapping, got {spec!r}")
        spec = dict(spec)
        grid = spec.pop("grid", None) or {}
        reps = spec.pop("repetitions", 1)
        if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1:
            raise ValueError(f"matrix.{block}.repetitions must be an integer >= 1, got {reps!r}")
        if not isinstance(grid, Mapping):
            raise ValueError(f"matrix.{block}.grid must be a mapping, got {grid!r}")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(
                    f"matrix.{block}.grid.{key} must be a non-empty list, got {values!r}"
                )
            if key in spec:
                raise ValueError(f"matrix.{block}: {key!r} is both fixed and in the grid")
        keys = list(grid)
        base_seed = int(spec.get("seed", 0))
        for values in itertools.product(*(grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            for rep in range(reps):
                name = scenario_name(block, point, rep if reps > 1 else None)
                if name in names:
                    raise ValueError(f"matrix: scenario name {name!r} occurs twice")
                names.add(name)
                config = {**spec, **point}
                if reps > 1 or "seed" in spec:  # attacks without randomness take no seed
                    config["seed"] = base_seed + rep
                out.append(MatrixScenario(name, config, block, rep, point))
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    var = sum((v - mean) ** 2 for v in finite) / len(finite)  # population sd, as the thesis
    return mean, math.sqrt(var)


def aggregate(
    rows: Iterable[Mapping[str, Any]],
    group_keys: Sequence[str] = ("matrix_block", "grid_point", "method"),
    value_keys: Sequence[str] = ("acc", "tpr", "tnr", "f1", "auroc", "clean_acc", "asr"),
) -> list[dict[str, Any]]:
    """Mean and standard deviation of ``value_keys`` over rows that share ``group_keys``.

    Rows are summary rows (one per scenario and method); values may be strings
    (from a CSV) or numbers; missing or empty values count as NaN and are left
    out of the mean. Output rows hold the group keys, ``n`` (rows in the
    group), and ``<key>_mean`` / ``<key>_std`` for every value key.
    """
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row.get(k, "")) for k in group_keys), []).append(row)
    out = []
    for key, members in groups.items():
        agg: dict[str, Any] = dict(zip(group_keys, key, strict=True))
        agg["n"] = len(members)
        for name in value_keys:
            values = []
            for row in members:
                raw = row.get(name, "")
                values.append(float(raw) if raw not in ("", None) else float("nan"))
            agg[f"{name}_mean"], agg[f"{name}_std"] = _mean_std(values)
        out.append(agg)
    return out


def _cell(row: Mapping[str, Any], key: str, scale: float = 100.0) -> str:
    mean, std = row.get(f"{key}_mean", float("nan")), row.get(f"{key}_std", float("nan"))
    if mean is None or math.isnan(mean):
        return "–"
    if row.get("n", 1) > 1:
        return f"{mean * scale:.2f} ± {std * scale:.2f}"
    return f"{mean * scale:.2f}"


def _point_order(label: str) -> tuple[tuple[int, float, str], ...]:
    """Sort key of a grid point label ``"k1=v1 k2=v2"``: numbers descending, as the reference's
    tables list p (33 % first) and amplitudes (128 first); other values alphabetically."""
    key = []
    for token in label.split():
        value = token.partition("=")[2]
        try:
            key.append((0, -float(value), ""))
        except ValueError:
            key.append((1, 0.0, value))
    return tuple(key)


def markdown_tables(
    aggregated: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    metrics: Sequence[str] = ("acc", "tpr", "tnr", "auroc"),
) -> str:
    """One markdown table per matrix block, laid out like the reference study's tables.

    Rows are grid points (numbers descending, see :func:`_point_order`); columns the attack
    success rate and clean accuracy
    (from the first method's rows, they are per scenario), then ``metrics`` of
    every method in ``methods``, in percent, ``mean ± sd`` over repetitions.
    """
    by_block: dict[str, dict[str, dict[str, Mapping[str, Any]]]] = {}
    for row in aggregated:
        block = by_block.setdefault(str(row["matrix_block"]), {})
        block.setdefault(str(row["grid_point"]), {})[str(row["method"])] = row
    parts = []
    for block, points in by_block.items():
        present = [m for m in methods if any(m in r for r in points.values())]
        head = ["grid point", "n", "ASR", "clean acc"] + [
            f"{m} {k.upper()}" for m in present for k in metrics
        ]
        lines = [f"### {block or '(scenarios outside the matrix)'}", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
        for point, rows in sorted(points.items(), key=lambda item: _point_order(item[0])):
            first = next(iter(rows.values()))
            cells = [point or "–", str(first["n"]), _cell(first, "asr"), _cell(first, "clean_acc")]
            for m in present:
                cells += [_cell(rows[m], k) if m in rows else "–" for k in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
