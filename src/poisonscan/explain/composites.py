"""LRP composites (zennit rules per layer type), selected by name from :data:`COMPOSITES`.

Rules per layer type
--------------------
=====================================  ==========================================================
layer                                  treatment
=====================================  ==========================================================
input layers (Linear/Conv fed by the   ``Flat`` in ``*_flat``, ``ZBox`` (pixel bounds) in
image, also through pooling: every     ``epsilon_gamma_box``; otherwise the rule of their type.
Inception branch that sees the image)  zennit marks only the *first* such layer; here every
                                       layer that reads the image is one (:func:`input_layers`)
Conv                                   ``Epsilon`` (``epsilon``), ``ZPlus`` (``epsilon_plus*``),
                                       ``AlphaBeta(2, 1)`` (``epsilon_alpha2_beta1*``),
                                       ``Gamma(0.25)`` (``epsilon_gamma_box``)
Linear (dense)                         ``Epsilon`` in every composite
BatchNorm after Conv/Linear            merged backwards (:class:`SiblingMergeBatchNorm`, zennit's
                                       ``SequentialMergeBatchNorm`` within one Sequential), then
                                       an identity: ``Pass``
BatchNorm before Conv (no padding) /   merged forwards (:class:`ForwardMergeBatchNorm`), then
Linear (e.g. after pooling)            an identity: ``Pass``
any other BatchNorm, InstanceNorm      :class:`AffineNorm`: the layer is an affine map per
                                       channel, ``y = a x + b`` (InstanceNorm: the image's own
                                       statistics, frozen by :class:`FreezeInstanceNorm`); the
                                       epsilon rule on it, ``R_x = a x / (y + eps) R_y``, the
                                       shift ``b`` absorbing its share like a bias
ReLU and other activations             ``Pass`` (zennit)
MaxPool                                gradient: relevance goes to the maximum (zennit)
AvgPool (also global / adaptive)       ``Norm`` (zennit)
Dropout (eval), Flatten, Identity      gradient (identity / reshape)
torch.cat of Inception branches        gradient: each branch receives exactly the relevance of
                                       its own output channels (autograd of ``cat``)
residual addition (ResNet blocks)      zennit ``Sum`` (canonizer :class:`ResidualSum`), rule
                                       ``Norm``: each branch gets the share of the sum it
                                       contributed (zennit's treatment of torchvision ResNets)
=====================================  ==========================================================

Why :class:`AffineNorm` for norm layers that cannot be merged: under the
epsilon rule, chaining it through ``y = a x + b`` gives exactly what merging
``a``, ``b`` into the preceding layer would give (``R_i = a w_ij x_i / (y_j +
eps) R_j`` either way), so it is the per-image merge that a shared module
cannot hold. The relevance that reaches ``y`` from the layer above is
proportional to ``y`` (every rule above multiplies by its input), so the
ratio ``a x / y`` does not blow up. zennit's default, ``Pass`` (``R_x = R_y``),
would hand the shift's share to ``x`` and let the preceding layer redistribute
relevance computed for ``y`` by its own output ``x``, whose sign may differ.

The one-hot start (relevance 1 on the explained logit, zero elsewhere) makes a
conservative composite distribute exactly 1 per image, whatever the logit's
sign and magnitude.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from zennit.composites import LayerMapComposite, layer_map_base
from zennit.core import Composite, Hook
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, ZBox, ZPlus
from zennit.types import Convolution, Linear

from poisonscan.explain.canonizers import default_canonizers, is_identity_batch_norm
from poisonscan.inference import Normalization

__all__ = [
    "COMPOSITES",
    "AffineNorm",
    "InputAwareComposite",
    "input_layers",
    "layer_treatment",
    "make_composite",
]

_NORM_TYPES = (_BatchNorm, _InstanceNorm)


class AffineNorm(Norm):
    """Epsilon rule on a normalisation layer read as a per-channel affine map.

    BatchNorms reduced to the identity by a canonizer pass relevance unchanged.
    """

    def backward(self, module: nn.Module, grad_input: Any, grad_output: Any) -> Any:
        if is_identity_batch_norm(module):
            return grad_output
        return super().backward(module, grad_input, grad_output)


def input_layers(model: nn.Module, shape: tuple[int, ...]) -> set[str]:
    """Names of the linear layers (Linear/Conv) that read the input image.

    A layer reads the image if its input is the model's input or is derived from
    it by parameter-free leaf modules only (pooling, dropout, padding). Found by
    one forward pass of a zero image of ``shape`` = (C, H, W) in eval mode; the
    modules' train/eval modes are restored afterwards.
    """
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters())
    x = torch.zeros(1, *shape, device=param.device, dtype=param.dtype)
    pixel: list[Tensor] = [x]  # tensors in image space (kept alive: compared by identity)
    found: set[str] = set()
    handles = []

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if not inputs or not any(inputs[0] is t for t in pixel):
                return
            if isinstance(module, Linear):
                found.add(name)
            elif isinstance(output, Tensor) and not any(True for _ in module.parameters()):
                pixel.append(output)

        return record

    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
    return found


class InputAwareComposite(LayerMapComposite):
    """A layer-map composite with a special rule for *every* layer that reads the input.

    Parameters
    ----------
    layer_map : list of (types, Hook)
        Rules by module type (first match wins).
    first_map : list of (types, Hook)
        Rules for the input layers (see :func:`input_layers`), tried first.
    input_shape : tuple of int
        (C, H, W) of one input image, for finding the input layers.
    canonizers : list of Canonizer, optional
    """

    def __init__(
        self,
        layer_map: list[tuple[Any, Hook]],
        first_map: list[tuple[Any, Hook]],
        input_shape: tuple[int, ...],
        canonizers: list[Any] | None = None,
    ) -> None:
        self.first_map = first_map
        self.input_shape = tuple(input_shape)
        self.first_layers: set[str] = set()
        super().__init__(layer_map=layer_map, canonizers=canonizers)

    def register(self, module: nn.Module) -> None:
        self.first_layers = input_layers(module, self.input_shape) if self.first_map else set()
        super().register(module)

    def mapping(self, ctx: dict[str, Any], name: str, module: nn.Module) -> Hook | None:
        if name in self.first_layers:
            hook = next((h for types, h in self.first_map if isinstance(module, types)), None)
            if hook is not None:
                return hook
        return super().mapping(ctx, name, module)


def _composite(
    conv: Callable[[float, Tensor, Tensor], Hook],
    first: Callable[[float, Tensor, Tensor], Hook] | None = None,
) -> Callable[..., Composite]:
    def build(epsilon: float, low: Tensor, high: Tensor, input_shape: tuple[int, ...]) -> Composite:
        layer_map = [
            (_NORM_TYPES, AffineNorm(stabilizer=epsilon)),
            *layer_map_base(),
            (Convolution, conv(epsilon, low, high)),
            (torch.nn.Linear, Epsilon(epsilon=epsilon)),
        ]
        first_map = [] if first is None else [(Linear, first(epsilon, low, high))]
        return InputAwareComposite(layer_map, first_map, input_shape, default_canonizers())

    return build


def _flat(*_: Any) -> Hook:
    return Flat()


COMPOSITES: dict[str, Callable[..., Composite]] = {
    # the reference study's choice: the epsilon rule on every conv and dense layer
    "epsilon": _composite(lambda eps, lo, hi: Epsilon(epsilon=eps)),
    "epsilon_plus": _composite(lambda eps, lo, hi: ZPlus()),
    "epsilon_plus_flat": _composite(lambda eps, lo, hi: ZPlus(), first=_flat),
    "epsilon_alpha2_beta1": _composite(lambda eps, lo, hi: AlphaBeta(alpha=2, beta=1)),
    "epsilon_alpha2_beta1_flat": _composite(
        lambda eps, lo, hi: AlphaBeta(alpha=2, beta=1), first=_flat
    ),
    "epsilon_gamma_box": _composite(
        lambda eps, lo, hi: Gamma(gamma=0.25), first=lambda eps, lo, hi: ZBox(low=lo, high=hi)
    ),
}


def make_composite(
    name: str, epsilon: float, norm: Normalization, shape: tuple[int, int, int]
) -> Composite:
    """Build the composite ``name`` for images of ``shape`` = (C, H, W).

    ``norm`` gives the bounds of the ``ZBox`` rule (normalised black and white).

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`COMPOSITES`.
    """
    if name not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {name!r}; available: {sorted(COMPOSITES)}")
    low, high = norm.bounds()
    return COMPOSITES[name](epsilon=epsilon, low=low, high=high, input_shape=tuple(shape))


def layer_treatment(model: nn.Module, composite: Composite) -> dict[str, str]:
    """How ``composite`` treats every leaf module of ``model``: name -> description.

    The description is the rule's class name, ``merged`` for a BatchNorm that the
    canonizers reduced to the identity, or ``gradient`` where no rule applies.
    """
    composite.register(model)
    try:
        treatment: dict[str, str] = {}
        for name, module in model.named_modules():
            if any(True for _ in module.children()):
                continue
            hook = composite.module_map({}, name, module)
            if is_identity_batch_norm(module):
                treatment[name] = "merged"
            else:
                treatment[name] = "gradient" if hook is None else type(hook).__name__
        return treatment
    finally:
        composite.remove()
