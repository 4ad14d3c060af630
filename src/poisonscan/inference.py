"""A trained classifier on uint8 images: normalisation, predictions, accuracy, attack success."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from poisonscan.storage import ImageDataset

__all__ = [
    "Normalization",
    "attack_success_rate",
    "attack_success_rates",
    "evaluate",
    "predict",
    "triggered_test_success",
]


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
        return self.normalize(torch.as_tensor(images, device=device).permute(0, 3, 1, 2))

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (n, C, H, W) tensor -> normalised float32 (n, C, H, W) on its device."""
        x = images.float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def bounds(self) -> tuple[Tensor, Tensor]:
        """The normalised images of all-black and all-white pixels, shape (1, C, 1, 1) each."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (0 - mean) / std, (1 - mean) / std


@torch.no_grad()
def evaluate(
    model: nn.Module,
    norm: Normalization,
    images: np.ndarray,
    labels: np.ndarray,
    device: torch.device | None = None,
    batch_size: int = 512,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on uint8 images (n, H, W, C); NaN, NaN when n = 0."""
    if len(labels) == 0:
        return math.nan, math.nan
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(images), batch_size):
        out = model(norm.to_tensor(images[i : i + batch_size], device))
        y = torch.as_tensor(labels[i : i + batch_size], device=device)
        correct += int((out.argmax(1) == y).sum())
        loss += float(nn.functional.cross_entropy(out.float(), y, reduction="sum"))
    model.train(was_training)
    return correct / len(labels), loss / len(labels)


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


def attack_success_rate(predictions: np.ndarray, target: int | np.ndarray) -> float:
    """Share of triggered (non-target) test images predicted as their ``target``."""
    return float(np.mean(predictions == target)) if predictions.size else float("nan")


def attack_success_rates(
    predictions: np.ndarray, original_labels: np.ndarray, targets: int | np.ndarray
) -> tuple[float, dict[str, float]]:
    """Attack success per original class of the triggered test images, and their mean.

    For a single-source attack the mean is the usual attack success rate; for
    an all-class trigger (label-consistent attack, all-to-all) it is the mean
    attack success rate over classes (mAER). Images whose true class is their
    target are ignored: they are "predicted as the target" without any attack.

    Parameters
    ----------
    predictions : ndarray of shape (n,), int
        Predicted classes of the triggered test images.
    original_labels : ndarray of shape (n,), int
        Their true classes before triggering.
    targets : int or ndarray of shape (n,), int
        The label the attacker wants for each image (one int: the same for all).

    Returns
    -------
    mean : float
        NaN when no non-target image was triggered.
    per_class : dict of str to float
        Class id (as a string, for JSON) -> share predicted as its target.
    """
    if predictions.shape != original_labels.shape:
        raise ValueError(
            f"{predictions.shape[0]} predictions for {original_labels.shape[0]} labels"
        )
    targets = np.broadcast_to(np.asarray(targets, dtype=np.int64), original_labels.shape)
    attacked = original_labels != targets
    per_class = {
        str(int(c)): attack_success_rate(predictions[keep], targets[keep])
        for c in np.unique(original_labels[attacked])
        for keep in [attacked & (original_labels == c)]
    }
    mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return mean, per_class


def triggered_test_success(
    model: nn.Module, norm: Normalization, data: ImageDataset
) -> tuple[float, dict[str, float]]:
    """:func:`attack_success_rates` of ``model`` on the dataset's triggered test images.

    The targets are ``extra["y_test_triggered_target"]`` (datasets poisoned before it was
    recorded: the attack's ``target`` for every image); NaN and {} without triggered images.
    """
    triggered = data.extra.get("x_test_triggered")
    if triggered is None or not len(triggered):
        return float("nan"), {}
    targets = data.extra.get("y_test_triggered_target")
    if targets is None:
        target = data.meta.get("attack", {}).get("target")
        if target is None:
            return float("nan"), {}
        targets = int(target)
    return attack_success_rates(
        predict(model, norm, triggered), data.extra["y_test_triggered_original"], targets
    )
