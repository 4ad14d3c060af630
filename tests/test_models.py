from __future__ import annotations

import pytest
import torch

from poisonscan.models import MODELS, Net, build_model


def test_net_shapes_on_32x32() -> None:
    model = build_model("net", n_classes=12).eval()
    x = torch.randn(5, 3, 32, 32)
    assert model(x).shape == (5, 12)
    assert model.features(x).shape == (5, 64, 4, 4)
    assert model.penultimate(model.flatten(model.features(x))).shape == (5, 128)


def test_net_other_sizes_and_errors() -> None:
    assert Net(n_classes=3, image_size=48).eval()(torch.randn(2, 3, 48, 48)).shape == (2, 3)
    with pytest.raises(ValueError, match="divisible by 8, got 30"):
        Net(n_classes=3, image_size=30)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet", 3)
    assert "net" in MODELS
