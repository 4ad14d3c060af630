"""Bring your own model: load a user's model file, check it against the dataset, measure it.

``model.file`` is a safetensors ``state_dict`` of a registered architecture (``model.name``)
or a TorchScript file (:mod:`poisonscan.modelfile`); ``model.normalization`` says how the
model expects its input: ``x = (pixel / 255 - mean) / std`` per RGB channel, (n, 3, S, S)
float32 with S = ``dataset.image_size``. Rule ``import_model`` (instead of ``train``) turns
it into the checkpoint + sidecar + ``metrics.json`` that ``train`` writes
(:func:`poisonscan.checkpoints.save_checkpoint`), so every later step runs unchanged. The
sidecar records ``origin: "user"`` and the file's sha256: a model from an untrusted source
can be made to hide its trigger from explanations, which the report must say.

A TorchScript model is wrapped in :class:`ScriptedClassifier`: an ``nn.Module`` whose
``penultimate`` is a hookable identity on the input of the model's last layer, found by
running the module's children in order (flattening before a ``Linear``) and keeping that
split only if it reproduces the model's output; otherwise the activations are the logits
(a warning says so, and the sidecar's ``activations`` records it).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from poisonscan.inference import Normalization, predict, triggered_test_success
from poisonscan.modelfile import SAFETENSORS, TORCHSCRIPT, ModelFileError, model_format
from poisonscan.models import build_model, count_parameters
from poisonscan.storage import ImageDataset, StoreError, file_sha256

__all__ = [
    "ScriptedClassifier",
    "UserModel",
    "load_scripted_checkpoint",
    "load_user_model",
    "test_metrics",
]

log = logging.getLogger(__name__)


class ScriptedClassifier(nn.Module):
    """A TorchScript classifier as an ``nn.Module`` with a hookable ``penultimate`` layer.

    Parameters
    ----------
    program : torch.jit.ScriptModule
        The loaded TorchScript model, logits (n, K) from (n, 3, S, S).
    probe : Tensor of shape (n, 3, S, S)
        Inputs on which a split into stages must reproduce ``program``'s output.
    """

    def __init__(self, program: torch.jit.ScriptModule, probe: Tensor) -> None:
        super().__init__()
        self.program = program
        self.features_out = nn.Identity()  # hooks see the penultimate features here
        # children of the program, not registered again (their weights stay in ``program``)
        self.__dict__["_stages"] = _split(program, probe)
        self.activations = "penultimate" if self._stages else "logits"

    @property
    def penultimate(self) -> nn.Module:
        """The identity module whose output is the input of the last layer (or the logits)."""
        return self.features_out

    def forward(self, x: Tensor) -> Tensor:
        if not self._stages:
            return self.features_out(self.program(x))
        body, head = self._stages
        return head(self.features_out(_run(body, x)))


def _run(stages: Sequence[nn.Module], x: Tensor) -> Tensor:
    for m in stages:
        if getattr(m, "original_name", "") == "Linear" and x.ndim > 2:
            x = x.flatten(1)
        x = m(x)
    return x


def _split(program: nn.Module, probe: Tensor) -> tuple[list[nn.Module], nn.Module] | None:
    """(stages before the last child, the last child) if they reproduce ``program``."""
    children = [m for _, m in program.named_children()]
    if len(children) < 2:
        return None
    try:
        with torch.no_grad():
            whole = program(probe)
            staged = children[-1](_flat_for(children[-1], _run(children[:-1], probe)))
    except Exception:
        return None
    if staged.shape != whole.shape or not torch.allclose(staged, whole, rtol=1e-4, atol=1e-5):
        return None
    return children[:-1], _Flatten(children[-1])


def _flat_for(m: nn.Module, x: Tensor) -> Tensor:
    return x.flatten(1) if getattr(m, "original_name", "") == "Linear" and x.ndim > 2 else x


class _Flatten(nn.Module):
    """The last stage, flattening its input first where it is a ``Linear``."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.__dict__["m"] = m  # not registered: it is a child of the program already

    def forward(self, x: Tensor) -> Tensor:
        return self.m(_flat_for(self.m, x))


