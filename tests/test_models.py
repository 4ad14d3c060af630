from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm

from poisonscan.models import MODELS, InceptionA, Net, build_model, count_parameters


def test_net_shapes_on_32x32() -> None:
    model = build_model("net", n_classes=12).eval()
    x = torch.randn(5, 3, 32, 32)
    assert model(x).shape == (5, 12)
    assert model.features(x).shape == (5, 64, 4, 4)
    assert model.penultimate(model.flatten(model.features(x))).shape == (5, 128)
    layers = [type(m) for m in model.features]
    assert layers[:2] == [nn.Conv2d, nn.InstanceNorm2d] and layers[5] is nn.BatchNorm2d
    assert model.classifier[0].in_features == 1024
    assert isinstance(model.classifier[1], nn.BatchNorm1d)


def test_inception3_shapes_and_parameter_count_on_32x32() -> None:
    model = build_model("inception3", n_classes=43).eval()
    x = torch.randn(2, 3, 32, 32)
    inception = model.features[0]
    assert isinstance(inception, InceptionA)
    branch_channels = [
        b(x).shape[1]
        for b in (
            inception.branch1x1,
            inception.branch5x5,
            inception.branch3x3dbl,
            inception.branch_pool,
        )
    ]
    assert branch_channels == [64, 64, 96, 32]
    assert inception(x).shape == (2, 256, 32, 32)
    # after each max-pool: 16, then (conv 2x2, pool) three times: 15 -> 7, 6 -> 3, 2 -> 1
    sides = []
    h = x
    for layer in model.features:
        h = layer(h)
        if isinstance(layer, nn.MaxPool2d):
            sides.append(h.shape[-1])
    assert sides == [16, 7, 3, 1] and h.shape == (2, 256, 1, 1)
    assert [m.in_features for m in model.modules() if isinstance(m, nn.Linear)] == [256, 256, 128]
    assert model(x).shape == (2, 43)
    assert 0.9e6 < count_parameters(model) < 1.3e6  # "about 1 M parameters"


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [32, 48])
def test_every_model_classifies_and_exposes_a_128d_penultimate(name: str, size: int) -> None:
    model = build_model(name, n_classes=7, image_size=size).eval()
    x = torch.randn(3, 3, size, size)
    seen: list[torch.Tensor] = []
    handle = model.penultimate.register_forward_hook(lambda m, i, o: seen.append(o))
    assert model(x).shape == (3, 7)
    handle.remove()
    assert seen[0].shape == (3, 128)
    assert 1e5 < count_parameters(model) < 2e6


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zennit_merges_every_batchnorm_without_changing_the_output(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, n_classes=5).eval()
    for m in model.modules():  # non-trivial statistics, so a missed merge would show
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
    x = torch.randn(4, 3, 32, 32)
    before = model(x)
    canonizer = SequentialMergeBatchNorm()
    handles = canonizer.apply(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in model.modules())
    assert len(handles) == n_bn > 0  # every BatchNorm follows its conv / linear layer
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    for h in handles:
        h.remove()
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_model_size_errors() -> None:
    with pytest.raises(ValueError, match="divisible by 8, got 30"):
        Net(n_classes=3, image_size=30)
    with pytest.raises(ValueError, match="at least 32, got 24"):
        build_model("inception3", 3, image_size=24)
    with pytest.raises(ValueError, match="vgg needs an image size divisible by 8, got 20"):
        build_model("vgg", 3, image_size=20)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet", 3)
    assert {"net", "inception3", "vgg"} <= set(MODELS)
