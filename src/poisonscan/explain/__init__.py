"""Explanations of a trained classifier: LRP (zennit) and other attribution methods.

Modules, zennit-style:

- :mod:`.canonizers`   output-preserving model rewrites before LRP (BatchNorm merges,
                       frozen InstanceNorm statistics)
- :mod:`.composites`   LRP composites by name (:data:`COMPOSITES`); rules per layer type
- :mod:`.methods`      explanation methods by name (:data:`METHODS`): LRP, saliency,
                       SmoothGrad, Integrated Gradients, guided backprop, DeconvNet, Grad-CAM
- :mod:`.postprocess`  channel reduction, normalisation, sum-pooling
- :mod:`.params`       the ``explain`` config section (:class:`ExplainParams`)
- :mod:`.store`        layout of the explanation store, one zarr group per class; reading
- :mod:`.run`          :func:`explain_classes`: explain a training set into a store
- :mod:`.montage`      montage PNG of one class

:mod:`.store` and :mod:`.params` need no torch, so steps that only read stores
(distances, clustering) import them without loading torch or zennit: the other
names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from poisonscan.explain.params import ExplainParams, resolve_classes
from poisonscan.explain.store import (
    GROUP_ARRAYS,
    check_heatmaps,
    check_model,
    class_group_path,
    heatmaps_sha256,
    read_explanations,
    store_attrs,
    store_classes,
)

if TYPE_CHECKING:
    from poisonscan.explain.composites import (
        COMPOSITES,
        input_layers,
        layer_treatment,
        make_composite,
    )
    from poisonscan.explain.methods import METHODS, find_layer, make_explainer
    from poisonscan.explain.montage import save_montage
    from poisonscan.explain.postprocess import (
        NORMALIZATIONS,
        REDUCTIONS,
        normalize_heatmaps,
        sum_pool,
        to_heatmaps,
    )
    from poisonscan.explain.run import explain_classes, layer_outputs

__all__ = [
    "COMPOSITES",
    "GROUP_ARRAYS",
    "METHODS",
    "NORMALIZATIONS",
    "REDUCTIONS",
    "ExplainParams",
    "check_heatmaps",
    "check_model",
    "class_group_path",
    "explain_classes",
    "find_layer",
    "heatmaps_sha256",
    "input_layers",
    "layer_outputs",
    "layer_treatment",
    "make_composite",
    "make_explainer",
    "normalize_heatmaps",
    "read_explanations",
    "resolve_classes",
    "save_montage",
    "store_attrs",
    "store_classes",
    "sum_pool",
    "to_heatmaps",
]

_LAZY = {
    "COMPOSITES": "composites",
    "input_layers": "composites",
    "layer_treatment": "composites",
    "make_composite": "composites",
    "METHODS": "methods",
    "find_layer": "methods",
    "make_explainer": "methods",
    "save_montage": "montage",
    "NORMALIZATIONS": "postprocess",
    "REDUCTIONS": "postprocess",
    "normalize_heatmaps": "postprocess",
    "sum_pool": "postprocess",
    "to_heatmaps": "postprocess",
    "explain_classes": "run",
    "layer_outputs": "run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
