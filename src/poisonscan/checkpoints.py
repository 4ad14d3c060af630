"""Checkpoints: safetensors weights and a JSON sidecar (architecture, classes, input
normalisation, provenance), so that loading never unpickles code."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from poisonscan.devices import select_device
from poisonscan.inference import Normalization
from poisonscan.models import build_model
from poisonscan.storage import (
    ImageDataset,
    ProvenanceError,
    StoreError,
    atomic_path,
    file_sha256,
    read_sidecar,
)
from poisonscan.usermodel import load_scripted_checkpoint

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    model_name: str,
    data: ImageDataset,
    norm: Normalization,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``path`` (safetensors weights) and ``path`` + ``.json`` (the sidecar).

    The sidecar records the architecture, classes, image size, input
    normalisation and the weights' sha256, plus ``extra`` (JSON-able; the
    workflow adds the model and training config and the dataset file's sha256).
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    sidecar = {
        "architecture": model_name,
        "n_classes": data.n_classes,
        "class_names": list(data.class_names),
        "image_size": data.image_shape[0],
        "normalization": asdict(norm),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    sidecar["weights_sha256"] = file_sha256(path)
    with atomic_path(f"{path}.json") as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True))


def load_checkpoint(
    path: str | os.PathLike[str],
    device: torch.device | None = None,
    dataset: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, Normalization, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors only, no pickle).

    Parameters
    ----------
    path : path
        The weights; the sidecar is ``path`` + ``.json``.
    device : torch.device, optional
        Default :func:`select_device`.
    dataset : path, optional
        The dataset file the checkpoint must have been trained on: its sha256 is
        compared with the sidecar's ``dataset_sha256``.

    Raises
    ------
    FileNotFoundError
        If the weights or the sidecar are missing.
    StoreError
        If the sidecar is not valid JSON or lacks ``weights_sha256`` (or
        ``dataset_sha256`` when ``dataset`` is given), the weights' sha256 differs
        from the sidecar's, or the file is not a safetensors file (a pickle, for
        example: it is never unpickled); the message names the file.
    ProvenanceError
        If ``dataset`` is not the file the checkpoint was trained on (``path`` of the
        error: the dataset, the upstream output).
    ValueError
        If the weights do not fit the architecture named in the sidecar.
    """
    path = Path(path)
    side_path = Path(f"{path}.json")
    for p in (path, side_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {p}")
    meta = read_sidecar(side_path, ("weights_sha256", "dataset_sha256") if dataset else
                        ("weights_sha256",))  # fmt: skip
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise StoreError(f"{path} is not a safetensors checkpoint ({err})", path) from err
    if file_sha256(path) != meta["weights_sha256"]:
        raise StoreError(
            f"checkpoint {path} does not match the weights_sha256 of its sidecar {side_path} "
            "(damaged or replaced)",
            path,
        )
    if dataset is not None and file_sha256(dataset) != meta["dataset_sha256"]:
        raise ProvenanceError(
            f"{dataset} is not the dataset the checkpoint {path} was trained on (its sha256 "
            f"differs from the dataset_sha256 of {side_path})",
            dataset,
        )
    if meta["architecture"] == "torchscript":  # a user's TorchScript model (rule import_model)
        model = load_scripted_checkpoint(path, meta, state)
    else:
        model = build_model(meta["architecture"], meta["n_classes"], meta["image_size"])
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"{path} does not hold weights of architecture {meta['architecture']!r}: {err}"
            ) from err
    device = device or select_device()
    model.to(device).eval()
    norm = Normalization(**{k: tuple(v) for k, v in meta["normalization"].items()})
    return model, norm, meta
