"""Layout of an explanation store (zarr), and reading it. Needs no torch.

Layout::

    explain.zarr/                 attributes: method, composite, normalization, reduction,
                                  pool, relevance_of, model_sha256, params (dict),
                                  classes (list of int), target_class (int or None)
    explain.zarr/<class id>/      one group per explained class, attributes as above + class
        heatmaps     (n, H', W')  float32, chunks (batch, H', W')
        activations  (n, D)       float32, chunks (batch, D): output of activation_layer
        index        (n,)         int64: position in the training set
        label        (n,)         int64: training label (= the class id)
        prediction   (n,)         int64: the model's prediction
        poison       (n,)         bool: ground truth (all False without an attack)

Images are grouped by their training label; ``n`` may be 0. ``target_class``
is the class a scenario analyses, the default of :func:`class_group_path`.
Every array has chunk checksums (:mod:`poisonscan.storage`); ``model_sha256``
(the checkpoint's weights) is compared with the checkpoint's sidecar by
:func:`check_model`, and a distance store records :func:`heatmaps_sha256` of the
heatmaps it was computed from (:func:`check_heatmaps`).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import zarr

from poisonscan.storage import (
    ProvenanceError,
    StoreError,
    create_array,
    read_array,
    read_sidecar,
    store_root,
)

__all__ = [
    "GROUP_ARRAYS",
    "array_sha256",
    "check_heatmaps",
    "check_model",
    "class_group_path",
    "create_class_group",
    "heatmap_group",
    "heatmaps_sha256",
    "read_explanations",
    "read_group_array",
    "store_attrs",
    "store_classes",
]

GROUP_ARRAYS = ("heatmaps", "activations", "index", "label", "prediction", "poison")

PathLike = str | os.PathLike[str]


def store_classes(store: PathLike) -> list[int]:
    """Class ids with a group in ``store``, sorted."""
    root = zarr.open_group(str(store), mode="r")
    return sorted(int(name) for name in root.group_keys() if name.isdigit())


def class_group_path(store: PathLike, cls: int | None = None) -> str:
    """Path of the group of class ``cls`` (default: the store's ``target_class``).

    The path opens as a zarr group of its own (``zarr.open_group(path)``).

    Raises
    ------
    ValueError
        If the store has no group for the class (the message lists those it has),
        or ``cls`` is None and the store names no target class.
    """
    root = zarr.open_group(str(store), mode="r")
    if cls is None:
        cls = root.attrs.get("target_class")
        if cls is None:
            raise ValueError(f"explanation store {store} names no target_class; pass a class id")
    if str(int(cls)) not in set(root.group_keys()):
        raise ValueError(
            f"explanation store {store} has no group for class {cls}; "
            f"it has classes {store_classes(store)}"
        )
    return os.path.join(str(store), str(int(cls)))


def heatmap_group(explanations: PathLike) -> str:
    """The group holding ``heatmaps``: ``explanations`` itself if it holds them (a class
    group), else the target class group of the explanation store ``explanations``."""
    if "heatmaps" in zarr.open_group(str(explanations), mode="r"):
        return str(explanations)
    return class_group_path(explanations)


def read_group_array(group: PathLike, name: str) -> np.ndarray:
    """The array ``name`` of one class group (e.g. ``explain.zarr/5``), checked.

    Raises
    ------
    ValueError
        If the group has no such array (the message lists those it has).
    StoreError
        If the array is damaged (:func:`poisonscan.storage.read_array`).
    """
    g = zarr.open_group(str(group), mode="r")
    if name not in g.array_keys():
        raise ValueError(f"{group} has no array {name!r}; it has {sorted(g.array_keys())}")
    return read_array(g, name)


def store_attrs(store: PathLike, cls: int | None = None) -> dict[str, Any]:
    """Attributes of the group of class ``cls`` (default: the target class)."""
    return dict(zarr.open_group(class_group_path(store, cls), mode="r").attrs)


def read_explanations(store: PathLike, cls: int | None = None) -> dict[str, np.ndarray]:
    """Load every array of the group of class ``cls`` (default: the target class).

    Raises
    ------
    ValueError
        If the group is missing or lacks one of :data:`GROUP_ARRAYS`.
    """
    path = class_group_path(store, cls)
    group = zarr.open_group(path, mode="r")
    missing = [k for k in GROUP_ARRAYS if k not in group]
    if missing:
        raise ValueError(f"explanation group {path} lacks the arrays {missing}")
    return {k: read_array(group, k) for k in GROUP_ARRAYS}


def create_class_group(
    root: zarr.Group,
    cls: int,
    n: int,
    heatmap_shape: tuple[int, int],
    n_features: int,
    batch: int,
    attrs: dict[str, Any],
) -> zarr.Group:
    """Create the empty group of class ``cls`` with arrays chunked by ``batch`` images."""
    group = root.create_group(str(int(cls)))
    chunk = int(batch)
    # every chunk written (even all-zero ones), so read_array can tell a damaged store
    create_array(group, "heatmaps", shape=(n, *heatmap_shape), chunks=(chunk, *heatmap_shape),
                       dtype="float32")  # fmt: skip
    create_array(group, "activations", shape=(n, n_features), chunks=(chunk, n_features),
                       dtype="float32")  # fmt: skip
    for name, dtype in (("index", "int64"), ("label", "int64"), ("prediction", "int64"),
                        ("poison", "bool")):  # fmt: skip
        create_array(group, name, shape=(n,), chunks=(chunk,), dtype=dtype)
    group.attrs.update({**attrs, "class": int(cls), "n": int(n)})
    return group


def array_sha256(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and values (C order), hex."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def heatmaps_sha256(group: PathLike) -> str:
    """:func:`array_sha256` of the (checked) ``heatmaps`` of a class group: what a distance
    store records as the heatmaps it was computed from."""
    return array_sha256(read_group_array(group, "heatmaps"))


def check_model(store: PathLike, sidecar: PathLike) -> None:
    """Check that an explanation store was computed with the checkpoint of ``sidecar``.

    Parameters
    ----------
    store : path
        The explanation store or one of its class groups.
    sidecar : path
        The checkpoint's sidecar (``model.safetensors.json``).

    Raises
    ------
    StoreError
        If the store records no ``model_sha256`` or the sidecar is damaged.
    ProvenanceError
        If the store's ``model_sha256`` is not the sidecar's ``weights_sha256``; its
        ``path`` is the sidecar (the upstream output: recomputing the checkpoint
        recomputes the store too).
    """
    root = store_root(store)
    try:
        recorded = zarr.open_group(str(root), mode="r").attrs.get("model_sha256")
    except (FileNotFoundError, ValueError) as err:
        raise StoreError(f"explanation store {root} is unreadable ({err})", root) from err
    if not recorded:
        raise StoreError(f"explanation store {root} records no model_sha256", root)
    weights = read_sidecar(sidecar)["weights_sha256"]
    if recorded != weights:
        raise ProvenanceError(
            f"explanation store {root} was computed with another checkpoint than the one of "
            f"{sidecar} (model_sha256 {recorded[:12]} in the store, weights_sha256 "
            f"{weights[:12]} in the sidecar)",
            sidecar,
        )


def check_heatmaps(store: PathLike, group: PathLike) -> None:
    """Check that ``store`` (e.g. a distance store) was computed from the heatmaps of ``group``.

    Raises
    ------
    StoreError
        If ``store`` records no ``heatmaps_sha256``.
    ProvenanceError
        If it recorded other heatmaps; its ``path`` is the explanation store holding
        ``group`` (the upstream output: recomputing it recomputes ``store`` too).
    """
    recorded = zarr.open_group(str(store), mode="r").attrs.get("heatmaps_sha256")
    if not recorded:
        raise StoreError(f"{store} records no heatmaps_sha256", store)
    found = heatmaps_sha256(group)
    if recorded != found:
        raise ProvenanceError(
            f"{store} was computed from other heatmaps than those of {group} (heatmaps_sha256 "
            f"{recorded[:12]} recorded, {found[:12]} found)",
            store_root(group),
        )
