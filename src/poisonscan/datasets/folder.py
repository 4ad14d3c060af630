"""An image folder: one subfolder per class (``DIR/<class>/<image>``), names sorted into labels.

Layout::

    DIR/
      cats/  0001.png  0002.jpg ...
      dogs/  a.webp  b.bmp ...

Class ids are the positions of the class folder names in sorted order. Every file directly
in a class folder must be an image (:mod:`poisonscan.datasets.images`: PNG, JPEG, PPM, BMP,
WebP, any size and mode; converted to RGB and resized). Hidden files and folders (names
starting with ``.``, e.g. ``.DS_Store``) are ignored. ``test_path`` (optional) has the same
layout; without it a test split is held out (:mod:`poisonscan.datasets.split`).

Before any work, :func:`inspect_folder` decodes every file once and lists what is wrong
(:class:`~poisonscan.datasets.InputProblem`): unreadable or truncated images, unsupported
formats, files that are not images, folders inside a class folder, files outside any class
folder, file and class folder names holding a line break (shown escaped: every output that
lists one file per line would break), file names that differ only in case or extension
within a class folder, empty class folders, classes with fewer than
``min_images_per_class`` images, test classes unknown to training, a dataset of a single
class. Which files were checked is cached (by path, size and
modification time) in ``$POISONSCAN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/poisonscan`` or
``~/.cache/poisonscan``), so that the validation of every Snakemake invocation (and of every
cluster job) does not decode the whole dataset again.

Each image keeps its file path, as given (``path`` joined with the class folder and file
name), in ``extra["path_train"]`` / ``extra["path_test"]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from poisonscan.datasets._base import DatasetError, InputProblem, Inspection
from poisonscan.datasets.images import EXTENSIONS, check_image, read_image
from poisonscan.storage import ImageDataset, atomic_path

__all__ = ["FolderPlan", "inspect_folder", "load_folder", "plan_folder"]

log = logging.getLogger(__name__)

_LOG_EVERY = 5000
_EMPTY = "empty class folder"
_CHECK_VERSION = 1  # bump when check_image changes what it reports: old cache entries go


@dataclass
class FolderPlan:
    """What :func:`load_folder` reads: the good files of the kept classes, and the problems.

    Attributes
    ----------
    classes : list of str
        Kept class folder names, sorted (label = position).
    train, test : dict of str to list of str
        Class name -> image files (paths as given), sorted by name; ``test`` is empty
        without ``test_path``.
    problems : list of InputProblem
    converted : collections.Counter
        Image mode -> number of accepted images in that mode that are not RGB.
    """

    classes: list[str]
    train: dict[str, list[str]]
    test: dict[str, list[str]] = field(default_factory=dict)
    problems: list[InputProblem] = field(default_factory=list)
    converted: Counter[str] = field(default_factory=Counter)


def _root(path: Any, key: str) -> Path:
    if not isinstance(path, str) or not path:
        raise DatasetError(f"config key 'dataset.{key}' must name a folder, got {path!r}")
    p = Path(path)
    try:
        if not p.exists():
            raise DatasetError(f"config key 'dataset.{key}': {p} does not exist")
        if not p.is_dir():
            raise DatasetError(
                f"config key 'dataset.{key}': {p} is not a folder (expected one subfolder per "
                "class holding its images)"
            )
    except OSError as err:
        raise DatasetError(f"config key 'dataset.{key}': {p} cannot be read ({err})") from err
    return p


# Characters that end a line (str.splitlines): a file name holding one would break every
# output that lists one file per line.
_LINE_BREAKS = set("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _printable(path: str) -> str:
    """``path`` with its line breaks escaped (``\\n``), for a one-line message."""
    return "".join(c.encode("unicode_escape").decode() if c in _LINE_BREAKS else c
                   for c in path)  # fmt: skip


def _visible(entries: list[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _scan(root: Path, split: str) -> tuple[dict[str, list[str]], list[InputProblem]]:
    """Class folder -> candidate image files (by extension), and the layout problems."""
    problems: list[InputProblem] = []
    files: dict[str, list[str]] = {}
    with os.scandir(root) as it:
        top = _visible(list(it))
    for entry in top:
        if not entry.is_dir():
            problems.append(InputProblem(
                str(root / entry.name),
                f"file outside any class folder (expected {root}/<class>/<image>)", None, split,
            ))  # fmt: skip
            continue
        cls = entry.name
        folder = root / cls
        if _LINE_BREAKS & set(cls):
            problems.append(InputProblem(
                _printable(f"{folder}/"), "class folder name holds a line break (the outputs "
                "list one class per line); rename it", _printable(cls), split,
            ))  # fmt: skip
            continue
        with os.scandir(folder) as it:
            inside = _visible(list(it))
        images: list[str] = []
        seen: dict[str, str] = {}  # name without extension, case-folded -> first file
        for e in inside:
            path = str(folder / e.name)
            if _LINE_BREAKS & set(e.name):
                problems.append(InputProblem(
                    _printable(path), "file name holds a line break (the outputs list one "
                    "file per line: clean_list.txt); rename it", cls, split,
                ))  # fmt: skip
            elif e.is_dir():
                problems.append(InputProblem(
                    path + "/", "folder inside a class folder (images must lie directly in "
                    f"{folder}/; nested folders are not read)", cls, split,
                ))  # fmt: skip
            elif Path(e.name).suffix.lower() not in EXTENSIONS:
                problems.append(InputProblem(
                    path, "not an image file (extension not one of "
                    f"{', '.join(sorted(EXTENSIONS))})", cls, split,
                ))  # fmt: skip
            elif (stem := Path(e.name).stem.casefold()) in seen:
                problems.append(InputProblem(
                    path, f"duplicate file name: same name as {seen[stem]} apart from case or "
                    "extension (ambiguous in outputs; a copy to a case-insensitive file system "
                    "keeps only one)", cls, split,
                ))  # fmt: skip
            else:
                seen[stem] = path
                images.append(path)
        files[cls] = images
        if not inside:
            problems.append(InputProblem(f"{folder}/", _EMPTY, cls, split))
    return files, problems


def _cache_dir() -> Path:
    if "POISONSCAN_CACHE_DIR" in os.environ:
        return Path(os.environ["POISONSCAN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "poisonscan"


_MEMO: dict[str, dict[str, list[str | None]]] = {}


def _check_files(paths: list[str]) -> dict[str, list[str | None]]:
    """Path -> [mode, problem] of every file (decoded once; cached by path, size, mtime)."""
    from poisonscan import __version__

    stats = []
    for p in paths:
        st = os.stat(p)
        stats.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
    key = hashlib.sha256(json.dumps([_CHECK_VERSION, __version__, stats]).encode()).hexdigest()
    if key in _MEMO:
        return _MEMO[key]
    cache = _cache_dir() / "input-checks" / f"{key}.json"
    try:
        result = json.loads(cache.read_text())
        if set(result) == set(paths):
            _MEMO[key] = result
            return result
    except (OSError, ValueError):
        pass
    t0 = time.perf_counter()
    result = {}
    for i, p in enumerate(paths, 1):
        result[p] = list(check_image(p))
        if i % _LOG_EVERY == 0:
            log.info("checked %d / %d images", i, len(paths))
    log.info("checked %d images in %.1f s", len(paths), time.perf_counter() - t0)
    _MEMO[key] = result
    try:  # a cache that cannot be written (read-only home) only costs time
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps(result))
    except OSError:
        pass
    return result


def plan_folder(section: Mapping[str, Any]) -> FolderPlan:
    """Scan ``section["path"]`` (and ``test_path``), check every file, decide what to read.

    Classes that are empty or below ``min_images_per_class`` are not kept; a single kept
    class is a problem that skipping cannot fix. Which problems stop the run is the
    caller's decision (``on_bad_input``).

    Raises
    ------
    DatasetError
        If a path does not exist, is not a folder or cannot be read.
    """
    root = _root(section.get("path"), "path")
    test_root = _root(section["test_path"], "test_path") if section.get("test_path") else None
    minimum = int(section["min_images_per_class"])
    try:
        train, problems = _scan(root, "train")
        test, test_problems = _scan(test_root, "test") if test_root else ({}, [])
        everything = [p for group in (train, test) for files in group.values() for p in files]
        checked = _check_files(everything)
    except OSError as err:
        raise DatasetError(
            f"config key 'dataset.path': cannot read {err.filename} ({err})"
        ) from err
    problems += test_problems
    converted: Counter[str] = Counter()

    def good(split: str, files: dict[str, list[str]]) -> dict[str, list[str]]:
        out = {}
        for cls, paths in files.items():
            keep = []
            for p in paths:
                mode, problem = checked[p]
                if problem:
                    problems.append(InputProblem(p, problem, cls, split))
                else:
                    keep.append(p)
                    if mode != "RGB":
                        converted[str(mode)] += 1
            out[cls] = keep
        return out

    train, test = good("train", train), good("test", test)
    empty = {p.cls for p in problems if p.split == "train" and p.problem == _EMPTY}
    kept = []
    for cls, paths in train.items():
        if len(paths) < minimum and cls not in empty:
            problems.append(InputProblem(
                f"{root / cls}/", f"class {cls!r} has {len(paths)} usable image(s), fewer than "
                f"dataset.min_images_per_class = {minimum}", cls, "train",
            ))  # fmt: skip
        if len(paths) >= minimum:
            kept.append(cls)
    for cls in test:
        if cls not in train:
            problems.append(InputProblem(
                f"{test_root}/{cls}/", f"test class {cls!r} has no class folder in {root} "
                "(its test images are not used)", cls, "test",
            ))  # fmt: skip
    if len(kept) < 2:
        what = f"only the class {kept[0]!r}" if kept else "no class"
        problems.append(InputProblem(
            f"{root}/", f"{what} with at least {minimum} usable images; a classifier needs at "
            "least 2 classes (expected one subfolder per class)", None, "train", skippable=False,
        ))  # fmt: skip
    return FolderPlan(
        classes=kept,
        train={c: train[c] for c in kept},
        test={c: test.get(c, []) for c in kept} if test_root else {},
        problems=sorted(problems, key=lambda p: (p.split != "train", p.path)),
        converted=converted,
    )


def inspect_folder(section: Mapping[str, Any]) -> Inspection:
    """Classes, training images per class and problems, before any work (no image is kept).

    Without ``test_path`` the counts are those before the held-out split took its share.
    """
    plan = plan_folder(section)
    counts = np.array([len(plan.train[c]) for c in plan.classes], dtype=np.int64)
    return Inspection(plan.classes, counts, plan.problems, dict(plan.converted))


def _read_all(paths: list[str], size: int, done: list[int], total: int) -> np.ndarray:
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i], _ = read_image(p, size)
        done[0] += 1
        if done[0] % _LOG_EVERY == 0:
            log.info("read %d / %d images", done[0], total)
    return out


def load_folder(section: Mapping[str, Any]) -> ImageDataset:
    """Read an image folder (see the module docstring) into an :class:`ImageDataset`.

    Reads only what :func:`plan_folder` keeps; the caller has decided on the problems
    (:func:`poisonscan.datasets.check_input`). Without ``test_path`` a test split is held
    out (``test_fraction``, whole near-duplicate groups, seeded by ``seed``).

    Returns
    -------
    ImageDataset
        uint8 (n, S, S, 3) images with S = ``image_size``; labels = positions of the class
        folder names in sorted order; ``extra``: ``path_train`` (n,) and ``path_test`` (m,)
        str, ``group_train`` (n,) int64 near-duplicate group ids; ``meta``: ``name``,
        ``path``, ``test_path``, ``image_size``, ``split`` (``given`` or ``held_out``),
        ``test_fraction``, ``seed``, ``duplicate_distance``, ``n_groups``, ``n_problems``,
        ``converted`` (mode -> count).
    """
    from poisonscan.datasets.split import duplicate_groups, holdout_split

    plan = plan_folder(section)
    size = int(section["image_size"])
    labels = {c: i for i, c in enumerate(plan.classes)}
    paths = [p for c in plan.classes for p in plan.train[c]]
    y = np.array([labels[c] for c in plan.classes for _ in plan.train[c]], dtype=np.int64)
    test_paths = [p for c in plan.classes for p in plan.test.get(c, [])]
    y_test = np.array([labels[c] for c in plan.classes for _ in plan.test.get(c, [])],
                      dtype=np.int64)  # fmt: skip
    total, done = len(paths) + len(test_paths), [0]
    t0 = time.perf_counter()
    x = _read_all(paths, size, done, total)
    x_test = _read_all(test_paths, size, done, total)
    log.info("read %d images of %d classes in %.1f s", total, len(plan.classes),
             time.perf_counter() - t0)  # fmt: skip
    distance = int(section["duplicate_distance"])
    groups = duplicate_groups(x, y, distance)
    if section.get("test_path"):
        split = "given"
        train = np.ones(len(y), dtype=bool)
    else:
        split = "held_out"
        train = ~holdout_split(y, groups, float(section["test_fraction"]), int(section["seed"]))
        x_test, y_test = x[~train], y[~train]
        test_paths = [p for p, t in zip(paths, train, strict=True) if not t]
    log.info("%d near-duplicate groups among %d training images; test split %s (%d images)",
             len(np.unique(groups)), len(y), split, len(y_test))  # fmt: skip
    return ImageDataset(
        x_train=x[train],
        y_train=y[train],
        x_test=x_test,
        y_test=y_test,
        class_names=list(plan.classes),
        meta={
            "name": "folder",
            "path": str(section["path"]),
            "test_path": section.get("test_path"),
            "image_size": size,
            "split": split,
            "test_fraction": float(section["test_fraction"]) if split == "held_out" else None,
            "seed": int(section["seed"]),
            "duplicate_distance": distance,
            "n_groups": len(np.unique(groups[train])),
            "n_problems": len(plan.problems),
            "converted": dict(plan.converted),
        },
        extra={
            "path_train": np.array([p for p, t in zip(paths, train, strict=True) if t], dtype=str),
            "path_test": np.array(test_paths, dtype=str),
            "group_train": groups[train],
        },
    )
