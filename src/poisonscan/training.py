"""Training: the loop, its options by name, and the measurements of the trained model.

:func:`train_model` trains a registered model (:mod:`poisonscan.models`) with
the reference study's augmentations (each switchable), a validation split
that keeps near-duplicate groups (GTSRB's tracks) whole, early stopping on validation
accuracy with the best weights restored, and mixed precision on CUDA;
:func:`fit_and_evaluate` adds the clean accuracy and attack success on the test split
(:mod:`poisonscan.inference`). Checkpoints: :mod:`poisonscan.checkpoints`; device and
threads: :mod:`poisonscan.devices`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from poisonscan.devices import seed_everything, select_device
from poisonscan.inference import Normalization, evaluate, predict, triggered_test_success
from poisonscan.models import build_model, count_parameters
from poisonscan.parameters import from_section
from poisonscan.rulelog import PROGRESS
from poisonscan.storage import (
    ImageDataset,
)

__all__ = [
    "AUGMENTATIONS",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainParams",
    "TrainResult",
    "TrainStep",
    "fit_and_evaluate",
    "make_augmentation",
    "make_loader",
    "train_model",
    "validation_split",
]

log = logging.getLogger(__name__)


# The reference study's augmentations (torchvision, applied per image to uint8 tensors),
# in the order they are applied; the config switches each one on by name. ``hflip`` (a mirror
# image with probability 1/2) is the standard CIFAR-10 augmentation; never for traffic signs,
# whose meaning a mirror can change (keep left / keep right).
AUGMENTATIONS: dict[str, Callable[[int], v2.Transform]] = {
    "resized_crop": lambda size: v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
    "rotation": lambda size: v2.RandomRotation(15),
    "color_jitter": lambda size: v2.ColorJitter(0.1, 0.1, 0.1, 0.1),
    "affine": lambda size: v2.RandomAffine(15),
    "grayscale": lambda size: v2.RandomGrayscale(),
    "hflip": lambda size: v2.RandomHorizontalFlip(),
}


def _one_cycle(epochs: int) -> Callable[[int], float]:
    """Linear warm-up to the full rate over the first quarter, then linear decay towards 0.

    The factor of an epoch is taken at its middle, so no epoch runs at rate 0 (Smith and
    Topin 2019, "Super-convergence", with one step per epoch).
    """

    def factor(epoch: int) -> float:
        t = (epoch + 0.5) / epochs
        return t / 0.25 if t < 0.25 else (1.0 - t) / 0.75

    return factor


SCHEDULES: dict[str, Callable[[int], Callable[[int], float]]] = {
    "constant": lambda epochs: lambda epoch: 1.0,
    "cosine": lambda epochs: lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)),
    # x0.1 after half and after three quarters of the epochs
    "step": lambda epochs: lambda epoch: 0.1 ** ((epoch >= epochs / 2) + (epoch >= 0.75 * epochs)),
    "onecycle": _one_cycle,
}


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of :func:`train_model` (the ``training`` config section).

    Attributes
    ----------
    epochs : int
        Maximum number of epochs (early stopping may end training sooner).
    batch_size : int
    optimizer : {"adam", "adamw", "sgd"}
    learning_rate : float
    momentum : float
        SGD only.
    weight_decay : float
    schedule : {"constant", "cosine", "step", "onecycle"}
        Learning-rate factor per epoch, over ``epochs``.
    label_smoothing : float
        Share of the target probability spread evenly over all classes, in [0, 1)
        (Szegedy et al. 2016, "Rethinking the Inception architecture"); 0 = plain
        cross-entropy.
    augment : tuple of str
        Names from :data:`AUGMENTATIONS`, applied in that registry's order.
    shift : int
        Random translation by up to this many whole pixels (0 = off); keeps trigger pixels exact.
    validation_fraction : float
        Share of the training images held out for validation, in [0, 1); 0 = no
        validation and no early stopping.
    patience : int
        Stop after this many consecutive epochs without a new best validation
        accuracy (0 = never stop early). The best epoch's weights are restored.
    mixed_precision : bool
        float16 autocast with gradient scaling, on CUDA only.
    seed : int
    """

    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ()
    shift: int = 2
    validation_fraction: float = 0.1
    patience: int = 10
    mixed_precision: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", tuple(self.augment))
        for name, registry in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
        ):
            if getattr(self, name) not in registry:
                raise ValueError(
                    f"unknown {name} {getattr(self, name)!r}; available: {sorted(registry)}"
                )
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(
                f"unknown augmentation {unknown[0]!r}; available: {list(AUGMENTATIONS)}"
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must lie in [0, 1), got {self.validation_fraction}"
            )
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "learning_rate": self.learning_rate > 0,
            "momentum": self.momentum >= 0,
            "weight_decay": self.weight_decay >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "shift": self.shift >= 0,
            "patience": self.patience >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"training parameter {name} = {getattr(self, name)!r} is invalid")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainParams:
        """Build from the ``training`` config section; missing keys take the defaults."""
        return from_section(cls, "training", cfg)


