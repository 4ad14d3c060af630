"""Canonizers: temporary, output-preserving rewrites of a model before LRP.

LRP rules are defined for linear layers (``Linear``, ``Conv*``) followed by
element-wise activations. Normalisation layers are affine maps and are folded
into a neighbouring linear layer where that is exact, or frozen into a plain
affine map where it is not:

:class:`SiblingMergeBatchNorm`
    A BatchNorm right after a linear layer, ``BN(Wx + b)``, is merged backwards
    into it. Exact in eval mode. zennit's
    :class:`~zennit.canonizers.SequentialMergeBatchNorm`, restricted to pairs that are
    adjacent children of one :class:`torch.nn.Sequential`: zennit pairs modules that are
    adjacent in the list of all leaves, which in a pre-activation residual block pairs
    the block's last convolution with the next block's first BatchNorm, whose input is
    that convolution *plus* the shortcut (merging it would change the output).
:class:`ForwardMergeBatchNorm`
    A BatchNorm right *before* a linear layer that does not follow one (e.g.
    ``MaxPool -> BatchNorm -> Conv``, which zennit's canonizer leaves alone),
    ``W BN(x) + b = (W diag(s)) x + (b + W t)`` with ``s = gamma / sqrt(var + eps)``
    and ``t = beta - s mean``, is merged forwards into that layer. Exact in eval
    mode for ``Linear`` and for convolutions without padding (a padded border
    would be padded with 0 instead of ``t``); other cases are left to the
    :class:`~poisonscan.explain.composites.AffineNorm` rule.
:class:`FreezeInstanceNorm`
    InstanceNorm normalises each image with its own per-channel mean and
    variance. The canonizer detaches these statistics, so the forward output is
    unchanged while, for the gradient and every LRP rule, the layer becomes the
    per-image affine map ``y = a x + b`` (``a = gamma / sqrt(var(x) + eps)``,
    ``b = beta - a mean(x)``), i.e. a BatchNorm whose statistics are the image's.
:class:`ResidualSum`
    A residual block (:class:`poisonscan.models.ResidualBlock`) adds its two branches
    with ``+``, which no rule can see. The canonizer makes the block add them with
    zennit's :class:`~zennit.layer.Sum` module instead (``Sum(stack([residual,
    shortcut], -1))``, the same output), as zennit's ``ResNetCanonizer`` does for
    torchvision's blocks; the composites' rule for ``Sum`` (zennit's ``Norm``) then
    splits the relevance of the sum between the branches in proportion to their
    contributions, ``R_k = z_k / (z_1 + z_2 + eps) R``, which conserves it.

Merged BatchNorms are reset to the identity (as zennit does), and every change
is reverted when the composite is removed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from zennit.canonizers import AttributeCanonizer, Canonizer, SequentialMergeBatchNorm
from zennit.layer import Sum

from poisonscan.models import ResidualBlock

__all__ = [
    "ForwardMergeBatchNorm",
    "FreezeInstanceNorm",
    "ResidualSum",
    "SiblingMergeBatchNorm",
    "default_canonizers",
    "is_identity_batch_norm",
]


def is_identity_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm reset to the identity by a merge (up to ``eps``)."""
    if not isinstance(module, _BatchNorm) or module.running_var is None:
        return False
    var = module.running_var
    unit = bool(torch.all((var == 1) | (var == 1 - module.eps)))
    zero_mean = module.running_mean is not None and not bool(module.running_mean.any())
    affine_id = module.weight is None or (
        bool(torch.all(module.weight == 1)) and not bool(module.bias.any())
    )
    return unit and zero_mean and affine_id


def _bn_scale_shift(bn: _BatchNorm) -> tuple[Tensor, Tensor]:
    """``(s, t)`` with ``BN(x) = s x + t`` per channel (eval mode)."""
    assert bn.running_var is not None and bn.running_mean is not None
    s = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight
    t = -s * bn.running_mean
    if bn.bias is not None:
        t = t + bn.bias
    return s.detach(), t.detach()


