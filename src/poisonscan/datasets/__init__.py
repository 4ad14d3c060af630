"""Datasets by name: one loader per ``dataset.name``, and the check of a user's input.

:data:`DATASETS` maps every name allowed in ``dataset.name`` (the config schema's list comes
from here, :func:`poisonscan.config.load_schema`) to a :class:`Dataset`: a loader
``(section) -> ImageDataset`` and an inspection ``(section) -> Inspection`` that says, before
any work and without torch, which classes there are, how many training images each holds and
what is wrong with the input. :func:`load_dataset` is what rule ``make_dataset`` runs;
:func:`check_input` is what the config validation runs, so that ``snakemake -n`` and
``poisonscan scan`` report bad input before anything is trained.

=========  =========================================================================
name       source
=========  =========================================================================
synthetic  the embedded procedural traffic signs (:mod:`poisonscan.data`)
gtsrb      GTSRB as npz or in its official layout (:mod:`poisonscan.gtsrb`)
cifar10    CIFAR-10's official split in one ``.npz`` (:mod:`.cifar10`)
folder     one subfolder per class of image files (:mod:`.folder`)
npz        ``x``/``y`` (+ ``names``) or given splits in one ``.npz`` (:mod:`.arrays`)
=========  =========================================================================

Every loader returns uint8 (n, S, S, 3) RGB images, int64 labels 0..K-1 and the class names;
``extra["group_train"]`` holds near-duplicate groups (GTSRB: its tracks) so that splits keep
them whole, and the user's datasets keep each image's identity (its file) in
``extra["path_train"]`` / ``extra["path_test"]``.

Bad input (``dataset.on_bad_input``): ``stop`` (default) lists every problem at once and stops
before any work; ``skip`` leaves the bad files and classes out, logs them and rule
``make_dataset`` writes them to ``bad_input.csv`` beside the dataset file. A problem that
skipping cannot fix (a single class) stops the run either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from poisonscan.datasets import arrays, builtin, cifar10, folder
from poisonscan.datasets._base import (
    ON_BAD_INPUT,
    BadInputError,
    DatasetError,
    InputProblem,
    Inspection,
    bad_input_rows,
)
from poisonscan.storage import ImageDataset

__all__ = [
    "DATASETS",
    "ON_BAD_INPUT",
    "BadInputError",
    "Dataset",
    "DatasetError",
    "InputProblem",
    "Inspection",
    "bad_input_rows",
    "check_input",
    "inspect_dataset",
    "load_dataset",
]


@dataclass(frozen=True)
class Dataset:
    """One dataset source.

    Attributes
    ----------
    load : callable
        ``(section) -> ImageDataset``: reads (or generates) the data.
    inspect : callable
        ``(section) -> Inspection``: classes, counts and problems, before any work; raises
        :class:`DatasetError` if the data cannot be read at all.
    summary : str
        One line for the documentation.
    user_data : bool
        True for the user's own data (folder, npz): its problems are checked before any
        work, and ``on_bad_input`` applies.
    """

    load: Callable[[Mapping[str, Any]], ImageDataset]
    inspect: Callable[[Mapping[str, Any]], Inspection]
    summary: str
    user_data: bool = False


DATASETS: dict[str, Dataset] = {
    "synthetic": Dataset(
        builtin.load_synthetic, builtin.inspect_synthetic,
        "the embedded procedural traffic-sign dataset (12 classes)",
    ),
    "gtsrb": Dataset(
        builtin.load_gtsrb, builtin.inspect_gtsrb,
        "GTSRB (43 classes) from `path`: the npz file or the official archive layout",
    ),
    "cifar10": Dataset(
        cifar10.load_cifar10, cifar10.inspect_cifar10,
        "CIFAR-10 (10 classes) from `path`: an npz with x_train/y_train/x_test/y_test/names",
    ),
    "folder": Dataset(
        folder.load_folder, folder.inspect_folder,
        "your images: `path` holds one subfolder per class (PNG, JPEG, PPM, BMP, WebP)",
        user_data=True,
    ),
    "npz": Dataset(
        arrays.load_npz, arrays.inspect_npz,
        "your arrays: `path` is an .npz with x/y (+ names) or x_train/y_train/x_test/y_test",
        user_data=True,
    ),
}  # fmt: skip


def _entry(section: Mapping[str, Any]) -> Dataset:
    name = section.get("name")
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return DATASETS[name]


def inspect_dataset(section: Mapping[str, Any]) -> Inspection:
    """What is known about the dataset of ``section`` before any work (see :class:`Inspection`).

    Raises
    ------
    DatasetError
        If the dataset cannot be read at all (the message names the key and the path).
    """
    try:
        return _entry(section).inspect(section)
    except DatasetError:
        raise
    except (OSError, ValueError) as err:  # a path no file system call accepts, ...
        raise DatasetError(f"config key 'dataset.path': {err}") from err


def check_input(section: Mapping[str, Any]) -> Inspection:
    """Inspect the dataset and apply ``on_bad_input`` to its problems.

    Returns
    -------
    Inspection
        With ``on_bad_input: skip``, the classes and counts left after skipping; its
        ``problems`` are what is skipped.

    Raises
    ------
    BadInputError
        ``on_bad_input: stop`` and any problem, or any problem skipping cannot fix; the
        message lists every one of them, one per line, naming the file or class.
    DatasetError
        If the dataset cannot be read at all.
    """
    info = inspect_dataset(section)
    if not info.problems:
        return info
    where = str(section.get("path", section.get("name")))
    mode = section.get("on_bad_input", "stop")
    fatal = [p for p in info.problems if not p.skippable]
    if mode == "stop":
        raise BadInputError(
            where, info.problems,
            " (dataset.on_bad_input: stop; fix them, or set it to skip to leave these files "
            "and classes out)",
        )  # fmt: skip
    if fatal:
        raise BadInputError(where, fatal, " (skipping bad files and classes cannot fix these)")
    return info


def load_dataset(section: Mapping[str, Any]) -> ImageDataset:
    """Load the dataset of the ``dataset`` config section (defaults filled in by the schema).

    Raises
    ------
    BadInputError
        See :func:`check_input`: bad input is checked again here, so that a dataset is
        never built from input the config would have refused.
    DatasetError
        If the dataset cannot be read, or ``name`` is unknown.
    """
    entry = _entry(section)
    if entry.user_data:
        check_input(section)
    return entry.load(section)