@dataclass
class UserModel:
    """A loaded user model.

    Attributes
    ----------
    module : nn.Module
        The classifier (a :class:`ScriptedClassifier` for TorchScript), in eval mode.
    weights : nn.Module
        The module whose ``state_dict`` is the checkpoint's (the program for TorchScript).
    normalization : Normalization
    format : str
        ``safetensors`` or ``torchscript``.
    architecture : str
        ``model.name``, or ``torchscript``.
    file : str
    sha256 : str
        Of the user's file.
    activations : str
        ``penultimate`` or ``logits`` (what the explain step stores as activations).
    """

    module: nn.Module
    weights: nn.Module
    normalization: Normalization
    format: str
    architecture: str
    file: str
    sha256: str
    activations: str = "penultimate"

    def provenance(self) -> dict[str, Any]:
        """The sidecar's record of where the model came from."""
        return {"origin": "user", "file": self.file, "sha256": self.sha256,
                "format": self.format, "activations": self.activations}  # fmt: skip


def _normalization(section: Mapping[str, Any]) -> Normalization:
    norm = section["normalization"]
    return Normalization(tuple(float(v) for v in norm["mean"]),  # type: ignore[arg-type]
                         tuple(float(v) for v in norm["std"]))  # type: ignore[arg-type]  # fmt: skip


def _class_dims(name: str, image_size: int) -> dict[str, int]:
    """Tensor name -> axis whose length is the class count, for architecture ``name``."""
    a = build_model(name, 2, image_size).state_dict()
    b = build_model(name, 3, image_size).state_dict()
    out = {}
    for key, t in a.items():
        diff = [i for i, (x, y) in enumerate(zip(t.shape, b[key].shape, strict=True)) if x != y]
        if diff:
            out[key] = diff[0]
    return out


def _load_safetensors(file: Path, name: str, n_classes: int, image_size: int) -> nn.Module:
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
    except Exception as err:
        raise ModelFileError(f"model file {file}: not a readable safetensors file ({err})") from err
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    for key, dim in _class_dims(name, image_size).items():
        if key in state and state[key].ndim > dim and state[key].shape[dim] != n_classes:
            raise ModelFileError(
                f"model file {file}: the model outputs {state[key].shape[dim]} classes, the "
                f"dataset has {n_classes} (tensor {key!r} of shape {tuple(state[key].shape)})"
            )
    model = build_model(name, n_classes, image_size)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or wrong:
        parts = [f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("other shapes", wrong)) if keys]  # fmt: skip
        raise ModelFileError(
            f"model file {file} does not hold weights of architecture {name!r} (model.name) "
            f"for {image_size}x{image_size} images ({'; '.join(parts)})"
        )
    model.load_state_dict(state)
    return model


def _load_torchscript(file: Path) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is what users have
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(file), map_location="cpu")
    except Exception as err:
        raise ModelFileError(f"model file {file}: not a loadable TorchScript file ({err})") from err


def _wrap(program: torch.jit.ScriptModule, image_size: int, file: Path | str) -> ScriptedClassifier:
    probe = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    program.eval()
    try:
        with torch.no_grad():
            out = program(probe)
    except Exception as err:
        raise ModelFileError(
            f"model file {file} fails on (2, 3, {image_size}, {image_size}) float32 input "
            f"(model.input_size / dataset.image_size {image_size}): {err}"
        ) from err
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelFileError(
            f"model file {file} returns {shape} for 2 images; expected logits (2, n_classes)"
        )
    model = ScriptedClassifier(program, probe)
    if model.activations == "logits":
        log.warning("%s: its children do not chain to its output; the stored activations are "
                    "its logits, not its penultimate features", file)  # fmt: skip
    return model


