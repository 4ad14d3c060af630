from __future__ import annotations

import pytest
import torch
import yaml
from conftest import REPO
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm

from poisonscan.explain.canonizers import SiblingMergeBatchNorm
from poisonscan.models import (
    MODELS,
    InceptionA,
    Net,
    PreActBlock,
    ResidualBlock,
    build_model,
    count_parameters,
)

# the reference study's models: hidden dense layers, a 128-d penultimate layer
MLP_MODELS = ("inception3", "net", "vgg")
RESIDUAL_MODELS = ("preact_resnet18", "resnet9")


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


def test_every_model_is_listed_here_and_in_the_schema() -> None:
    assert set(MODELS) == {*MLP_MODELS, *RESIDUAL_MODELS}
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    assert set(schema["properties"]["model"]["properties"]["name"]["enum"]) == set(MODELS)


@pytest.mark.parametrize("name", MLP_MODELS)
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


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"preact_resnet18"}))
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
    with pytest.raises(ValueError, match="resnet9 needs an image size divisible by 8, got 36"):
        build_model("resnet9", 3, image_size=36)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet", 3)
    assert {"net", "inception3", "vgg"} <= set(MODELS)


@pytest.mark.parametrize(("name", "dim"), [("resnet9", 128), ("preact_resnet18", 512)])
@pytest.mark.parametrize("size", [32, 64])
def test_residual_models_classify_at_32_and_64_pixels(name: str, dim: int, size: int) -> None:
    model = build_model(name, n_classes=10, image_size=size).eval()
    x = torch.randn(2, 3, size, size)
    seen: list[torch.Tensor] = []
    handle = model.penultimate.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    handle.remove()
    assert seen[0].shape == (2, dim) and model.head.in_features == dim
    assert isinstance(model.classifier, nn.Identity)
    assert any(isinstance(m, ResidualBlock) for m in model.modules())


def test_resnet9_layout() -> None:
    model = build_model("resnet9", n_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    sides = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, ResidualBlock):
            sides.append(tuple(x.shape[1:]))
    assert sides == [(32, 16, 16), (128, 4, 4)]
    assert x.shape == (2, 128, 1, 1)
    assert 3e5 < count_parameters(model) < 5e5


def test_preact_resnet18_is_backdoorbenchs_and_trains_on_cpu() -> None:
    torch.manual_seed(0)
    model = build_model("preact_resnet18", n_classes=10)
    assert count_parameters(model) == 11_171_146  # BackdoorBench's PreActResNet18(10)
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 8
    shortcuts = [b.shortcut is not None for b in blocks]  # a 1x1 conv where the shape changes
    assert shortcuts == [False, False, True, False, True, False, True, False]
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    loss = nn.functional.cross_entropy(model.train()(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.features[0].weight.grad.abs().sum() > 0


def merged_batch_norms(model: nn.Module, canonizer: SequentialMergeBatchNorm) -> list[str]:
    """Names of the BatchNorms ``canonizer`` merges (undone before returning)."""
    handles = canonizer.apply(model)
    names = {id(m): k for k, m in model.named_modules()}
    merged = sorted(names[id(h.batch_norm)] for h in handles)
    for h in handles:
        h.remove()
    return merged


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"preact_resnet18"}))
def test_sibling_merge_merges_what_zennit_merges(name: str) -> None:
    model = build_model(name, n_classes=5).eval()
    ours = merged_batch_norms(model, SiblingMergeBatchNorm())
    assert ours == merged_batch_norms(model, SequentialMergeBatchNorm()) and ours


def test_preact_batchnorms_after_a_convolution_are_merged() -> None:
    """The second BatchNorm of every block follows its conv and is merged; the first
    (pre-activation) reads conv + shortcut and is left to the AffineNorm rule, where zennit's
    leaf-order merge would fold it into the previous block's last conv."""
    torch.manual_seed(0)
    model = build_model("preact_resnet18", n_classes=10).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    ours = merged_batch_norms(model, SiblingMergeBatchNorm())
    assert len(ours) == 8 and all(k.endswith(".residual.1") for k in ours)
    assert len(merged_batch_norms(model, SequentialMergeBatchNorm())) == 16
    handles = SiblingMergeBatchNorm().apply(model)
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    for h in handles:
        h.remove()
    torch.testing.assert_close(model(x), before)
