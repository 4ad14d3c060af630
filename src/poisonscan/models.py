"""CNN architectures, selected by name from a registry.

Every model has the same top-level layout, ``features`` (convolutions) ->
``flatten`` -> ``classifier`` (hidden linear layers) -> ``head`` (the final
linear layer), and exposes ``penultimate``: the module whose output feeds
``head``. Activation clustering hooks that module, so it finds its layer by
name, not by position.

The layout is meant for zennit's LRP canonizers: convolutions and their
BatchNorm layers sit next to each other, in forward order, inside plain
:class:`torch.nn.Sequential` blocks (so ``SequentialMergeBatchNorm`` merges
them); every ReLU is its own, non-inplace module; the Inception branches are
submodules whose outputs :meth:`InceptionA.forward` joins with ``torch.cat``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "MODELS",
    "VGG",
    "InceptionA",
    "Net",
    "ReducedInception3",
    "build_model",
    "count_parameters",
    "register_model",
]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class decorator adding a model constructor to :data:`MODELS` under ``name``."""

    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = cls
        return cls

    return wrap


def build_model(name: str, n_classes: int, image_size: int = 32) -> nn.Module:
    """Instantiate the registered model ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not registered, or the model does not support ``image_size``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](n_classes=n_classes, image_size=image_size)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _Classifier(nn.Module):
    """Shared layout: ``features`` -> ``flatten`` -> ``classifier`` -> ``head``."""

    features: nn.Module
    flatten: nn.Module
    classifier: nn.Module
    head: nn.Module

    @property
    def penultimate(self) -> nn.Module:
        """The module whose output (n, 128) feeds the final linear layer ``head``."""
        return self.classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.classifier(self.flatten(self.features(x))))


def _mlp(n_in: int, n_classes: int, dropout: float) -> tuple[nn.Sequential, nn.Linear]:
    """Hidden layers n_in -> 256 -> 128 (ReLU, dropout) and the head 128 -> n_classes."""
    hidden = nn.Sequential(
        nn.Linear(n_in, 256),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Dropout(dropout),
    )
    return hidden, nn.Linear(128, n_classes)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, padding: int = 0) -> list[nn.Module]:
    """Conv2d (no bias; the BatchNorm has one) + BatchNorm2d + ReLU."""
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


@register_model("net")
class Net(_Classifier):
    """The reference study's small CNN ("Net"), for 3 x S x S inputs with S divisible by 8.

    Shapes for S = 32::

        input                                   3 x 32 x 32
        conv 5x5 -> 12, InstanceNorm, ReLU, pool  12 x 16 x 16
        conv 5x5 -> 32, BatchNorm, ReLU, pool     32 x  8 x  8
        conv 5x5 -> 64, ReLU, pool                64 x  4 x  4   (flattened: 1024)
        classifier: 1024 -> 256 (BatchNorm1d, ReLU, dropout) -> 128 (ReLU, dropout)
        head: 128 -> n_classes

    About 0.36 M parameters for 43 classes.
    """

    def __init__(self, n_classes: int, image_size: int = 32, dropout: float = 0.5) -> None:
        super().__init__()
        if image_size % 8 or image_size < 8:
            raise ValueError(f"Net needs an image size divisible by 8, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(3, 12, 5, padding=2),
            nn.InstanceNorm2d(12, affine=True),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(12, 32, 5, padding=2),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 64 * (image_size // 8) ** 2
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(flat, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(128, n_classes)


class InceptionA(nn.Module):
    """Inception-v3's module A: four parallel branches, concatenated along channels.

    Branches (every conv is Conv2d + BatchNorm2d + ReLU, spatial size kept):
    ``branch1x1`` 1x1 -> 64; ``branch5x5`` 1x1 -> 48, 5x5 -> 64; ``branch3x3dbl``
    1x1 -> 64, 3x3 -> 96, 3x3 -> 96; ``branch_pool`` 3x3 max-pool (stride 1,
    padding 1), 1x1 -> 32. Output: (n, 64 + 64 + 96 + 32 = 256, H, W).
    """

    out_channels = 256

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch1x1 = nn.Sequential(*_conv_bn_relu(c_in, 64, 1))
        self.branch5x5 = nn.Sequential(
            *_conv_bn_relu(c_in, 48, 1), *_conv_bn_relu(48, 64, 5, padding=2)
        )
        self.branch3x3dbl = nn.Sequential(
            *_conv_bn_relu(c_in, 64, 1),
            *_conv_bn_relu(64, 96, 3, padding=1),
            *_conv_bn_relu(96, 96, 3, padding=1),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), *_conv_bn_relu(c_in, 32, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1x1, self.branch5x5, self.branch3x3dbl, self.branch_pool)
        return torch.cat([b(x) for b in branches], dim=1)


def _inception3_side(image_size: int) -> int:
    """Spatial side after the features of :class:`ReducedInception3` (0 = too small)."""
    side = image_size // 2
    for _ in range(3):
        side = (side - 1) // 2  # 2x2 valid convolution, then 2x2 max-pool
    return max(side, 0)


@register_model("inception3")
class ReducedInception3(_Classifier):
    """The reference study's reduced Inception-v3 (about 1.1 M parameters), inputs S >= 32.

    No stem: one :class:`InceptionA` module works on the input image. Shapes for S = 32::

        input                                          3 x 32 x 32
        InceptionA (branches 64 + 64 + 96 + 32)      256 x 32 x 32
        max-pool 2                                   256 x 16 x 16
        conv 2x2 (256 -> 256), BN, ReLU; max-pool 2  256 x 15 x 15 -> 256 x 7 x 7
        conv 2x2 (256 -> 256), BN, ReLU; max-pool 2  256 x  6 x  6 -> 256 x 3 x 3
        conv 2x2 (256 -> 256), BN, ReLU; max-pool 2  256 x  2 x  2 -> 256 x 1 x 1
        flatten                                      256
        classifier: 256 -> 256 (ReLU, dropout) -> 128 (ReLU, dropout)
        head: 128 -> n_classes

    Larger inputs leave a larger final map (e.g. 2 x 2 for S = 48), which the
    first classifier layer takes flattened.
    """

    def __init__(self, n_classes: int, image_size: int = 32, dropout: float = 0.5) -> None:
        super().__init__()
        side = _inception3_side(image_size)
        if side < 1:
            raise ValueError(f"inception3 needs an image size of at least 32, got {image_size}")
        blocks: list[nn.Module] = [InceptionA(3), nn.MaxPool2d(2)]
        for _ in range(3):
            blocks += [*_conv_bn_relu(256, 256, 2), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)
        self.flatten = nn.Flatten()
        self.classifier, self.head = _mlp(256 * side * side, n_classes, dropout)


@register_model("vgg")
class VGG(_Classifier):
    """A small VGG-style CNN with BatchNorm (about 0.85 M parameters), S divisible by 8.

    Three blocks of two 3x3 convolutions (Conv2d + BatchNorm2d + ReLU) and a
    2x2 max-pool. Shapes for S = 32::

        input                          3 x 32 x 32
        2 x conv 3x3 -> 32, pool      32 x 16 x 16
        2 x conv 3x3 -> 64, pool      64 x  8 x  8
        2 x conv 3x3 -> 128, pool    128 x  4 x  4   (flattened: 2048)
        classifier: 2048 -> 256 (ReLU, dropout) -> 128 (ReLU, dropout)
        head: 128 -> n_classes
    """

    widths = (32, 64, 128)

    def __init__(self, n_classes: int, image_size: int = 32, dropout: float = 0.5) -> None:
        super().__init__()
        if image_size % 8 or image_size < 8:
            raise ValueError(f"vgg needs an image size divisible by 8, got {image_size}")
        blocks: list[nn.Module] = []
        c_in = 3
        for width in self.widths:
            blocks += [
                *_conv_bn_relu(c_in, width, 3, padding=1),
                *_conv_bn_relu(width, width, 3, padding=1),
                nn.MaxPool2d(2),
            ]
            c_in = width
        self.features = nn.Sequential(*blocks)
        self.flatten = nn.Flatten()
        self.classifier, self.head = _mlp(c_in * (image_size // 8) ** 2, n_classes, dropout)
