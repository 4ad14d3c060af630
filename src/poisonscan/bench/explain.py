"""``explain [--model M] [--method X]``: heatmaps per second on this machine.

Untrained models (eval mode, BatchNorm statistics as initialised) on random
images: the cost of an explanation does not depend on the weights. Times the
attribution and the post-processing of ``--images`` images in batches, after
one warm-up batch.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from poisonscan import explain
from poisonscan.inference import Normalization
from poisonscan.models import MODELS, build_model

__all__ = ["add_parser", "heatmap_throughput"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("explain", help="heatmaps per second per model and explanation method")
    p.add_argument("--model", default=",".join(sorted(MODELS)), help="comma-separated models")
    p.add_argument("--method", default="lrp", help="comma-separated methods, or 'all'")
    p.add_argument("--composite", default="epsilon_alpha2_beta1", help="LRP composite")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--n-classes", type=int, default=43)
    p.add_argument("--n-iter", type=int, default=20, help="SmoothGrad / Integrated Gradients")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    methods = sorted(explain.METHODS) if args.method == "all" else args.method.split(",")
    torch.set_num_threads(args.threads)
    rows = []
    for model_name in args.model.split(","):
        for method in methods:
            params = explain.ExplainParams(
                method=method, composite=args.composite, n_iter=args.n_iter,
                batch_size=args.batch_size,
            )  # fmt: skip
            row = heatmap_throughput(
                model_name, params, args.images, args.image_size, args.n_classes, args.repeat
            )
            rows.append({**row, "threads": args.threads})
    return rows


def heatmap_throughput(
    model_name: str,
    params: explain.ExplainParams,
    n_images: int = 128,
    image_size: int = 32,
    n_classes: int = 43,
    repeat: int = 3,
) -> dict[str, Any]:
    """One row: seconds and heatmaps per second for ``n_images`` random images.

    The images are explained ``repeat`` times; the fastest pass is reported (the
    machine may be shared), with the median pass for comparison.
    """
    torch.manual_seed(0)
    model = build_model(model_name, n_classes=n_classes, image_size=image_size).eval()
    norm = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, image_size, image_size, 3), dtype=np.uint8)
    targets = torch.as_tensor(rng.integers(0, n_classes, size=n_images))
    batch = params.batch_size
    with explain.make_explainer(model, params, norm, (3, image_size, image_size)) as explainer:

        def run(lo: int) -> None:
            x = norm.to_tensor(images[lo : lo + batch])
            raw = explainer(x, targets[lo : lo + batch]).double().numpy()
            explain.to_heatmaps(raw, params.reduction, params.normalization, params.pool)

        run(0)  # warm-up
        passes = []
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            for lo in range(0, n_images, batch):
                run(lo)
            passes.append(time.perf_counter() - t0)
    seconds = min(passes)
    return {
        "model": model_name,
        "method": params.method,
        "composite": params.composite if params.method == "lrp" else None,
        "images": n_images,
        "batch_size": batch,
        "seconds": round(seconds, 3),
        "heatmaps_per_s": round(n_images / seconds, 1),
        "median_heatmaps_per_s": round(n_images / float(np.median(passes)), 1),
    }
