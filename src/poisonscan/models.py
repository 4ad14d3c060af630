"""CNN architectures, selected by name from a registry.

Every model exposes ``penultimate`` (the module whose output feeds the final
classifier layer), so activations and LRP find their layers by name, not by
position.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

__all__ = ["MODELS", "Net", "build_model", "register_model"]

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
        If ``name`` is not registered.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](n_classes=n_classes, image_size=image_size)


@register_model("net")
class Net(nn.Module):
    """The reference study's small CNN ("Net"), for 3 x S x S inputs with S divisible by 8.

    Shapes for S = 32: 3x32x32 -> conv5(12)+InstanceNorm -> pool 12x16x16 -> conv5(32)+BN
    -> pool 32x8x8 -> conv5(64) -> pool 64x4x4 = 1024 -> 256 (+BN1d) -> 128 -> n_classes.
    """

    def __init__(self, n_classes: int, image_size: int = 32, dropout: float = 0.5) -> None:
        super().__init__()
        if image_size % 8:
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

    @property
    def penultimate(self) -> nn.Module:
        return self.classifier

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.classifier(self.flatten(self.features(x))))