def _forward_mergeable(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        no_pad = layer.padding == "valid" or (
            not isinstance(layer.padding, str) and all(p == 0 for p in layer.padding)
        )
        return no_pad and layer.groups == 1
    return False


class SiblingMergeBatchNorm(SequentialMergeBatchNorm):
    """zennit's backward BatchNorm merge, for pairs that are adjacent in one Sequential.

    ``Linear``/``Conv`` followed by a BatchNorm as the next child of the same
    :class:`torch.nn.Sequential` is merged (zennit's ``register``/``remove``); pairs that
    are only adjacent in the module tree (the last layer of one block and the first of the
    next) are left alone, as the data need not flow from one to the other.
    """

    def apply(self, root_module: nn.Module) -> list[SiblingMergeBatchNorm]:
        instances = []
        for seq in root_module.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            for layer, bn in itertools.pairwise(seq.children()):
                if isinstance(layer, self.linear_type) and isinstance(bn, self.batch_norm_type):
                    instance = self.copy()
                    instance.register((layer,), bn)
                    instances.append(instance)
        return instances


class ForwardMergeBatchNorm(Canonizer):
    """Merge an (eval-mode) BatchNorm into the linear layer that directly follows it.

    Only pairs that are adjacent children of one :class:`torch.nn.Sequential`
    are merged, so the order of execution is certain. BatchNorms already reduced
    to the identity (merged backwards by zennit) are skipped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bn: _BatchNorm | None = None
        self.layer: nn.Module | None = None
        self.saved: dict[str, Any] = {}

    def apply(self, root_module: nn.Module) -> list[ForwardMergeBatchNorm]:
        instances = []
        for seq in root_module.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            for bn, layer in itertools.pairwise(seq.children()):
                if (
                    isinstance(bn, _BatchNorm)
                    and bn.track_running_stats
                    and not bn.training
                    and not is_identity_batch_norm(bn)
                    and _forward_mergeable(layer)
                ):
                    instance = self.copy()
                    instance.register(bn, layer)
                    instances.append(instance)
        return instances

    def register(self, bn: _BatchNorm, layer: nn.Module) -> None:  # type: ignore[override]
        """Fold ``bn`` into ``layer`` and set ``bn`` to the identity."""
        self.bn, self.layer = bn, layer
        self.saved = {
            ("layer", "weight"): layer.weight.data,
            ("layer", "bias"): None if layer.bias is None else layer.bias.data,
        }
        for key in ("weight", "bias", "running_mean", "running_var"):
            if getattr(bn, key) is not None:
                self.saved[("bn", key)] = getattr(bn, key).data
        s, t = _bn_scale_shift(bn)
        w = layer.weight.data
        shape = (1, -1, *([1] * (w.ndim - 2)))
        shift = (w * t.view(shape)).sum(dim=tuple(range(1, w.ndim)))
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
        layer.weight.data = w * s.view(shape)
        layer.bias.data = layer.bias.data + shift
        bn.running_mean.data = torch.zeros_like(bn.running_mean)
        bn.running_var.data = torch.full_like(bn.running_var, 1.0 - bn.eps)
        if bn.weight is not None:
            bn.weight.data = torch.ones_like(bn.weight)
            bn.bias.data = torch.zeros_like(bn.bias)

    def remove(self) -> None:
        """Restore the parameters of both modules."""
        assert self.layer is not None and self.bn is not None
        self.layer.weight.data = self.saved[("layer", "weight")]
        bias = self.saved[("layer", "bias")]
        if bias is None:
            self.layer.bias = None
        else:
            self.layer.bias.data = bias
        for (owner, key), value in self.saved.items():
            if owner == "bn":
                getattr(self.bn, key).data = value

    def copy(self) -> ForwardMergeBatchNorm:
        return self.__class__()


def _frozen_instance_norm(module: _InstanceNorm) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        dims = tuple(range(2, x.ndim))
        mean = x.mean(dims, keepdim=True).detach()
        var = x.var(dims, keepdim=True, unbiased=False).detach()
        y = (x - mean) / torch.sqrt(var + module.eps)
        if module.affine:
            shape = (1, -1, *([1] * (x.ndim - 2)))
            y = y * module.weight.view(shape) + module.bias.view(shape)
        return y

    return forward


def _instance_norm_attributes(name: str, module: nn.Module) -> dict[str, Any] | None:
    uses_own_stats = isinstance(module, _InstanceNorm) and (
        module.training or not module.track_running_stats
    )
    return {"forward": _frozen_instance_norm(module)} if uses_own_stats else None


class FreezeInstanceNorm(AttributeCanonizer):
    """Detach the per-image statistics of every InstanceNorm (output unchanged)."""

    def __init__(self) -> None:
        super().__init__(_instance_norm_attributes)

    def copy(self) -> FreezeInstanceNorm:
        return self.__class__()


def _residual_attributes(name: str, module: nn.Module) -> dict[str, Any] | None:
    if not isinstance(module, ResidualBlock):
        return None
    total = Sum()

    def forward(x: Tensor) -> Tensor:
        return total(torch.stack(module.branches(x), dim=-1))

    return {"forward": forward, "canonizer_sum": total}


class ResidualSum(AttributeCanonizer):
    """Add the branches of every residual block with a :class:`~zennit.layer.Sum` module.

    zennit's ``ResNetBasicBlockCanonizer`` for this package's :class:`ResidualBlock`:
    ``forward`` is replaced by one that stacks the two branches on a new last axis and sums
    them with the module ``canonizer_sum`` (output unchanged); both are removed again with
    the composite.
    """

    def __init__(self) -> None:
        super().__init__(_residual_attributes)

    def copy(self) -> ResidualSum:
        return self.__class__()


def default_canonizers() -> list[Canonizer]:
    """Canonizers every LRP composite applies, in this order."""
    return [
        SiblingMergeBatchNorm(),
        ForwardMergeBatchNorm(),
        FreezeInstanceNorm(),
        ResidualSum(),
    ]
