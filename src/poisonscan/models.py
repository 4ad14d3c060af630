"""CNN architectures, selected by name from a registry.

Every model has the same top-level layout, ``features`` (convolutions) ->
``flatten`` -> ``classifier`` (hidden linear layers) -> ``head`` (the final
linear layer), and exposes ``penultimate``: the module whose output feeds
``head``. Activation clustering hooks that module, so it finds its layer by
name, not by position. The residual networks (:class:`ResNet9`,
:class:`PreActResNet18`) end their ``features`` with global pooling and have no
hidden linear layers: their ``classifier`` is an identity, so ``penultimate`` is
the pooled feature vector.

The layout is meant for zennit's LRP canonizers: convolutions and their
BatchNorm layers sit next to each other, in forward order, inside plain
:class:`torch.nn.Sequential` blocks (so
:class:`poisonscan.explain.canonizers.SiblingMergeBatchNorm`, zennit's
``SequentialMergeBatchNorm`` within one Sequential, merges them); every ReLU is
its own, non-inplace module; the Inception branches are submodules whose
outputs :meth:`InceptionA.forward` joins with ``torch.cat``.
A residual block (:class:`ResidualBlock`) computes its two branches in
:meth:`ResidualBlock.branches` and adds them in ``forward``; for LRP the
canonizer :class:`poisonscan.explain.canonizers.ResidualSum` routes that
addition through zennit's ``Sum`` module, as zennit's ``ResNetCanonizer`` does
for torchvision's ResNets, so that a rule can split the relevance between them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "MODELS",
    "VGG",
    "BasicBlock",
    "InceptionA",
    "Net",
    "PreActBlock",
    "PreActResNet18",
    "ReducedInception3",
    "ResNet9",
    "ResidualBlock",
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


def _conv_bn_relu(
    c_in: int, c_out: int, kernel: int, padding: int = 0, stride: int = 1
) -> list[nn.Module]:
    """Conv2d (no bias; the BatchNorm has one) + BatchNorm2d + ReLU."""
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
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


class ResidualBlock(nn.Module):
    """A residual block: the sum of two branches, ``residual`` and ``shortcut`` (He et al. 2016).

    Subclasses compute both in :meth:`branches`; ``forward`` adds them. The LRP canonizer
    :class:`poisonscan.explain.canonizers.ResidualSum` replaces ``forward`` by one that adds
    them with zennit's ``Sum`` module (same output), whose rule splits the relevance of the
    sum between the branches in proportion to their contributions.

    References
    ----------
    K. He, X. Zhang, S. Ren and J. Sun, "Deep residual learning for image recognition",
    CVPR 2016.
    """

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The residual branch and the shortcut of ``x``, both of the block's output shape."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        residual, shortcut = self.branches(x)
        return residual + shortcut


class BasicBlock(ResidualBlock):
    """``x + f(x)`` with ``f`` = two (Conv2d 3x3 + BatchNorm2d + ReLU), channels and size kept.

    The residual block of the ResNet-9 of D. Page ("How to train your ResNet", 2018): unlike
    He et al.'s basic block, each convolution has its ReLU before the addition and there is
    none after it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            *_conv_bn_relu(channels, channels, 3, padding=1),
            *_conv_bn_relu(channels, channels, 3, padding=1),
        )
        self.shortcut = nn.Identity()

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.residual(x), self.shortcut(x)


