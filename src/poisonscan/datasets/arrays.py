"""A dataset in one ``.npz`` file, as IBM ART and most training scripts hold it in memory.

Keys (no pickles)::

    x (n, H, W, C) or (n, C, H, W) or (n, H, W), y (n,) or one-hot (n, K)   one set, or
    x_train, y_train, x_test, y_test                                       given splits
    names (K,) str, optional          class names (default "0", "1", ...)
    group_train (n,) int, optional    near-duplicate groups (e.g. GTSRB track ids)

Images: C in {1, 3, 4} (grey replicated, alpha dropped); uint8 as is; uint16 scaled by
255/65535; floats with values in [0, 1] scaled by 255, in [0, 255] taken as they are (any
other range, or a non-finite value, is an error); resized to ``image_size`` like the image
folder's files. Labels: integers 0 .. K-1 (floats holding integers are accepted). Each image's
identity is ``<file>#<key>[<index>]`` in ``extra["path_train"]`` / ``extra["path_test"]``.
Without ``x_test``, a test split is held out as for an image folder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from poisonscan.datasets._base import DatasetError, InputProblem, Inspection
from poisonscan.storage import ImageDataset, read_npz

__all__ = ["inspect_npz", "load_npz"]

log = logging.getLogger(__name__)

_SPLITS = (("x_train", "y_train"), ("x_test", "y_test"))
_CHANNELS = (1, 3, 4)


def _fail(path: Path, what: str) -> DatasetError:
    return DatasetError(f"config key 'dataset.path': {path}: {what}")


def _read(path: Any) -> tuple[Path, dict[str, np.ndarray]]:
    if not isinstance(path, str) or not path:
        raise DatasetError(f"config key 'dataset.path' must name an .npz file, got {path!r}")
    p = Path(path)
    if not p.is_file():
        raise _fail(p, "does not exist or is not a file (expected an .npz file)")
    try:
        return p, read_npz(p)
    except (OSError, ValueError) as err:
        raise _fail(p, f"not a readable .npz file ({err})") from err


def _labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    """Integer labels (n,) from integer, integral float or one-hot (n, K) arrays."""
    if y.ndim == 2 and y.shape[0] == n and y.shape[1] > 1:
        y = np.argmax(y, axis=1)
    if y.shape != (n,):
        raise _fail(path, f"{key} has shape {y.shape}; expected ({n},) labels or ({n}, K) one-hot")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise _fail(path, f"{key} holds non-integer labels")
    elif not np.issubdtype(y.dtype, np.integer):
        raise _fail(path, f"{key} has dtype {y.dtype}; expected integer class ids")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise _fail(path, f"{key} holds negative class ids ({int(y.min())})")
    return y


def _image_shape(x: np.ndarray, path: Path, key: str) -> None:
    channels_last = x.ndim == 4 and x.shape[-1] in _CHANNELS
    channels_first = x.ndim == 4 and x.shape[1] in _CHANNELS and x.shape[-1] not in _CHANNELS
    if not (x.ndim == 3 or channels_last or channels_first):
        raise _fail(path, f"{key} has shape {x.shape}; expected (n, H, W), (n, H, W, C) or "
                    "(n, C, H, W) with C in 1, 3, 4")  # fmt: skip
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise _fail(path, f"{key} has dtype {x.dtype}; expected integer or float pixels")


def _layout(arrays: Mapping[str, np.ndarray], path: Path) -> list[tuple[str, str]]:
    if "x" in arrays and "y" in arrays:
        return [("x", "y")]
    missing = [k for pair in _SPLITS for k in pair if k not in arrays]
    if missing:
        raise _fail(path, f"has the arrays {sorted(arrays)}; expected x and y, or x_train, "
                    f"y_train, x_test and y_test (missing {missing})")  # fmt: skip
    return list(_SPLITS)


def _names(arrays: Mapping[str, np.ndarray], labels: list[np.ndarray], path: Path) -> list[str]:
    top = max((int(y.max()) for y in labels if y.size), default=-1)
    if "names" not in arrays:
        return [str(i) for i in range(top + 1)]
    names = [str(n) for n in np.asarray(arrays["names"]).reshape(-1)]
    if len(names) <= top:
        raise _fail(path, f"names holds {len(names)} class names, but the labels go up to {top}")
    if len(set(names)) != len(names):
        raise _fail(path, "names holds repeated class names")
    return names


def _plan(section: Mapping[str, Any]) -> tuple[Path, dict[str, np.ndarray], list[tuple[str, str]],
                                             list[str], list[int], list[InputProblem]]:  # fmt: skip
    path, arrays = _read(section.get("path"))
    layout = _layout(arrays, path)
    labels = []
    for xk, yk in layout:
        _image_shape(arrays[xk], path, xk)
        labels.append(_labels(arrays[yk], len(arrays[xk]), path, yk))
        arrays[yk] = labels[-1]
    names = _names(arrays, labels, path)
    if "group_train" in arrays and np.shape(arrays["group_train"]) != labels[0].shape:
        raise _fail(path, f"group_train has shape {np.shape(arrays['group_train'])}; expected "
                    f"{labels[0].shape} (one group id per training image)")  # fmt: skip
    minimum = int(section["min_images_per_class"])
    counts = np.bincount(labels[0], minlength=len(names))
    problems = [
        InputProblem(str(path), f"class {name!r} (id {i}) has {int(counts[i])} image(s), fewer "
                     f"than dataset.min_images_per_class = {minimum}", name)
        for i, name in enumerate(names) if counts[i] < minimum
    ]  # fmt: skip
    kept = [i for i in range(len(names)) if counts[i] >= minimum]
    if len(kept) < 2:
        what = f"only the class {names[kept[0]]!r}" if kept else "no class"
        problems.append(InputProblem(
            str(path), f"{what} with at least {minimum} images; a classifier needs at least 2 "
            "classes", None, skippable=False,
        ))  # fmt: skip
    return path, arrays, layout, names, kept, problems


def inspect_npz(section: Mapping[str, Any]) -> Inspection:
    """Classes, training images per class and problems of the npz file, before any work."""
    _, arrays, layout, names, kept, problems = _plan(section)
    counts = np.bincount(arrays[layout[0][1]], minlength=len(names))[kept]
    return Inspection([names[i] for i in kept], counts.astype(np.int64), problems)


def _to_uint8(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.uint16:
        return np.rint(x / 257.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise _fail(path, f"{key} holds NaN or infinite pixel values")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if np.issubdtype(x.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return np.rint(x * 255.0).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        return np.rint(x).astype(np.uint8)
    raise _fail(path, f"{key} holds pixel values in [{lo:g}, {hi:g}]; expected [0, 1] or "
                "[0, 255] (or uint8 / uint16)")  # fmt: skip


def _images(x: np.ndarray, size: int, path: Path, key: str) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB from any accepted layout, dtype and size."""
    if x.ndim == 4 and x.shape[-1] not in _CHANNELS:  # channels first
        x = np.moveaxis(x, 1, -1)
    x = _to_uint8(np.asarray(x), path, key)
    if x.ndim == 3:
        x = x[..., None]
    x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]  # grey; alpha dropped
    if x.shape[1:3] == (size, size):
        return np.ascontiguousarray(x)
    out = np.empty((len(x), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(x):
        out[i] = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return out


def load_npz(section: Mapping[str, Any]) -> ImageDataset:
    """Read the npz dataset (see the module docstring) into an :class:`ImageDataset`.

    Classes below ``min_images_per_class`` are left out (the caller has decided on the
    problems, :func:`poisonscan.datasets.check_input`) and the others renumbered in order.

    Returns
    -------
    ImageDataset
        As :func:`poisonscan.datasets.folder.load_folder`, with identities
        ``<file>#<key>[<index>]``; ``meta["name"] == "npz"``.
    """
    from poisonscan.datasets.split import duplicate_groups, holdout_split

    path, arrays, layout, names, kept, problems = _plan(section)
    size = int(section["image_size"])
    relabel = np.full(len(names), -1, dtype=np.int64)
    relabel[kept] = np.arange(len(kept))
    parts = []
    for xk, yk in layout:
        y = arrays[yk]
        y = relabel[y] if y.size else y
        keep = y >= 0
        x = _images(arrays[xk][keep], size, path, xk)
        ids = np.array([f"{path}#{xk}[{i}]" for i in np.flatnonzero(keep)], dtype=str)
        parts.append((x, y[keep], ids, keep))
    (x, y, ids, keep), test = parts[0], parts[1] if len(parts) > 1 else None
    distance = int(section["duplicate_distance"])
    groups = duplicate_groups(x, y, distance)
    if "group_train" in arrays:  # given groups (tracks) join the duplicates found
        groups = _join(groups, np.asarray(arrays["group_train"])[keep])
    if test is not None:
        split, train = "given", np.ones(len(y), dtype=bool)
        x_test, y_test, ids_test = test[0], test[1], test[2]
    else:
        split = "held_out"
        train = ~holdout_split(y, groups, float(section["test_fraction"]), int(section["seed"]))
        x_test, y_test, ids_test = x[~train], y[~train], ids[~train]
    log.info("%s: %d training and %d test images of %d classes (test split %s)", path,
             int(train.sum()), len(y_test), len(kept), split)  # fmt: skip
    return ImageDataset(
        x_train=x[train],
        y_train=y[train],
        x_test=x_test,
        y_test=y_test,
        class_names=[names[i] for i in kept],
        meta={
            "name": "npz",
            "path": str(section["path"]),
            "image_size": size,
            "split": split,
            "test_fraction": float(section["test_fraction"]) if split == "held_out" else None,
            "seed": int(section["seed"]),
            "duplicate_distance": distance,
            "n_groups": len(np.unique(groups[train])),
            "n_problems": len(problems),
        },
        extra={"path_train": ids[train], "path_test": ids_test, "group_train": groups[train]},
    )


def _join(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of two groupings of the same images, numbered by first image."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(a)
    _, b = np.unique(b, return_inverse=True)
    # images i ~ j if they share an id in a or in b: bipartite graph image -> (a id | b id)
    rows = np.concatenate([np.arange(n), np.arange(n)])
    cols = np.concatenate([n + a, n + a.max(initial=-1) + 1 + b])
    size = n + int(a.max(initial=-1)) + 1 + int(b.max(initial=-1)) + 1
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
    _, comp = connected_components(graph, directed=False)
    comp = comp[:n]
    _, first, inverse = np.unique(comp, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse].astype(np.int64)