def load_user_model(
    section: Mapping[str, Any],
    n_classes: int,
    image_size: int,
    device: torch.device | str = "cpu",
) -> UserModel:
    """Load ``section["file"]`` (the ``model`` config section) and check it fits the dataset.

    Parameters
    ----------
    section : mapping
        The ``model`` config section: ``file``, ``name``, ``normalization``.
    n_classes : int
        Classes of the dataset: the model's output size must equal it.
    image_size : int
        Side S of the (n, 3, S, S) input.
    device : torch.device or str, default "cpu"

    Raises
    ------
    ModelFileError
        Naming the file: not found, not loadable, weights of another architecture or image
        size, or an output size other than ``n_classes`` (both numbers are named).
    """
    file = Path(section["file"])
    fmt = model_format(file)
    if fmt == SAFETENSORS:
        module = weights = _load_safetensors(file, section["name"], n_classes, image_size)
        architecture, activations = section["name"], "penultimate"
    else:
        weights = _load_torchscript(file)
        module = _wrap(weights, image_size, file)
        architecture, activations = TORCHSCRIPT, module.activations
    module.to(device).eval()
    with torch.no_grad():
        probe = torch.zeros(1, 3, image_size, image_size, device=device)
        k = module(probe).shape[-1]
    if k != n_classes:
        raise ModelFileError(
            f"model file {file}: the model outputs {k} classes, the dataset has {n_classes}"
        )
    return UserModel(module, weights, _normalization(section), fmt, architecture, str(file),
                     file_sha256(file), activations)  # fmt: skip


def load_scripted_checkpoint(
    checkpoint: Path, meta: Mapping[str, Any], state: Mapping[str, Tensor]
) -> nn.Module:
    """The model of a checkpoint whose sidecar says ``architecture: torchscript``.

    The program is the file ``meta["torchscript_file"]`` beside ``checkpoint`` (checked
    against ``meta["torchscript_sha256"]``); its weights are the checkpoint's ``state``.

    Raises
    ------
    StoreError
        If the program file is missing or its sha256 differs from the sidecar's.
    """
    program_file = checkpoint.parent / str(meta.get("torchscript_file"))
    if not program_file.is_file():
        raise StoreError(f"{checkpoint}: its TorchScript program {program_file} is missing",
                         checkpoint)  # fmt: skip
    if file_sha256(program_file) != meta.get("torchscript_sha256"):
        raise StoreError(f"{program_file} does not match the torchscript_sha256 of the sidecar "
                         f"of {checkpoint} (damaged or replaced)", checkpoint)  # fmt: skip
    program = _load_torchscript(program_file)
    program.load_state_dict(dict(state))
    return _wrap(program, int(meta["image_size"]), program_file)


def test_metrics(model: nn.Module, norm: Normalization, data: ImageDataset) -> dict[str, Any]:
    """What ``train``'s metrics.json holds about the test split, for a model not trained here.

    Returns
    -------
    dict
        ``clean_acc``, ``per_class_acc``; ``asr`` and ``asr_per_class`` when the dataset
        holds triggered test images (an attack scenario; NaN and {} otherwise); ``n_parameters``,
        ``n_test``, and ``epochs`` 0 / ``best_epoch`` None (nothing was trained).
    """
    pred = predict(model, norm, data.x_test)
    per_class = {
        str(int(c)): float(np.mean(pred[data.y_test == c] == c)) for c in np.unique(data.y_test)
    }
    asr, asr_per_class = triggered_test_success(model, norm, data)
    return {
        "clean_acc": float(np.mean(pred == data.y_test)) if len(pred) else math.nan,
        "per_class_acc": per_class,
        "asr": asr,
        "asr_per_class": asr_per_class,
        "n_parameters": count_parameters(model),
        "n_test": len(data.y_test),
        "epochs": 0,
        "best_epoch": None,
        "history": [],
    }
