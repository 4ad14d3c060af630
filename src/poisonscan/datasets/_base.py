"""What every dataset loader shares: the problems of bad input, what is known before any work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ON_BAD_INPUT",
    "BadInputError",
    "DatasetError",
    "InputProblem",
    "Inspection",
    "bad_input_rows",
]

# dataset.on_bad_input: stop before any work and list every problem, or leave the bad
# files and classes out and list them (log, bad_input.csv beside the dataset file).
ON_BAD_INPUT = ("stop", "skip")


class DatasetError(ValueError):
    """The dataset cannot be read at all (no such path, not a folder of class folders ...)."""


@dataclass(frozen=True)
class InputProblem:
    """One bad file or class of a user's dataset.

    Attributes
    ----------
    path : str
        The file or class folder as given (class folders end with ``/``).
    problem : str
        What is wrong, in words.
    cls : str or None
        The class it belongs to (its folder name), if any.
    split : str
        ``"train"`` or ``"test"``.
    skippable : bool
        False if skipping cannot fix it (a single class): the run stops either way.
    """

    path: str
    problem: str
    cls: str | None = None
    split: str = "train"
    skippable: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class BadInputError(DatasetError):
    """Bad input found before any work; the message lists every problem, one per line."""

    def __init__(self, where: str, problems: Sequence[InputProblem], hint: str = "") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in {where}{hint}:\n{lines}")


@dataclass
class Inspection:
    """What is known about a dataset before any work (read by the config validation).

    Attributes
    ----------
    class_names : list of str or None
        The classes, in label order (after leaving out skipped classes); None if unknown.
    counts : ndarray of shape (n_classes,), int64, or None
        Training images per class (after skipping); None if unknown before loading.
    problems : list of InputProblem
        Bad files and classes (all of them, also those that are skipped).
    converted : dict of str to int
        Image mode (``L``, ``RGBA``, ``I;16`` ...) -> number of images converted to RGB.
    """

    class_names: list[str] | None
    counts: np.ndarray | None = None
    problems: list[InputProblem] = field(default_factory=list)
    converted: dict[str, int] = field(default_factory=dict)

    @property
    def n_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)


def bad_input_rows(problems: Sequence[InputProblem], action: str) -> list[Mapping[str, Any]]:
    """Rows of ``bad_input.csv``: path, class, split, problem, action."""
    return [
        {"path": p.path, "class": p.cls or "", "split": p.split, "problem": p.problem,
         "action": action}
        for p in problems
    ]  # fmt: skip
