"""LRP heatmaps (zennit) and penultimate-layer activations, written to a zarr store.

Composites are selected by name from :data:`COMPOSITES`. Every composite merges
a BatchNorm that directly follows a convolution or linear layer into it
(zennit's ``SequentialMergeBatchNorm``) and passes relevance unchanged through
InstanceNorm, which, like zennit's treatment of an unmerged BatchNorm, is a
per-sample affine rescaling of each channel.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import zarr
from torch import Tensor, nn
from torch.nn.modules.instancenorm import _InstanceNorm
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    layer_map_base,
)
from zennit.core import Composite
from zennit.rules import Epsilon, Pass
from zennit.types import Convolution, Linear

from poisonscan.storage import atomic_path
from poisonscan.training import Normalization

__all__ = ["COMPOSITES", "NORMALIZATIONS", "explain_class", "make_composite", "normalize_heatmaps"]

log = logging.getLogger(__name__)

# Relevance passes unchanged through layers that only rescale each channel.
_EXTRA_LAYERS: list[tuple[Any, Any]] = [(_InstanceNorm, Pass())]


def _epsilon(epsilon: float, **_: Any) -> Composite:
    """The plain epsilon rule on every convolution and linear layer (the reference's choice)."""
    return LayerMapComposite(
        layer_map=[
            *_EXTRA_LAYERS,
            *layer_map_base(),
            (Convolution, Epsilon(epsilon=epsilon)),
            (Linear, Epsilon(epsilon=epsilon)),
        ],
        canonizers=[SequentialMergeBatchNorm()],
    )


def _zennit(cls: type[Composite], bounded: bool = False) -> Callable[..., Composite]:
    def build(epsilon: float, low: Tensor, high: Tensor) -> Composite:
        kwargs: dict[str, Any] = {
            "epsilon": epsilon,
            "layer_map": list(_EXTRA_LAYERS),
            "canonizers": [SequentialMergeBatchNorm()],
        }
        if bounded:
            kwargs.update(low=low, high=high)
        return cls(**kwargs)

    return build


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon": _epsilon,
    "epsilon_plus": _zennit(EpsilonPlus),
    "epsilon_plus_flat": _zennit(EpsilonPlusFlat),
    "epsilon_alpha2_beta1": _zennit(EpsilonAlpha2Beta1),
    "epsilon_alpha2_beta1_flat": _zennit(EpsilonAlpha2Beta1Flat),
    "epsilon_gamma_box": _zennit(EpsilonGammaBox, bounded=True),
}


def make_composite(
    name: str, epsilon: float, norm: Normalization, shape: tuple[int, int, int]
) -> Composite:
    """Build the composite ``name``; ``shape`` = (C, H, W) sets the input bounds of box rules."""
    if name not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {name!r}; available: {sorted(COMPOSITES)}")
    low, high = norm.bounds()
    return COMPOSITES[name](epsilon=epsilon, low=low.expand(1, *shape), high=high.expand(1, *shape))


def _minmax_mass(h: np.ndarray) -> np.ndarray:
    lo = h.min(axis=(1, 2), keepdims=True)
    span = h.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (h - lo) / np.where(span > 0, span, 1), 0.0)


NORMALIZATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    # the reference study: min-max to [0, 1], then divide by the mass
    "minmax_mass": _minmax_mass,
    # keep the positive evidence only, then divide by the mass
    "positive_mass": lambda h: np.maximum(h, 0.0),
}


def normalize_heatmaps(heatmaps: np.ndarray, mode: str) -> np.ndarray:
    """Normalise channel-summed heatmaps (n, H, W) to non-negative maps of mass 1.

    A heatmap with no mass left after the first step stays all zero; later
    steps (distances) treat it explicitly.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(
            f"unknown heatmap normalization {mode!r}; available: {sorted(NORMALIZATIONS)}"
        )
    h = NORMALIZATIONS[mode](heatmaps.astype(np.float64))
    mass = h.sum(axis=(1, 2), keepdims=True)
    return np.where(mass > 0, h / np.where(mass > 0, mass, 1), 0.0).astype(np.float32)


def lrp_heatmaps(
    model: nn.Module,
    composite: Composite,
    inputs: Tensor,
    targets: Tensor,
) -> np.ndarray:
    """Relevance of ``targets`` for normalised ``inputs`` (n, C, H, W), summed over channels.

    LRP starts from relevance 1 on the explained class output (zennit's one-hot
    convention), so a conservative composite distributes exactly 1 per image and
    the sign of the heatmap does not depend on the sign of the logit.

    Returns
    -------
    ndarray of shape (n, H, W), float64
    """
    n_classes = model(inputs[:1]).shape[1]
    one_hot = torch.nn.functional.one_hot(targets, n_classes).to(inputs.dtype)
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(inputs, one_hot)
    return relevance.sum(1).detach().cpu().double().numpy()


@torch.no_grad()
def activations(model: nn.Module, inputs: Tensor) -> np.ndarray:
    """Output of ``model.penultimate`` for ``inputs``, flattened to (n, D)."""
    captured: list[Tensor] = []
    handle = model.penultimate.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    return captured[0].flatten(1).cpu().numpy(), logits.argmax(1).cpu().numpy()


def explain_class(
    model: nn.Module,
    norm: Normalization,
    images: np.ndarray,
    labels: np.ndarray,
    index: np.ndarray,
    poison: np.ndarray,
    out_path: str | os.PathLike[str],
    params: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Explain ``images`` (n, H, W, C) uint8 w.r.t. ``labels`` into the zarr store ``out_path``.

    ``params`` is the ``explain`` config section: ``composite``, ``epsilon``,
    ``normalization``, ``batch_size``. The store appears only when complete.
    """
    device = next(model.parameters()).device
    n, h, w, c = images.shape
    composite = make_composite(params["composite"], params["epsilon"], norm, (c, h, w))
    batch = int(params["batch_size"])
    with atomic_path(out_path) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        hm = root.create_array("heatmaps", shape=(n, h, w), chunks=(batch, h, w), dtype="float32")
        act = None
        preds = np.zeros(n, dtype=np.int64)
        start = time.perf_counter()
        for lo in range(0, n, batch):
            sl = slice(lo, min(lo + batch, n))
            x = norm.to_tensor(images[sl], device)
            t = torch.as_tensor(labels[sl], device=device)
            raw = lrp_heatmaps(model, composite, x, t)
            if not np.all(np.isfinite(raw)):
                raise FloatingPointError(f"non-finite relevance in images {sl.start}..{sl.stop}")
            hm[sl] = normalize_heatmaps(raw, params["normalization"])
            a, p = activations(model, x)
            if act is None:
                act = root.create_array(
                    "activations",
                    shape=(n, a.shape[1]),
                    chunks=(batch, a.shape[1]),
                    dtype="float32",
                )
            act[sl] = a
            preds[sl] = p
            log.info("explained %d/%d images (%.1f s)", sl.stop, n, time.perf_counter() - start)
        for name, arr in (("index", index), ("label", labels), ("prediction", preds),
                          ("poison", poison)):  # fmt: skip
            root.create_array(name, data=np.asarray(arr))
        root.attrs.update({"method": "lrp", **dict(params), **dict(attrs or {})})


def read_explanations(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load every array of an explanation store into memory."""
    root = zarr.open_group(str(path), mode="r")
    required = ("heatmaps", "activations", "index", "label", "prediction", "poison")
    missing = [k for k in required if k not in root]
    if missing:
        raise ValueError(f"explanation store {path} lacks the arrays {missing}")
    return {k: root[k][...] for k in required}
