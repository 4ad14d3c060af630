"""``train``: seconds per training epoch and images per second of each model.

Times ``--batches`` real training steps (the workflow's loader, augmentations,
shift, optimiser and, on CUDA, mixed precision) after two warm-up steps, plus
evaluation batches, and projects them onto the training set: one epoch is the
training part after the validation split, plus one pass over the validation part.
The training rate is the median over the timed batches.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poisonscan import training
from poisonscan.models import MODELS, build_model, count_parameters
from poisonscan.storage import ImageDataset

__all__ = ["add_parser", "time_training"]

DEFAULT_GTSRB = Path("..") / "shared" / "data" / "gtsrb" / "gtsrb32.npz"
_WARMUP = 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="seconds per training epoch and images per second")
    p.add_argument("--model", choices=sorted(MODELS), action="append", help="default: all")
    p.add_argument("--dataset", choices=["synthetic", "gtsrb"], default="synthetic")
    p.add_argument("--path", type=Path, default=DEFAULT_GTSRB, help="gtsrb: npz or archive")
    p.add_argument("--n-per-class", type=int, default=400, help="synthetic training images")
    p.add_argument("--batches", type=int, default=10, help="timed training batches")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--augment",
        default="",
        help="comma-separated augmentation names, or 'all' (default: none)",
    )
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.set_defaults(run=_run)


def _load(args: argparse.Namespace) -> ImageDataset:
    if args.dataset == "gtsrb":
        from poisonscan.gtsrb import load_gtsrb

        return load_gtsrb(args.path)
    from poisonscan.data import make_synthetic_signs

    return make_synthetic_signs(args.n_per_class, 1, seed=0)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(max(1, args.threads))
    augment = list(training.AUGMENTATIONS) if args.augment == "all" else args.augment.split(",")
    params = training.TrainParams(
        batch_size=args.batch_size,
        augment=tuple(a for a in augment if a),
        validation_fraction=args.validation_fraction,
    )
    data = _load(args)
    device = training.select_device()
    rows = []
    for name in args.model or sorted(MODELS):
        row = time_training(data, name, params, args.batches, device, args.workers)
        rows.append({"dataset": args.dataset, "threads": torch.get_num_threads(), **row})
    return rows


def time_training(
    data: ImageDataset,
    model_name: str,
    params: training.TrainParams,
    n_batches: int,
    device: torch.device,
    workers: int = 0,
) -> dict[str, Any]:
    """Time ``n_batches`` training steps and project one epoch of ``data``.

    Returns
    -------
    dict
        ``model``, ``device``, ``n_parameters``, ``n_train`` and ``n_val`` (images
        per epoch), ``batch_size``, ``batches`` (timed), ``train_images_per_s``,
        ``eval_images_per_s``, ``s_per_epoch`` (training plus validation pass),
        ``s_per_epoch_fastest`` (the same at the rate of the fastest batch: a lower bound),
        ``s_per_batch_min`` and ``s_per_batch_max`` (the spread of the timed batches),
        ``augment``.
    """
    if n_batches < 1:
        raise ValueError(f"need at least 1 timed batch, got {n_batches}")
    training.seed_everything(params.seed)
    train_idx, val_idx = training.validation_split(data, params.validation_fraction, params.seed)
    x, y = data.x_train[train_idx], data.y_train[train_idx]
    norm = training.Normalization.fit(x)
    model = build_model(model_name, data.n_classes, data.image_shape[0]).to(device).train()
    step = training.TrainStep(model, norm, params, device)
    batches = _forever(training.make_loader(x, y, params, workers))
    for _ in range(_WARMUP):
        step(*next(batches))
    rates = []  # per batch: the median is robust to other processes' bursts on a shared host
    for _ in range(n_batches):
        _sync(device)
        t0 = time.perf_counter()
        xb, yb = next(batches)  # loading and augmenting count too
        step(xb, yb)
        _sync(device)
        rates.append(len(yb) / (time.perf_counter() - t0))
    train_rate = float(np.median(rates))
    n_eval = min(len(data.x_test), max(2 * params.batch_size, 256))
    training.predict(model, norm, data.x_test[:64], device)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    training.predict(model, norm, data.x_test[:n_eval], device)
    _sync(device)
    eval_rate = n_eval / (time.perf_counter() - t0)
    return {
        "model": model_name,
        "device": str(device),
        "n_parameters": count_parameters(model),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "batch_size": params.batch_size,
        "batches": n_batches,
        "augment": ",".join(params.augment) or "none",
        "train_images_per_s": round(train_rate, 1),
        "eval_images_per_s": round(eval_rate, 1),
        "s_per_batch_min": round(params.batch_size / max(rates), 4),
        "s_per_batch_max": round(params.batch_size / min(rates), 4),
        "s_per_epoch": round(len(train_idx) / train_rate + len(val_idx) / eval_rate, 1),
        "s_per_epoch_fastest": round(len(train_idx) / max(rates) + len(val_idx) / eval_rate, 1),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forever(loader: torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``loader``, epoch after epoch."""
    while True:
        yield from loader
