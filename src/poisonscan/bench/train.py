"""``train``: seconds per training epoch and images per second of each model.

Times ``--batches`` real training steps (the workflow's loader, augmentations,
shift, optimiser and, on CUDA, mixed precision) after two warm-up steps, plus
evaluation batches, and projects them onto the training set: one epoch is the
training part after the validation split, plus one pass over the validation part.
The training rate is the median over the timed batches.

``--variant before,after`` times the previous loader and step (kept in
:mod:`poisonscan.training` as the reference, ``fast=False``) beside the current one in
the same process, batch by batch in turn, so that other load on the host slows both
alike; one row per model and variant.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poisonscan import devices, inference, training
from poisonscan.models import MODELS, build_model, count_parameters
from poisonscan.storage import ImageDataset

__all__ = ["VARIANTS", "add_parser", "time_training"]

DEFAULT_GTSRB = Path("..") / "shared" / "data" / "gtsrb" / "gtsrb32.npz"
_WARMUP = 2
# variant -> the ``fast`` switch of training.make_loader / TrainStep / train_model
VARIANTS = {"before": False, "after": True}


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
    p.add_argument(
        "--variant",
        default="after",
        help="comma-separated: 'after' (the workflow's loader and step) and/or 'before' "
        "(the previous per-image loader and per-batch syncing step, kept as the reference); "
        "several are timed in turn, batch by batch, in this process (default: after)",
    )
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: this process's CPU time (not that of --workers processes; with --threads "
        "above 1 it adds up the threads' time)",
    )
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
    variants = [v for v in args.variant.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise SystemExit(f"--variant: unknown {unknown or variants}; available: {list(VARIANTS)}")
    data = _load(args)
    device = devices.select_device()
    rows = []
    for name in args.model or sorted(MODELS):
        timed = time_training(
            data, name, params, args.batches, device, args.workers, variants, args.clock
        )
        for row in timed:
            rows.append({"dataset": args.dataset, "threads": torch.get_num_threads(), **row})
    return rows


def time_training(
    data: ImageDataset,
    model_name: str,
    params: training.TrainParams,
    n_batches: int,
    device: torch.device,
    workers: int = 0,
    variants: Sequence[str] = ("after",),
    clock: str = "wall",
) -> list[dict[str, Any]]:
    """Time ``n_batches`` training steps of each variant and project one epoch of ``data``.

    Each variant (a key of :data:`VARIANTS`) trains its own model, from the same initial
    weights; the variants take turns batch by batch.

    Returns
    -------
    list of dict
        One per variant: ``model``, ``variant``, ``device``, ``clock``, ``n_parameters``,
        ``n_train`` and ``n_val`` (images per epoch), ``batch_size``, ``batches`` (timed),
        ``train_images_per_s``, ``eval_images_per_s``, ``s_per_epoch`` (training plus
        validation pass), ``s_per_epoch_fastest`` (the same at the rate of the fastest
        batch: a lower bound), ``s_per_batch_min`` and ``s_per_batch_max`` (the spread of
        the timed batches), ``augment``.
    """
    if n_batches < 1:
        raise ValueError(f"need at least 1 timed batch, got {n_batches}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown variant(s) {unknown or list(variants)}; available: "
                         f"{list(VARIANTS)}")  # fmt: skip
    timer = time.process_time if clock == "cpu" else time.perf_counter
    devices.seed_everything(params.seed)
    train_idx, val_idx = training.validation_split(data, params.validation_fraction, params.seed)
    x, y = data.x_train[train_idx], data.y_train[train_idx]
    norm = inference.Normalization.fit(x)
    runs = []
    for variant in variants:
        fast = VARIANTS[variant]
        devices.seed_everything(params.seed)  # the same initial weights for every variant
        model = build_model(model_name, data.n_classes, data.image_shape[0]).to(device).train()
        step = training.TrainStep(model, norm, params, device, fast=fast)
        loader = training.make_loader(x, y, params, workers, device, fast=fast)
        # what train_model calls per batch: the reference reads loss and count per batch
        runs.append((variant, model, step.update if fast else step, _forever(loader)))
    for _ in range(_WARMUP):
        for _, _, step_fn, batches in runs:
            step_fn(*next(batches))
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(n_batches):  # per batch: the median is robust to other processes' bursts
        for variant, _, step_fn, batches in runs:
            _sync(device)
            t0 = timer()
            xb, yb = next(batches)  # loading and augmenting count too
            step_fn(xb, yb)
            _sync(device)
            rates[variant].append(len(yb) / max(timer() - t0, 1e-9))
    n_eval = min(len(data.x_test), max(2 * params.batch_size, 256))
    rows = []
    for variant, model, _, _ in runs:
        inference.predict(model, norm, data.x_test[:64], device)  # warm-up
        _sync(device)
        t0 = timer()
        inference.predict(model, norm, data.x_test[:n_eval], device)
        _sync(device)
        eval_rate = n_eval / max(timer() - t0, 1e-9)
        train_rate = float(np.median(rates[variant]))
        fastest = max(rates[variant])
        rows.append({
            "model": model_name,
            "variant": variant,
            "device": str(device),
            "clock": clock,
            "n_parameters": count_parameters(model),
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "batch_size": params.batch_size,
            "batches": n_batches,
            "augment": ",".join(params.augment) or "none",
            "train_images_per_s": round(train_rate, 1),
            "eval_images_per_s": round(eval_rate, 1),
            "s_per_batch_min": round(params.batch_size / fastest, 4),
            "s_per_batch_max": round(params.batch_size / min(rates[variant]), 4),
            "s_per_epoch": round(len(train_idx) / train_rate + len(val_idx) / eval_rate, 1),
            "s_per_epoch_fastest": round(len(train_idx) / fastest + len(val_idx) / eval_rate, 1),
        })  # fmt: skip
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forever(loader: torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``loader``, epoch after epoch."""
    while True:
        yield from loader