def _adam(params: Iterable[Tensor], p: TrainParams) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=p.learning_rate, weight_decay=p.weight_decay)


def _adamw(params: Iterable[Tensor], p: TrainParams) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=p.learning_rate, weight_decay=p.weight_decay)


def _sgd(params: Iterable[Tensor], p: TrainParams) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=p.learning_rate, momentum=p.momentum, weight_decay=p.weight_decay
    )


OPTIMIZERS: dict[str, Callable[[Iterable[Tensor], TrainParams], torch.optim.Optimizer]] = {
    "adam": _adam,
    "adamw": _adamw,
    "sgd": _sgd,
}


def make_augmentation(names: Sequence[str], image_size: int) -> v2.Transform | None:
    """The per-image transform of the augmentations ``names`` (None when empty)."""
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; available: {list(AUGMENTATIONS)}")
    chosen = [build(image_size) for name, build in AUGMENTATIONS.items() if name in names]
    return v2.Compose(chosen) if chosen else None


def validation_split(
    data: ImageDataset, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation images.

    Datasets with near-duplicate groups (``extra["group_train"]``: GTSRB's tracks, the groups
    of a user's dataset) are split by whole groups (:func:`poisonscan.datasets.split.group_split`):
    frames of one physical sign must not sit on both sides. Other datasets get a seeded
    split stratified by (possibly poisoned) label, or a plain seeded split when a
    class is too small to stratify.

    Returns
    -------
    train, val : ndarray of int64
        Sorted, disjoint, together all of ``range(len(data.y_train))``; ``val``
        is empty when ``fraction`` is 0.
    """
    from sklearn.model_selection import train_test_split

    from poisonscan.datasets.split import group_split

    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {fraction}")
    n = len(data.y_train)
    if fraction == 0.0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    groups = data.extra.get("group_train")
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} group ids for {n} training images")
        train, val = group_split(groups, fraction, seed)
        return np.flatnonzero(train), np.flatnonzero(val)
    if n < 2:
        raise ValueError(f"cannot hold out a validation part of {n} image(s)")
    try:
        train_idx, val_idx = train_test_split(
            np.arange(n), test_size=fraction, random_state=seed, stratify=data.y_train
        )
    except ValueError as err:  # too few images per class to stratify
        log.warning("validation split not stratified (%s)", err)
        train_idx, val_idx = train_test_split(np.arange(n), test_size=fraction, random_state=seed)
    return np.sort(train_idx), np.sort(val_idx)


class _Images(torch.utils.data.Dataset):
    """uint8 images (n, C, H, W) and labels, with an optional per-image transform.

    The reference loader's dataset (``make_loader(..., fast=False)``): one image per
    ``__getitem__``, batched by the DataLoader's collate.
    """

    def __init__(self, x: Tensor, y: Tensor, transform: v2.Transform | None) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x = self.x[i]
        return (self.transform(x) if self.transform is not None else x), self.y[i]


class _Batches(_Images):
    """The same images fetched a whole batch per ``__getitem__`` (a list of indices).

    One gather instead of one ``__getitem__`` per image and a collate; the per-image
    transform still runs image by image in index order, so it draws the same random
    parameters as :class:`_Images` does. ``x`` and ``y`` may live on the GPU (no
    transform, no workers): the batch is then gathered there.
    """

    def __getitem__(self, idx: list[int]) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        index = torch.as_tensor(idx).to(self.x.device, non_blocking=True)
        x = self.x[index]
        if self.transform is not None:
            x = torch.stack([self.transform(image) for image in x])
        return x, self.y[index]


def make_loader(
    images: np.ndarray,
    labels: np.ndarray,
    params: TrainParams,
    workers: int = 0,
    device: torch.device | str = "cpu",
    fast: bool = True,
) -> torch.utils.data.DataLoader:
    """A shuffling, seeded loader of (augmented uint8 (b, C, H, W), int64 (b,)) batches.

    ``workers`` worker processes apply the augmentations; without augmentations
    the batches come from memory in the main process, from ``device``'s memory
    (the whole uint8 training set is copied there once).

    ``fast`` (default) fetches whole batches (:class:`_Batches`); ``fast=False`` is the
    previous per-image loader, kept as the reference. Both give the same batches,
    augmentations included, for the same seed: the same sampler and generator, and the
    transforms draw in the same order (with workers: the same per-worker seeds).
    """
    transform = make_augmentation(params.augment, images.shape[1])
    workers = workers if transform is not None else 0
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    y = torch.as_tensor(labels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(params.seed)
    if not fast:
        return torch.utils.data.DataLoader(
            _Images(x, y, transform),
            batch_size=params.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
    if transform is None:
        x, y = x.to(device), y.to(device)
    dataset = _Batches(x, y, transform)
    # what DataLoader(shuffle=True, batch_size=...) builds, with whole batches per fetch
    sampler = torch.utils.data.BatchSampler(
        torch.utils.data.RandomSampler(dataset, generator=generator),
        params.batch_size,
        drop_last=False,
    )
    return torch.utils.data.DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        generator=generator,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


# channels_last on CPU measured faster (Net on GTSRB, 1 thread: about 10 % per step,
# evaluation 25-30 %), but its convolutions round differently: the weights would no longer be
# bit-identical to the reference step's, nor the default run's figures (RESULTS.md) reproducible.
# Off, for that reason; True switches it on. CUDA keeps its layout either way.
CHANNELS_LAST_ON_CPU = False


class TrainStep:
    """One optimisation step on a batch: normalise, shift, forward, backward (AMP on CUDA).

    ``fast`` (default): the normalisation constants live on the device, the batch and
    (on CPU, where it measured faster) the model are channels_last, and :meth:`update`
    returns the batch's loss and correct count as device tensors, so the loop syncs once
    per epoch instead of twice per batch. ``fast=False`` is the previous step, kept as
    the reference; both feed the model the same normalised, shifted images.
    """

    def __init__(
        self,
        model: nn.Module,
        norm: Normalization,
        params: TrainParams,
        device: torch.device,
        fast: bool = True,
    ) -> None:
        self.model, self.norm, self.params, self.device = model, norm, params, device
        self.fast = fast
        cpu_nhwc = fast and device.type == "cpu" and CHANNELS_LAST_ON_CPU
        self.memory_format = torch.channels_last if cpu_nhwc else torch.contiguous_format
        if self.memory_format is torch.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = OPTIMIZERS[params.optimizer](model.parameters(), params)
        self.amp = device.type == "cuda" and params.mixed_precision
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=params.label_smoothing)
        self.shift_gen = torch.Generator().manual_seed(params.seed + 1)
        self.mean = torch.tensor(norm.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(norm.std, device=device).view(1, -1, 1, 1)

    def __call__(self, xb: Tensor, yb: Tensor) -> tuple[float, int]:
        """Train on one batch; return its summed loss and number of correct predictions."""
        loss, correct = self.update(xb, yb)
        return float(loss), int(correct)

    def update(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """Train on one batch; its summed loss (float64) and correct count, on the device.

        Nothing here waits for the device (the reference path's normalisation copies its
        constants to the device per batch).
        """
        xb = xb.to(self.device, non_blocking=True)
        yb = yb.to(self.device, non_blocking=True)
        if self.fast:  # the same operations as Normalization.normalize: the same values
            xb = (xb.float().div_(255.0) - self.mean) / self.std
        else:
            xb = self.norm.normalize(xb)
        if self.params.shift:
            xb = random_shift(xb, self.params.shift, self.shift_gen, self.memory_format)
        elif self.fast:
            xb = xb.contiguous(memory_format=self.memory_format)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(xb)
            loss = self.loss_fn(out, yb)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach().double() * len(yb), (out.detach().argmax(1) == yb).sum()


@dataclass
class TrainResult:
    """The trained model (eval mode, best epoch's weights) and how training went.

    ``history`` has one row per epoch run: ``epoch``, ``loss``, ``train_acc``,
    ``val_acc`` and ``val_loss`` (NaN without validation), ``lr`` and ``seconds``.
    """

    model: nn.Module
    normalization: Normalization
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    best_epoch: int = 0
    stopped_early: bool = False
    n_train: int = 0
    n_val: int = 0


def train_model(
    data: ImageDataset,
    model_name: str,
    params: TrainParams,
    device: torch.device | str | None = None,
    workers: int = 0,
    fast: bool = True,
) -> TrainResult:
    """Train ``model_name`` on ``data.x_train``; log one line per epoch.

    A ``params.validation_fraction`` share of the training images (whole
    tracks for GTSRB, see :func:`validation_split`) is held out; after every
    epoch the validation accuracy decides the best epoch, whose weights are
    restored at the end, and early stopping (ties in accuracy go to the lower
    validation loss). On CPU, the same seed gives bit-identical weights.

    Parameters
    ----------
    data : ImageDataset
    model_name : str
        A key of :data:`poisonscan.models.MODELS`.
    params : TrainParams
    device : torch.device or str, optional
        Default: CUDA when present, else CPU.
    workers : int, default 0
        DataLoader worker processes for the augmentations (0 = main process).
    fast : bool, default True
        The batched loader and step (:func:`make_loader`, :class:`TrainStep`); False runs
        the previous per-image loader and per-batch syncing step, kept as the reference.
        Both see the same batches. On CPU the fast step's channels_last convolutions round
        differently (:data:`CHANNELS_LAST_ON_CPU`), so training takes another, equally
        deterministic path: the weights are not bit-identical to the reference's.

    Returns
    -------
    TrainResult
    """
    device = torch.device(device) if device is not None else select_device()
    seed_everything(params.seed)
    model = build_model(model_name, data.n_classes, data.image_shape[0]).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_idx, val_idx = validation_split(data, params.validation_fraction, params.seed)
    if len(train_idx) < 2:
        raise ValueError(f"need at least 2 training images, got {len(train_idx)}")
    x_train, y_train = data.x_train[train_idx], data.y_train[train_idx]
    x_val, y_val = data.x_train[val_idx], data.y_train[val_idx]
    norm = Normalization.fit(x_train)
    step = TrainStep(model, norm, params, device, fast=fast)
    sched = torch.optim.lr_scheduler.LambdaLR(
        step.optimizer, SCHEDULES[params.schedule](params.epochs)
    )
    loader = make_loader(x_train, y_train, params, workers, device, fast=fast)
    result = TrainResult(model, norm, n_train=len(train_idx), n_val=len(val_idx))
    best, best_state, since_best = (-1.0, -math.inf), None, 0
    log.info(
        "%s: %d training / %d validation images, augmentations %s, shift %d, %s on %s%s",
        model_name, len(train_idx), len(val_idx), list(params.augment) or "none", params.shift,
        params.optimizer, device, " (mixed precision)" if step.amp else "",
    )  # fmt: skip
    start = time.perf_counter()
    for epoch in range(1, params.epochs + 1):
        t0 = time.perf_counter()
        lr = step.optimizer.param_groups[0]["lr"]
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        # fast: the same float64 sums, kept on the device and read once per epoch
        loss_dev = torch.zeros((), dtype=torch.float64, device=device)
        correct_dev = torch.zeros((), dtype=torch.int64, device=device)
        for xb, yb in loader:
            if len(yb) < 2:  # BatchNorm cannot train on a single sample
                continue
            if fast:
                loss_b, correct_b = step.update(xb, yb)
                loss_dev += loss_b
                correct_dev += correct_b
            else:
                batch_loss, batch_correct = step(xb, yb)
                loss_sum += batch_loss
                correct += batch_correct
            total += len(yb)
        if fast:
            loss_sum, correct = loss_dev.item(), int(correct_dev.item())
        sched.step()
        val_acc, val_loss = evaluate(model, norm, x_val, y_val, device)
        row = {
            "epoch": epoch,
            "loss": loss_sum / max(total, 1),
            "train_acc": correct / max(total, 1),
            "val_acc": val_acc,
            "val_loss": val_loss,
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        result.history.append(row)
        # better accuracy, or the same accuracy at a lower loss (small validation sets tie)
        improved = len(y_val) > 0 and (val_acc, -val_loss) > best
        if improved:
            best, since_best, result.best_epoch = (val_acc, -val_loss), 0, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.4f  val acc %.4f (loss %.4f)%s  lr %.1e  %.1f s",
            epoch, params.epochs, row["loss"], row["train_acc"], val_acc, val_loss,
            " *" if improved else "", lr, row["seconds"], extra=PROGRESS,
        )  # fmt: skip
        if len(y_val) and params.patience and since_best >= params.patience:
            result.stopped_early = True
            log.info("early stop: no better validation accuracy for %d epochs", since_best)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
        log.info("restored epoch %d (validation accuracy %.4f)", result.best_epoch, best[0])
    else:
        result.best_epoch = len(result.history)
    model.to(memory_format=torch.contiguous_format)  # as callers knew it (fast CPU: was NHWC)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def random_shift(
    x: Tensor,
    max_shift: int,
    generator: torch.Generator,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Tensor:
    """Translate each image by a random whole number of pixels in [-max_shift, max_shift].

    Borders are extended (replicated). Whole-pixel shifts keep a trigger's pixels exact;
    the augmentation stops the network from memorising poisoned images pixel by pixel,
    so it has to learn the trigger itself. The result has ``memory_format`` (the gather
    writes channels_last; contiguous costs a copy).
    """
    n, _, h, w = x.shape
    m = max_shift
    padded = nn.functional.pad(x, (m, m, m, m), mode="replicate").permute(0, 2, 3, 1)
    shifts = torch.randint(-m, m + 1, (n, 2), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device) + m - shifts[:, :1]  # (n, h)
    cols = torch.arange(w, device=x.device) + m - shifts[:, 1:]  # (n, w)
    sample = torch.arange(n, device=x.device)[:, None, None]
    shifted = padded[sample, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return shifted.contiguous(memory_format=memory_format)


def fit_and_evaluate(
    data: ImageDataset,
    model_name: str,
    params: TrainParams,
    device: torch.device | str | None = None,
    workers: int = 0,
) -> tuple[TrainResult, dict[str, Any]]:
    """Train (:func:`train_model`), then measure the model on the test split.

    Returns
    -------
    result : TrainResult
    metrics : dict
        ``clean_acc`` and ``per_class_acc`` on the test split; ``asr`` (mean over the
        source classes of the share of triggered test images predicted as the
        attack's target; mAER for an all-class trigger; NaN without an attack) and
        ``asr_per_class``; ``model``, ``n_parameters``, ``epochs``, ``best_epoch``,
        ``stopped_early``, ``val_acc`` (of the best epoch), ``n_train``, ``n_val``,
        ``seconds``, ``seconds_per_epoch``, ``device`` and the per-epoch ``history``.
    """
    device = torch.device(device) if device is not None else select_device()
    result = train_model(data, model_name, params, device, workers=workers)
    pred = predict(result.model, result.normalization, data.x_test)
    per_class = {
        str(c): float(np.mean(pred[data.y_test == c] == c)) for c in np.unique(data.y_test)
    }
    asr, asr_per_class = triggered_test_success(result.model, result.normalization, data)
    epochs = len(result.history)
    metrics = {
        "clean_acc": float(np.mean(pred == data.y_test)),
        "per_class_acc": per_class,
        "asr": asr,
        "asr_per_class": asr_per_class,
        "model": model_name,
        "n_parameters": count_parameters(result.model),
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "val_acc": result.history[result.best_epoch - 1]["val_acc"],
        "n_train": result.n_train,
        "n_val": result.n_val,
        "seconds": result.seconds,
        "seconds_per_epoch": result.seconds / max(epochs, 1),
        "device": str(device),
        "history": result.history,
    }
    log.info(
        "clean test accuracy %.4f, attack success rate %.4f, best epoch %d of %d, %.1f s",
        metrics["clean_acc"], asr, result.best_epoch, epochs, result.seconds, extra=PROGRESS,
    )  # fmt: skip
    return result, metrics
