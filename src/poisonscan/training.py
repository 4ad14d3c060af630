"""Training, prediction, checkpoints, clean accuracy and attack success rate.

Checkpoints hold tensors only (safetensors) plus a JSON sidecar with the
architecture, classes and input normalisation, so loading never unpickles code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from poisonscan.models import build_model
from poisonscan.storage import ImageDataset, atomic_path

__all__ = [
    "Normalization",
    "TrainParams",
    "attack_success_rate",
    "attack_success_rates",
    "load_checkpoint",
    "predict",
    "save_checkpoint",
    "select_device",
    "train_model",
]

log = logging.getLogger(__name__)


def select_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed torch on every device; numpy code here takes explicit Generators."""
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation of the training images on a [0, 1] scale."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def fit(cls, images: np.ndarray) -> Normalization:
        x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        return cls(tuple(x.mean(0).tolist()), tuple(np.maximum(x.std(0), 1e-6).tolist()))

    def to_tensor(self, images: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
        """uint8 (n, H, W, C) -> normalised float32 (n, C, H, W) on ``device``."""
        x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        return (x - mean) / std

    def bounds(self) -> tuple[Tensor, Tensor]:
        """The normalised images of all-black and all-white pixels, shape (1, C, 1, 1) each."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (0 - mean) / std, (1 - mean) / std


SCHEDULES: dict[str, Callable[[int], Callable[[int], float]]] = {
    "constant": lambda epochs: lambda epoch: 1.0,
    "cosine": lambda epochs: lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)),
}


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of :func:`train_model` (the ``training`` config section)."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    shift: int = 2
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainParams:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown training parameters {unknown}; allowed: {sorted(known)}")
        return cls(**cfg)


@dataclass
class TrainResult:
    model: nn.Module
    normalization: Normalization
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def train_model(
    data: ImageDataset,
    model_name: str,
    params: TrainParams,
    device: torch.device | None = None,
) -> TrainResult:
    """Train ``model_name`` on ``data.x_train``; log one line per epoch.

    Returns the model in eval mode together with its input normalisation and
    the per-epoch history (loss, train accuracy, test accuracy, seconds).
    """
    device = device or select_device()
    seed_everything(params.seed)
    norm = Normalization.fit(data.x_train)
    model = build_model(model_name, data.n_classes, data.image_shape[0]).to(device)
    opt = torch.optim.Adam(
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    if params.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {params.schedule!r}; available: {list(SCHEDULES)}")
    # Cosine decay lets the BatchNorm running statistics settle with the weights: at a
    # constant rate the eval-mode accuracy of the last epoch jumps by several points.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, SCHEDULES[params.schedule](params.epochs))
    x = norm.to_tensor(data.x_train)
    y = torch.as_tensor(data.y_train)
    gen = torch.Generator().manual_seed(params.seed)
    loss_fn = nn.CrossEntropyLoss()
    result = TrainResult(model=model, normalization=norm)
    start = time.perf_counter()
    for epoch in range(1, params.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(y), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for batch in order.split(params.batch_size):
            if len(batch) < 2:  # BatchNorm cannot train on a single sample
                continue
            xb, yb = x[batch].to(device), y[batch].to(device)
            if params.shift:
                xb = random_shift(xb, params.shift, gen)
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(batch)
            correct += int((out.argmax(1) == yb).sum())
            total += len(batch)
        sched.step()
        test_acc = float(np.mean(predict(model, norm, data.x_test, device) == data.y_test))
        row = {
            "epoch": epoch,
            "loss": loss_sum / max(total, 1),
            "train_acc": correct / max(total, 1),
            "test_acc": test_acc,
            "seconds": time.perf_counter() - t0,
        }
        result.history.append(row)
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.4f  test acc %.4f  %.1f s",
            epoch, params.epochs, row["loss"], row["train_acc"], test_acc, row["seconds"],
        )  # fmt: skip
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by a random whole number of pixels in [-max_shift, max_shift].

    Borders are extended (replicated). Whole-pixel shifts keep a trigger's pixels exact;
    the augmentation stops the network from memorising poisoned images pixel by pixel,
    so it has to learn the trigger itself.
    """
    n, _, h, w = x.shape
    m = max_shift
    padded = nn.functional.pad(x, (m, m, m, m), mode="replicate").permute(0, 2, 3, 1)
    shifts = torch.randint(-m, m + 1, (n, 2), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device) + m - shifts[:, :1]  # (n, h)
    cols = torch.arange(w, device=x.device) + m - shifts[:, 1:]  # (n, w)
    sample = torch.arange(n, device=x.device)[:, None, None]
    return padded[sample, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def predict(
    model: nn.Module,
    norm: Normalization,
    images: np.ndarray,
    device: torch.device | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """Predicted class ids for uint8 images (n, H, W, C), shape (n,) int64."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [
        model(norm.to_tensor(images[i : i + batch_size], device)).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def attack_success_rate(predictions: np.ndarray, target: int) -> float:
    """Share of triggered (non-target) test images predicted as ``target``."""
    return float(np.mean(predictions == target)) if predictions.size else float("nan")


def attack_success_rates(
    predictions: np.ndarray, original_labels: np.ndarray, target: int
) -> tuple[float, dict[str, float]]:
    """Attack success per original class of the triggered test images, and their mean.

    For a single-source attack the mean is the usual attack success rate; for
    an all-class trigger (label-consistent attack) it is the mean attack
    success rate over classes (mAER). Images of the target class itself are
    ignored: they are "predicted as the target" without any attack.

    Parameters
    ----------
    predictions : ndarray of shape (n,), int
        Predicted classes of the triggered test images.
    original_labels : ndarray of shape (n,), int
        Their true classes before triggering.
    target : int

    Returns
    -------
    mean : float
        NaN when no non-target image was triggered.
    per_class : dict of str to float
        Class id (as a string, for JSON) -> share predicted as ``target``.
    """
    if predictions.shape != original_labels.shape:
        raise ValueError(
            f"{predictions.shape[0]} predictions for {original_labels.shape[0]} labels"
        )
    per_class = {
        str(int(c)): attack_success_rate(predictions[original_labels == c], target)
        for c in np.unique(original_labels)
        if c != target
    }
    mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return mean, per_class


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    model_name: str,
    data: ImageDataset,
    norm: Normalization,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write ``path`` (safetensors weights) and ``path`` + ``.json`` (the sidecar)."""
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
    path: str | os.PathLike[str], device: torch.device | None = None
) -> tuple[nn.Module, Normalization, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors only, no pickle).

    Raises
    ------
    FileNotFoundError
        If the weights or the sidecar are missing.
    ValueError
        If the weights do not fit the architecture named in the sidecar, or the
        file is not a safetensors file.
    """
    path = Path(path)
    side_path = Path(f"{path}.json")
    for p in (path, side_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {p}")
    meta = json.loads(side_path.read_text())
    model = build_model(meta["architecture"], meta["n_classes"], meta["image_size"])
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a safetensors checkpoint ({err})") from err
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