@register_model("resnet9")
class ResNet9(_Classifier):
    """A narrow ResNet-9 for CIFAR-10-sized images (S divisible by 8), fast on CPU.

    D. Page's ResNet-9 (DAWNBench, "How to train your ResNet", 2018), built from the
    residual blocks of He et al. (2016), at a quarter of its width by default. Shapes for
    S = 32 and width w = ``width`` (16)::

        input                                          3 x 32 x 32
        prep: conv 3x3 -> w, BN, ReLU                  w x 32 x 32
        conv 3x3 -> 2w, BN, ReLU, max-pool 2          2w x 16 x 16
        BasicBlock(2w): x + 2 x (conv 3x3, BN, ReLU)  2w x 16 x 16
        conv 3x3 -> 4w, BN, ReLU, max-pool 2          4w x  8 x  8
        conv 3x3 -> 8w, BN, ReLU, max-pool 2          8w x  4 x  4
        BasicBlock(8w)                                8w x  4 x  4
        global max-pool, flatten                      8w            (penultimate)
        head: 8w -> n_classes

    Larger inputs leave larger maps before the global pooling. About 0.41 M parameters at
    w = 16 (6.6 M at Page's w = 64).

    References
    ----------
    K. He, X. Zhang, S. Ren and J. Sun, "Deep residual learning for image recognition",
    CVPR 2016. D. Page, "How to train your ResNet", myrtle.ai blog, 2018.
    """

    width = 16

    def __init__(self, n_classes: int, image_size: int = 32, width: int | None = None) -> None:
        super().__init__()
        if image_size % 8 or image_size < 8:
            raise ValueError(f"resnet9 needs an image size divisible by 8, got {image_size}")
        w = width or self.width
        self.features = nn.Sequential(
            *_conv_bn_relu(3, w, 3, padding=1),
            *_conv_bn_relu(w, 2 * w, 3, padding=1),
            nn.MaxPool2d(2),
            BasicBlock(2 * w),
            *_conv_bn_relu(2 * w, 4 * w, 3, padding=1),
            nn.MaxPool2d(2),
            *_conv_bn_relu(4 * w, 8 * w, 3, padding=1),
            nn.MaxPool2d(2),
            BasicBlock(8 * w),
            nn.AdaptiveMaxPool2d(1),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Identity()
        self.head = nn.Linear(8 * w, n_classes)


class PreActBlock(ResidualBlock):
    """The pre-activation basic block (He et al. 2016, "Identity mappings").

    ``pre`` = BatchNorm2d + ReLU of the input; ``residual`` = conv 3x3 (stride ``stride``),
    BatchNorm2d, ReLU, conv 3x3; the shortcut is the input itself or, where the shape
    changes, a 1x1 convolution (no BatchNorm) of the pre-activated input, as in
    BackdoorBench's ``PreActBlock``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU())
        self.residual = nn.Sequential(
            *_conv_bn_relu(c_in, c_out, 3, padding=1, stride=stride),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        )
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False))

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.pre(x)
        return self.residual(h), (x if self.shortcut is None else self.shortcut(h))


@register_model("preact_resnet18")
class PreActResNet18(_Classifier):
    """PreAct-ResNet18, BackdoorBench's default model (about 11 M parameters), S >= 8.

    He et al.'s pre-activation ResNet-18 (2016, "Identity mappings") in the CIFAR variant
    of BackdoorBench (``models/preact_resnet.py``, from K. Liu's pytorch-cifar): a 3x3 stem
    convolution without pooling, four stages of two :class:`PreActBlock` (64, 128, 256, 512
    channels; stride 2 at the start of stages 2-4), global average pooling and one linear
    layer. Shapes for S = 32::

        input                              3 x 32 x 32
        conv 3x3 -> 64                    64 x 32 x 32
        stage 1: 2 x PreActBlock(64)      64 x 32 x 32
        stage 2: 2 x PreActBlock(128)    128 x 16 x 16
        stage 3: 2 x PreActBlock(256)    256 x  8 x  8
        stage 4: 2 x PreActBlock(512)    512 x  4 x  4
        global average pool, flatten     512            (penultimate)
        head: 512 -> n_classes

    Like BackdoorBench's, no BatchNorm + ReLU after the last block. Module names differ from
    BackdoorBench's (the layout above), so its checkpoints need their keys renamed.

    References
    ----------
    K. He, X. Zhang, S. Ren and J. Sun, "Identity mappings in deep residual networks",
    ECCV 2016. B. Wu et al., "BackdoorBench: a comprehensive benchmark of backdoor
    learning", NeurIPS 2022 Datasets and Benchmarks.
    """

    stages = ((64, 1), (128, 2), (256, 2), (512, 2))

    def __init__(self, n_classes: int, image_size: int = 32) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"preact_resnet18 needs an image size of at least 8, got {image_size}")
        blocks: list[nn.Module] = [nn.Conv2d(3, 64, 3, padding=1, bias=False)]
        c_in = 64
        for c_out, stride in self.stages:
            blocks.append(
                nn.Sequential(PreActBlock(c_in, c_out, stride), PreActBlock(c_out, c_out))
            )
            c_in = c_out
        blocks.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*blocks)
        self.flatten = nn.Flatten()
        self.classifier = nn.Identity()
        self.head = nn.Linear(c_in, n_classes)
