"""Explanation methods, selected by name from :data:`METHODS`.

Every method explains one output per image (a class logit, via a one-hot
output gradient) and returns an attribution of shape (n, C, H, W) at the input
resolution (Grad-CAM: one channel, upsampled bilinearly). Post-processing
(:mod:`poisonscan.explain.postprocess`) turns it into a heatmap, so every
downstream step works with any method.

=====================  =====================================================================
method                 implementation
=====================  =====================================================================
lrp                    zennit ``Gradient`` with an LRP composite (:data:`COMPOSITES`)
saliency               zennit ``Gradient``: the plain gradient of the logit
smoothgrad             zennit ``SmoothGrad`` (``n_iter`` samples, ``noise_level``)
integrated_gradients   zennit ``IntegratedGradients`` (``n_iter`` steps from ``baseline``)
guided_backprop        zennit ``Gradient`` with the ``GuidedBackprop`` composite
deconvnet              zennit ``Gradient`` with the ``DeconvNet`` composite
gradcam                captum ``LayerGradCam`` at ``gradcam_layer``, ReLU'd (as in the paper)
=====================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from zennit.attribution import Attributor, Gradient, IntegratedGradients, SmoothGrad
from zennit.composites import DeconvNet, GuidedBackprop

from poisonscan.explain.composites import make_composite
from poisonscan.explain.params import ExplainParams
from poisonscan.inference import Normalization

__all__ = ["METHODS", "Explainer", "find_layer", "make_explainer"]


class Explainer(Protocol):
    """A context manager (hooks registered inside) that attributes a batch."""

    def __enter__(self) -> Explainer: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """Attribution (n, C, H, W) of logit ``targets[i]`` for normalised ``inputs[i]``."""
        ...


class ZennitExplainer:
    """Wrap a zennit :class:`~zennit.attribution.Attributor` (composite registered once)."""

    def __init__(self, attributor: Attributor) -> None:
        self.attributor = attributor

    def __enter__(self) -> ZennitExplainer:
        self.attributor.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.attributor.__exit__(*exc)

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        def one_hot(output: Tensor) -> Tensor:
            return nn.functional.one_hot(targets, output.shape[1]).to(output)

        _, attribution = self.attributor(inputs.detach(), one_hot)
        return attribution.detach()


class GradCamExplainer:
    """Grad-CAM at ``layer`` (captum), ReLU'd and upsampled to the input size."""

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        from captum.attr import LayerGradCam

        self.gradcam = LayerGradCam(model, layer)

    def __enter__(self) -> GradCamExplainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __call__(self, inputs: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import LayerAttribution

        cam = self.gradcam.attribute(inputs, target=targets, relu_attributions=True)
        up = LayerAttribution.interpolate(cam, tuple(inputs.shape[2:]), "bilinear")
        return up.detach()


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name``; ``penultimate`` is ``model.penultimate``, ``auto`` the last conv.

    Raises
    ------
    ValueError
        If there is no such module (the message lists the available names).
    """
    if name == "penultimate":
        return model.penultimate  # type: ignore[no-any-return]
    if name == "auto":
        convs = [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)]
        if not convs:
            raise ValueError("layer 'auto' needs a model with a convolution")
        return convs[-1]
    names = dict(model.named_modules())
    if not name or name not in names:
        shown = ", ".join(sorted(n for n in names if n)[:40])
        raise ValueError(f"the model has no layer {name!r}; available: {shown}, ...")
    return names[name]


def _baseline(params: ExplainParams, norm: Normalization) -> Callable[[Tensor], Tensor]:
    if params.baseline == "mean":
        return torch.zeros_like
    black = norm.bounds()[0]
    return lambda x: black.to(x).expand_as(x).clone()


MethodBuilder = Callable[[nn.Module, ExplainParams, Normalization, tuple[int, int, int]], Explainer]

METHODS: dict[str, MethodBuilder] = {
    "lrp": lambda model, p, norm, shape: ZennitExplainer(
        Gradient(model=model, composite=make_composite(p.composite, p.epsilon, norm, shape))
    ),
    "saliency": lambda model, p, norm, shape: ZennitExplainer(Gradient(model=model)),
    "smoothgrad": lambda model, p, norm, shape: ZennitExplainer(
        SmoothGrad(model=model, noise_level=p.noise_level, n_iter=p.n_iter)
    ),
    "integrated_gradients": lambda model, p, norm, shape: ZennitExplainer(
        IntegratedGradients(model=model, baseline_fn=_baseline(p, norm), n_iter=p.n_iter)
    ),
    "guided_backprop": lambda model, p, norm, shape: ZennitExplainer(
        Gradient(model=model, composite=GuidedBackprop())
    ),
    "deconvnet": lambda model, p, norm, shape: ZennitExplainer(
        Gradient(model=model, composite=DeconvNet())
    ),
    "gradcam": lambda model, p, norm, shape: GradCamExplainer(
        model, find_layer(model, p.gradcam_layer)
    ),
}


def make_explainer(
    model: nn.Module,
    params: ExplainParams,
    norm: Normalization,
    shape: tuple[int, int, int],
) -> Explainer:
    """The explainer of ``params.method`` for ``model`` and images of ``shape`` = (C, H, W).

    Raises
    ------
    ValueError
        If the method is unknown, or a layer it needs does not exist.
    """
    if params.method not in METHODS:
        raise ValueError(
            f"unknown explanation method {params.method!r}; available: {sorted(METHODS)}"
        )
    return METHODS[params.method](model, params, norm, shape)
