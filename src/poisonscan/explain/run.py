"""Explain training images class by class into an explanation store (see :mod:`.store`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import zarr
from torch import Tensor, nn

from poisonscan.explain.methods import find_layer, make_explainer
from poisonscan.explain.params import ExplainParams, resolve_classes
from poisonscan.explain.postprocess import sum_pool, to_heatmaps
from poisonscan.explain.store import create_class_group
from poisonscan.inference import Normalization
from poisonscan.rulelog import PROGRESS
from poisonscan.storage import atomic_path, seal_store

__all__ = ["explain_classes", "layer_outputs"]

log = logging.getLogger(__name__)


@torch.no_grad()
def layer_outputs(model: nn.Module, layer: nn.Module, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """Output of ``layer`` flattened to (n, D), and the logits (n, K), for ``inputs``."""
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    return captured[-1].flatten(1), logits


def explain_classes(
    model: nn.Module,
    norm: Normalization,
    images: np.ndarray,
    labels: np.ndarray,
    poison: np.ndarray | None,
    out: str | os.PathLike[str],
    params: Mapping[str, Any] | ExplainParams,
    classes: str | Sequence[int] | None = None,
    target_class: int | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Explain the training images ``images`` (n, H, W, C) uint8 of the chosen classes.

    Parameters
    ----------
    model : nn.Module
        Classifier; put in eval mode. Runs on the device of its parameters.
    norm : Normalization
        Input normalisation of the model.
    images, labels, poison : ndarray
        The whole training set: (n, H, W, C) uint8, (n,) int, (n,) bool or None.
    out : path
        Store to write (see :mod:`poisonscan.explain.store`); it appears only when
        complete, so an interrupted run leaves nothing a later step would read.
    params : mapping or ExplainParams
        The ``explain`` config section.
    classes : "all", "target" or sequence of int, optional
        Overrides ``params.classes``; ``target_class`` is always added.
    target_class : int, optional
        The class a scenario analyses, recorded as the store's default group.
    attrs : mapping, optional
        Extra attributes (e.g. ``model_sha256``) for the root and every group.

    Raises
    ------
    ValueError
        On a bad parameter, class id or layer name (before anything is written).
    FloatingPointError
        If an attribution is not finite.
    """
    p = ExplainParams.from_config(params)
    model.eval()
    device = next(model.parameters()).device
    labels = np.asarray(labels, dtype=np.int64)
    poison = np.zeros(len(labels), bool) if poison is None else np.asarray(poison, dtype=bool)
    _, h, w, c = images.shape
    shape = (c, h, w)
    layer = find_layer(model, p.activation_layer)
    probe_act, probe_logits = layer_outputs(model, layer, norm.to_tensor(images[:1], device))
    n_features, n_classes = probe_act.shape[1], probe_logits.shape[1]
    chosen = resolve_classes(p.classes if classes is None else classes, n_classes, target_class)
    hm_shape = sum_pool(np.zeros((1, h, w)), p.pool).shape[1:]
    explainer = make_explainer(model, p, norm, shape)
    members = {cls: np.flatnonzero(labels == cls) for cls in chosen}
    total = sum(len(idx) for idx in members.values())
    describe = {
        "method": p.method,
        "composite": p.composite if p.method == "lrp" else None,
        "normalization": p.normalization,
        "reduction": p.reduction,
        "pool": p.pool,
        "relevance_of": p.relevance_of,
        "params": p.to_dict(),
        **dict(attrs or {}),
    }
    batch = p.batch_size
    log.info("explaining %d images of %d classes with %s%s, batches of %d", total, len(chosen),
             p.method, f" ({p.composite})" if p.method == "lrp" else "", batch)  # fmt: skip
    with atomic_path(out) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        target = None if target_class is None else int(target_class)
        root.attrs.update({**describe, "classes": chosen, "target_class": target})
        groups = {}
        predictions = {}
        for cls, idx in members.items():
            g = create_class_group(root, cls, len(idx), hm_shape, n_features, batch, describe)
            preds = np.zeros(len(idx), dtype=np.int64)
            for lo in range(0, len(idx), batch):
                sl = slice(lo, min(lo + batch, len(idx)))
                act, logits = layer_outputs(model, layer, norm.to_tensor(images[idx[sl]], device))
                g["activations"][sl] = act.cpu().numpy()
                preds[sl] = logits.argmax(1).cpu().numpy()
            g["index"][:] = idx
            g["label"][:] = labels[idx]
            g["prediction"][:] = preds
            g["poison"][:] = poison[idx]
            groups[cls], predictions[cls] = g, preds
        start, done = time.perf_counter(), 0
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), explainer:
            torch.manual_seed(p.seed)
            for cls, idx in members.items():
                explained = labels[idx] if p.relevance_of == "label" else predictions[cls]
                for lo in range(0, len(idx), batch):
                    sl = slice(lo, min(lo + batch, len(idx)))
                    x = norm.to_tensor(images[idx[sl]], device)
                    t = torch.as_tensor(explained[sl], device=device)
                    raw = explainer(x, t).double().cpu().numpy()
                    if not np.all(np.isfinite(raw)):
                        bad = idx[sl][~np.isfinite(raw).all(axis=(1, 2, 3))]
                        raise FloatingPointError(
                            f"non-finite attribution for training images {bad.tolist()}"
                        )
                    groups[cls]["heatmaps"][sl] = to_heatmaps(
                        raw, p.reduction, p.normalization, p.pool
                    )
                    done += sl.stop - sl.start
                    elapsed = time.perf_counter() - start
                    rate = done / max(elapsed, 1e-9)
                    log.info("class %d: %d/%d images; all: %d/%d images, %.1f images/s",
                             cls, sl.stop, len(idx), done, total, rate,
                             extra=PROGRESS)  # fmt: skip
        seal_store(root)  # the chunk checksums, once every chunk is written
    log.info("explanation store %s written (%d images, %.1f s)", out, total,
             time.perf_counter() - start)  # fmt: skip
