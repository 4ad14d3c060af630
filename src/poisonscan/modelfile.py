"""A user's model file (``model.file``): its format and the config checks, without torch.

Two formats are accepted, told apart by their first bytes, not by the file name:

safetensors
    The ``state_dict`` of a registered architecture (``model.name``, one of
    :data:`poisonscan.models.MODELS`): 8 bytes of header length, then a JSON header.
TorchScript
    A ``torch.jit.save`` archive (a zip file) of any classifier of (n, 3, S, S) images.
    Only the gradient-based explanations work on it (:data:`TORCHSCRIPT_METHODS`): zennit's
    LRP rules, guided backprop and deconvnet are attached to layers by their Python type
    (``nn.Conv2d``, ``nn.ReLU`` ...), which a TorchScript module does not have, so they
    would silently compute a plain gradient; Grad-CAM needs a forward hook, which a
    TorchScript module refuses. The config validation stops such a combination.

The config validation (:func:`check_model_config`) checks the file's format and the
combination with the other keys; whether the weights fit the architecture and the model's
output size equals the class count is checked by :mod:`poisonscan.usermodel` (it needs
torch): by ``poisonscan scan`` before it starts, and by rule ``import_model``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SAFETENSORS",
    "TORCHSCRIPT",
    "TORCHSCRIPT_METHODS",
    "ModelFileError",
    "check_model_config",
    "model_format",
    "safetensors_shapes",
]

SAFETENSORS = "safetensors"
TORCHSCRIPT = "torchscript"
# Explanation methods that need nothing but the model's input gradient.
TORCHSCRIPT_METHODS = ("saliency", "smoothgrad", "integrated_gradients")

_ZIP = b"PK\x03\x04"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and what is wrong."""


def safetensors_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the JSON header of a safetensors file (no tensor is read).

    Raises
    ------
    ModelFileError
        If the file is not a safetensors file.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelFileError(f"{p}: not a safetensors file (shorter than its header)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or n > p.stat().st_size - 8:
                raise ModelFileError(f"{p}: not a safetensors file (bad header length {n})")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{p}: not a safetensors file ({err})") from err
    if not isinstance(header, dict):
        raise ModelFileError(f"{p}: not a safetensors file (its header is not a JSON object)")
    try:
        return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items()
                if k != "__metadata__"}  # fmt: skip
    except (TypeError, KeyError, ValueError) as err:
        raise ModelFileError(f"{p}: not a safetensors file (malformed header: {err})") from err


def model_format(path: str | os.PathLike[str]) -> str:
    """:data:`SAFETENSORS` or :data:`TORCHSCRIPT`, from the file's content.

    Raises
    ------
    ModelFileError
        If the file does not exist or is neither.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file {p} does not exist")
    try:
        with open(p, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise ModelFileError(f"model file {p} cannot be read ({err})") from err
    if magic == _ZIP:
        if _is_torch_save(p):
            raise ModelFileError(_TORCH_SAVE.format(p=p, what="a torch.save checkpoint"))
        return TORCHSCRIPT
    if magic[:1] == b"\x80":  # a pickle protocol 2+ header: torch.save's legacy format
        raise ModelFileError(_TORCH_SAVE.format(p=p, what="a pickle (torch.save, legacy format)"))
    try:
        safetensors_shapes(p)
    except ModelFileError as err:
        raise ModelFileError(
            f"model file {p} is neither a safetensors checkpoint nor a TorchScript file "
            f"(torch.jit.save); {err}"
        ) from err
    return SAFETENSORS


# A torch.save file holds pickles, and unpickling can run any code: poisonscan never does.
_TORCH_SAVE = (
    "model file {p} is {what}, which poisonscan does not load (unpickling can run any code); "
    "save the weights with safetensors (from safetensors.torch import save_file; "
    "save_file(model.state_dict(), 'model.safetensors')) or the model with torch.jit.save"
)


def _is_torch_save(path: Path) -> bool:
    """True for a zip archive of ``torch.save`` (``<name>/data.pkl``, no ``<name>/code/``
    of TorchScript); read from the archive's directory, nothing is unpickled."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False  # not a readable zip: loading it as TorchScript names the problem
    code = any("/code/" in n for n in names)
    return not code and any(n.endswith("/data.pkl") or n == "data.pkl" for n in names)


def check_model_config(cfg: Mapping[str, Any]) -> str | None:
    """Check ``model.file`` and its combination with the other keys; return its format.

    Returns
    -------
    str or None
        The format of ``model.file``; None when no file is given (the model is trained).

    Raises
    ------
    ModelFileError
        Naming the config key: the file is missing or of no known format; ``input_size``
        differs from ``dataset.image_size``; a TorchScript file with an explanation method
        or activation layer it cannot support.
    """
    model = cfg["model"]
    if not model.get("file"):
        return None
    try:
        fmt = model_format(model["file"])
    except ModelFileError as err:
        raise ModelFileError(f"config key 'model.file': {err}") from err
    size = cfg["dataset"]["image_size"]
    if model.get("input_size") is not None and model["input_size"] != size:
        raise ModelFileError(
            f"config key 'model.input_size': {model['input_size']} differs from "
            f"dataset.image_size {size}; set dataset.image_size: {model['input_size']} (images "
            "are resized to it when they are read)"
        )
    explain = cfg["explain"]
    if fmt == TORCHSCRIPT and explain["method"] not in TORCHSCRIPT_METHODS:
        raise ModelFileError(
            f"config key 'explain.method': {explain['method']!r} cannot explain the TorchScript "
            f"model {model['file']} (its rules attach to nn.Module layers, which TorchScript "
            f"does not expose); use one of {', '.join(TORCHSCRIPT_METHODS)}, or give a "
            "safetensors checkpoint of a registered architecture (model.name)"
        )
    if fmt == TORCHSCRIPT and explain["activation_layer"] != "penultimate":
        raise ModelFileError(
            f"config key 'explain.activation_layer': {explain['activation_layer']!r} cannot be "
            f"hooked in the TorchScript model {model['file']}; use penultimate"
        )
    return fmt
