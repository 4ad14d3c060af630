"""Tests for poisonscan.explain: canonizers, LRP composites, methods, post-processing."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock as TorchvisionBasicBlock
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import LayerMapComposite, layer_map_base
from zennit.layer import Sum
from zennit.rules import Epsilon
from zennit.torchvision import ResNetCanonizer
from zennit.types import Convolution

from poisonscan import explain
from poisonscan.explain import params as params_module
from poisonscan.explain.canonizers import (
    ForwardMergeBatchNorm,
    ResidualSum,
    is_identity_batch_norm,
)
from poisonscan.inference import Normalization
from poisonscan.models import MODELS, BasicBlock, ResidualBlock, ResNet9, build_model

NORM = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
SHAPE = (3, 32, 32)


def randomize_norm_layers(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial affine parameters and running statistics in every norm layer; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.weight is not None:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
    return model.eval()


@functools.cache
def registered_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_norm_layers(build_model(name, n_classes=5, image_size=32))


def extreme_images() -> np.ndarray:
    """All black, all white, and saturated (pure red with white stripes)."""
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    images[1] = 255
    images[2, ..., 0] = 255
    images[2, ::2] = 255
    return images


def relevance(model: nn.Module, composite_name: str, x: Tensor, target: Tensor, eps: float = 1e-6):
    p = explain.ExplainParams(composite=composite_name, epsilon=eps)
    with explain.make_explainer(model, p, NORM, tuple(x.shape[1:])) as ex:
        return ex(x, target)


# --- registries --------------------------------------------------------------------------


def test_registries_agree_with_params_and_schema() -> None:
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    section = schema["properties"]["explain"]["properties"]
    for registry, names, key in [
        (explain.METHODS, params_module.METHOD_NAMES, "method"),
        (explain.COMPOSITES, params_module.COMPOSITE_NAMES, "composite"),
        (explain.REDUCTIONS, params_module.REDUCTION_NAMES, "reduction"),
        (explain.NORMALIZATIONS, params_module.NORMALIZATION_NAMES, "normalization"),
    ]:
        assert sorted(registry) == sorted(names) == sorted(section[key]["enum"]), key
    defaults = {k: v["default"] for k, v in section.items()}
    assert explain.ExplainParams.from_config(defaults) == explain.ExplainParams()


def test_params_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown explain.method 'lime'.*'lrp'"):
        explain.ExplainParams(method="lime")
    with pytest.raises(ValueError, match=r"unknown explain parameter\(s\) \['colour'\]"):
        explain.ExplainParams.from_config({"colour": 1})
    with pytest.raises(ValueError, match="unknown LRP composite 'lrp_magic'"):
        explain.make_composite("lrp_magic", 1e-6, NORM, SHAPE)
    assert explain.resolve_classes("all", 4, target=2) == [0, 1, 2, 3]
    assert explain.resolve_classes("target", 4, target=2) == [2]
    assert explain.resolve_classes([3, 1, 3], 4, target=2) == [1, 2, 3]
    with pytest.raises(ValueError, match=r"class ids \[7\] are not in 0..3"):
        explain.resolve_classes([7], 4)


# --- canonizers and layer treatment ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_canonized_models_give_the_original_outputs(name: str) -> None:
    model = registered_model(name)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = model(x).detach()
    for composite_name in sorted(explain.COMPOSITES):
        composite = explain.make_composite(composite_name, 1e-6, NORM, SHAPE)
        composite.register(model)
        try:
            canonized = model(x).detach()
        finally:
            composite.remove()
        torch.testing.assert_close(canonized, reference, rtol=1e-4, atol=1e-5)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)  # fully reverted


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_layer_of_every_model_has_a_justified_treatment(name: str) -> None:
    model = registered_model(name)
    composite = explain.make_composite("epsilon_gamma_box", 1e-6, NORM, SHAPE)
    treatment = explain.layer_treatment(model, composite)
    modules = dict(model.named_modules())
    inputs = explain.input_layers(model, SHAPE)
    assert inputs, "no layer reads the image"
    for layer, how in treatment.items():
        m = modules.get(layer)
        if m is None:  # added by the canonizers while the composite is registered
            assert layer.endswith(".canonizer_sum") and how == "Norm", (layer, how)
        elif layer in inputs:
            assert how == "ZBox", layer
        elif isinstance(m, nn.Conv2d):
            assert how == "Gamma", layer
        elif isinstance(m, nn.Linear):
            assert how == "Epsilon", layer
        elif isinstance(m, nn.modules.batchnorm._BatchNorm | nn.modules.instancenorm._InstanceNorm):
            assert how in {"merged", "AffineNorm"}, layer
        elif isinstance(m, nn.ReLU):
            assert how == "Pass", layer
        elif isinstance(m, nn.AdaptiveAvgPool2d):  # global average pooling (sum-pooling)
            assert how == "Norm", layer
        else:  # pooling, dropout, flatten, identity: the gradient, as zennit prescribes
            assert isinstance(
                m, nn.MaxPool2d | nn.AdaptiveMaxPool2d | nn.Dropout | nn.Flatten | nn.Identity
            ), (layer, m)
            assert how == "gradient", layer
    n_blocks = sum(isinstance(m, ResidualBlock) for m in modules.values())
    sums = [k for k in treatment if k.endswith(".canonizer_sum")]
    assert len(sums) == n_blocks and (n_blocks > 0) == (name in {"resnet9", "preact_resnet18"})


class TwoBranch(nn.Module):
    """A stem, two branches joined by torch.cat (one behind a max-pool), a dense head."""

    def __init__(self, bias: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=bias), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(4, 3, 1, bias=bias), nn.ReLU())
        self.b = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            nn.Conv2d(4, 5, 3, padding=1, bias=bias),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 6, bias=bias), nn.ReLU(),
            nn.Linear(6, 4, bias=bias),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        return self.head(torch.cat([self.a(h), self.b(h)], dim=1))


def test_input_layers_are_every_layer_that_reads_the_image() -> None:
    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
            self.b = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(3, 2, 1))
            self.c = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1))

        def forward(self, x: Tensor) -> Tensor:
            return torch.cat([self.a(x), self.b(x), self.c(x)], 1).sum((2, 3))

    assert explain.input_layers(Branches().eval(), (3, 8, 8)) == {"a.0", "b.1", "c.0"}


def test_batch_norm_after_pooling_is_merged_forward_where_exact() -> None:
    torch.manual_seed(0)
    model = randomize_norm_layers(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(4),
            nn.Conv2d(4, 4, 2, bias=False),  # pool -> BN -> conv: merged
            nn.ReLU(),
            nn.BatchNorm2d(4),
            nn.Conv2d(4, 4, 3, padding=1),  # padded: not exact
            nn.ReLU(),
            nn.Flatten(),
            nn.BatchNorm1d(4 * 7 * 7),
            nn.Linear(4 * 7 * 7, 3),
        )
    )
    x = torch.randn(5, 3, 16, 16)
    reference = model(x).detach()
    conv_bias = model[4].bias
    canonizers = ForwardMergeBatchNorm().apply(model)
    try:
        assert len(canonizers) == 2
        torch.testing.assert_close(model(x).detach(), reference, rtol=1e-5, atol=1e-5)
        assert is_identity_batch_norm(model[3]) and is_identity_batch_norm(model[10])
        assert not is_identity_batch_norm(model[6])
    finally:
        for c in canonizers:
            c.remove()
    assert model[4].bias is conv_bias is None and not is_identity_batch_norm(model[3])
    composite = explain.make_composite("epsilon_plus", 1e-6, NORM, (3, 16, 16))
    treatment = explain.layer_treatment(model, composite)
    assert [treatment[k] for k in ("3", "6", "10")] == ["merged", "AffineNorm", "merged"]


def test_affine_norm_rule_equals_merging_the_instance_norm_per_image() -> None:
    """Epsilon-LRP through a frozen InstanceNorm = epsilon-LRP of a conv merged with it."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    inorm = randomize_norm_layers(nn.InstanceNorm2d(4, affine=True))
    tail = [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)]
    model = nn.Sequential(conv, inorm, *tail).double().eval()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        z = conv(x)
        mean, var = z.mean((2, 3)), z.var((2, 3), unbiased=False)
        a = inorm.weight / torch.sqrt(var[0] + inorm.eps)
        merged = nn.Conv2d(3, 4, 3, padding=1).double()
        merged.weight.copy_(conv.weight * a.view(-1, 1, 1, 1))
        merged.bias.copy_(a * (conv.bias - mean[0]) + inorm.bias)
    twin = nn.Sequential(merged, *tail).double().eval()
    torch.testing.assert_close(twin(x), model(x))
    t = torch.tensor([1])
    got, want = (relevance(m, "epsilon", x, t, eps=1e-10) for m in (model, twin))
    torch.testing.assert_close(got, want)
    assert want.abs().sum() > 0.1


# --- conservation and a reference implementation -----------------------------------------


def relevance_per_layer(model: nn.Module, x: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Relevance sums (per image) at the output of every leaf module and at the input."""
    sums: dict[str, Tensor] = {}
    handles = []

    def capture(name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if output.requires_grad:
                output.register_hook(
                    lambda g: sums.__setitem__(name, g.sum((1, 2, 3)[: g.ndim - 1]))
                )

        return hook

    for name, m in model.named_modules():
        if not any(True for _ in m.children()):
            handles.append(m.register_forward_hook(capture(name)))
    try:
        sums["input"] = relevance(model, "epsilon", x, target, eps=1e-9).sum((1, 2, 3))
    finally:
        for h in handles:
            h.remove()
    return sums


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 10, bias=False),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(10, 4, bias=False),
        ),
        TwoBranch(bias=False),
    ],
    ids=["sequential", "two_branches"],
)
def test_epsilon_rule_conserves_relevance_layer_by_layer_without_biases(model: nn.Module) -> None:
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    model = model.double().eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    sums = relevance_per_layer(model, x, torch.tensor([0, 1, 3]))
    assert len(sums) >= 8
    # one-hot start: relevance 1 at every layer of the main path ...
    for name, s in sums.items():
        if not name.startswith(("a.", "b.")):
            np.testing.assert_allclose(s.numpy(), 1.0, rtol=1e-4, err_msg=name)
    if isinstance(model, TwoBranch):  # ... and in every cut through both branches
        for a, b in [("a.0", "b.1"), ("a.1", "b.2"), ("a.0", "b.2")]:
            np.testing.assert_allclose((sums[a] + sums[b]).numpy(), 1.0, rtol=1e-4, err_msg=a + b)
        assert torch.all(sums["a.1"].abs() > 1e-3) and torch.all(sums["b.2"].abs() > 1e-3)


def test_epsilon_rule_conserves_relevance_through_residual_sums() -> None:
    """ResNet-9 without biases: relevance 1 at every cut of the main path and at the input."""
    torch.manual_seed(0)
    model = randomize_norm_layers(ResNet9(n_classes=4, width=2)).double()
    with torch.no_grad():  # BatchNorms without shift merge into bias-free convolutions
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.zero_()
                m.running_mean.zero_()
        model.head.bias.zero_()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    sums = relevance_per_layer(model, x, torch.tensor([0, 1, 3]))
    branch = ("features.7.residual.", "features.16.residual.")
    main = {k: v for k, v in sums.items() if not k.startswith(branch)}
    assert len(main) >= 15 and "features.7.shortcut" in main and "input" in main
    for name, s in main.items():
        np.testing.assert_allclose(s.numpy(), 1.0, rtol=1e-4, err_msg=name)
    for block in branch:  # the residual branch gets a share of the sum, not all of it
        share = sums[f"{block}5"]
        assert torch.all(share.abs() > 1e-3) and torch.all((share - 1).abs() > 1e-3), block


class _TorchvisionStyleBlock(ResidualBlock):
    """torchvision's BasicBlock as a :class:`ResidualBlock` (its final ReLU follows it)."""

    def __init__(self, block: TorchvisionBasicBlock) -> None:
        super().__init__()
        self.residual = nn.Sequential(block.conv1, block.bn1, nn.ReLU(), block.conv2, block.bn2)

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.residual(x), x


def test_residual_sum_agrees_with_zennits_resnet_canonizer() -> None:
    """The project's composite on a residual block = zennit's own ResNet treatment."""
    torch.manual_seed(0)
    block = randomize_norm_layers(TorchvisionBasicBlock(4, 4))
    stem, pool = nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1)
    head = nn.Linear(4, 3)
    theirs = nn.Sequential(stem, nn.ReLU(), block, pool, nn.Flatten(), head).double().eval()
    ours = nn.Sequential(
        stem, nn.ReLU(), _TorchvisionStyleBlock(block), nn.ReLU(), pool, nn.Flatten(), head
    ).double().eval()  # fmt: skip
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x))
    target = torch.tensor([2, 0])
    layer_map = [*layer_map_base(1e-6), (Convolution, Epsilon(1e-6)), (nn.Linear, Epsilon(1e-6))]
    zennit = LayerMapComposite(layer_map=layer_map, canonizers=[ResNetCanonizer()])
    with Gradient(theirs, zennit) as attributor:
        _, want = attributor(x, torch.eye(3, dtype=torch.float64)[target])
    got = relevance(ours, "epsilon", x, target)
    torch.testing.assert_close(got, want)
    assert want.abs().sum() > 0.1
    # without the canonizer the addition gets no rule, and the relevance differs
    plain = LayerMapComposite(layer_map=layer_map, canonizers=[SequentialMergeBatchNorm()])
    with Gradient(ours, plain) as attributor:
        _, other = attributor(x, torch.eye(3, dtype=torch.float64)[target])
    assert not torch.allclose(other, want)


def test_residual_sum_canonizer_keeps_the_output_and_is_removed() -> None:
    block = BasicBlock(3).eval()
    x = torch.randn(2, 3, 4, 4)
    before = block(x)
    canonizers = ResidualSum().apply(block)
    assert len(canonizers) == 1 and isinstance(block.canonizer_sum, Sum)
    torch.testing.assert_close(block(x), before)
    for c in canonizers:
        c.remove()
    assert not hasattr(block, "canonizer_sum") and "forward" not in vars(block)
    torch.testing.assert_close(block(x), before)


def test_branches_receive_the_relevance_of_their_channels() -> None:
    torch.manual_seed(0)
    model = TwoBranch(bias=True).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    seen: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            output.register_hook(lambda g: seen.__setitem__(name, g))

        return hook

    def keep_cat(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        inputs[0].register_hook(lambda g: seen.__setitem__("cat", g))

    handles = [model.a.register_forward_hook(keep("a")), model.b.register_forward_hook(keep("b")),
               model.head.register_forward_pre_hook(keep_cat)]  # fmt: skip
    try:
        relevance(model, "epsilon_plus", x, torch.tensor([2, 0]))
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(seen["a"], seen["cat"][:, :3])
    torch.testing.assert_close(seen["b"], seen["cat"][:, 3:])


def numpy_lrp_epsilon(layers: list[tuple[str, np.ndarray, np.ndarray]], x: np.ndarray,
                      target: int, eps: float) -> np.ndarray:  # fmt: skip
    """Hand-written LRP-epsilon for conv (valid, stride 1) / relu / dense layers, one image.

    ``layers``: ("conv", W (O, C, k, k), b), ("relu", _, _), ("flatten", _, _),
    ("dense", W (O, I), b). Returns the input relevance, shape of ``x``.
    """

    def stab(z: np.ndarray) -> np.ndarray:  # zennit: z + eps * sign(z), sign(0) = +1
        return z + eps * np.where(z >= 0, 1.0, -1.0)

    def conv(a: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        o, _, k, _ = w.shape
        h, wd = a.shape[1] - k + 1, a.shape[2] - k + 1
        z = np.zeros((o, h, wd))
        for i in range(h):
            for j in range(wd):
                z[:, i, j] = np.tensordot(w, a[:, i : i + k, j : j + k], axes=3) + b
        return z

    def forward(kind: str, w: np.ndarray, b: np.ndarray, a: np.ndarray) -> np.ndarray:
        if kind == "conv":
            return conv(a, w, b)
        if kind == "dense":
            return w @ a + b
        return np.maximum(a, 0) if kind == "relu" else a.reshape(-1)

    acts = [x]
    for kind, w, b in layers:
        acts.append(forward(kind, w, b, acts[-1]))
    r = np.zeros_like(acts[-1])
    r[target] = 1.0
    for (kind, w, b), a in zip(reversed(layers), reversed(acts[:-1]), strict=True):
        if kind == "dense":
            r = a * (w.T @ (r / stab(w @ a + b)))
        elif kind == "conv":
            s = r / stab(conv(a, w, b))
            k = w.shape[2]
            c = np.zeros_like(a)
            for i in range(s.shape[1]):
                for j in range(s.shape[2]):
                    c[:, i : i + k, j : j + k] += np.tensordot(s[:, i, j], w, axes=1)
            r = a * c
        elif kind == "flatten":
            r = r.reshape(a.shape)
        # relu: relevance passes unchanged
    return r


def test_lrp_epsilon_agrees_with_a_hand_written_reference() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 2), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5), nn.ReLU(), nn.Linear(5, 3),
    ).double().eval()  # fmt: skip
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    targets = [2, 0]
    eps = 0.05  # large enough for the stabiliser to matter
    got = relevance(model, "epsilon", x, torch.tensor(targets), eps=eps).numpy()
    kinds = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.Flatten: "flatten", nn.Linear: "dense"}
    layers = [(kinds[type(m)], getattr(m, "weight", torch.zeros(0)).detach().numpy(),
               getattr(m, "bias", torch.zeros(0)).detach().numpy()) for m in model]  # fmt: skip
    for i, t in enumerate(targets):
        want = numpy_lrp_epsilon(layers, x[i].numpy(), t, eps)
        np.testing.assert_allclose(got[i], want, rtol=1e-8, atol=1e-12)
        assert np.abs(want).sum() > 0.1


# --- finite heatmaps ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_heatmaps_finite_on_black_white_and_saturated_images(name: str) -> None:
    model = registered_model(name)
    x = NORM.to_tensor(extreme_images())
    targets = torch.tensor([0, 1, 4])
    for composite_name in sorted(explain.COMPOSITES):
        rel = relevance(model, composite_name, x, targets)
        assert rel.shape == (3, *SHAPE)
        assert torch.isfinite(rel).all(), composite_name
        h = explain.to_heatmaps(rel.numpy(), "sum", "minmax_mass")
        assert np.isfinite(h).all()


@pytest.mark.parametrize("method", sorted(explain.METHODS))
def test_every_method_gives_finite_input_sized_attributions(method: str) -> None:
    x = NORM.to_tensor(extreme_images())
    p = explain.ExplainParams(method=method, n_iter=2)
    for name in sorted(MODELS):
        model = registered_model(name)
        with explain.make_explainer(model, p, NORM, SHAPE) as ex:
            a = ex(x, torch.tensor([0, 1, 4]))
        assert a.shape[0] == 3 and a.shape[2:] == (32, 32), (name, a.shape)
        assert torch.isfinite(a).all(), name


# --- other methods against their definitions ---------------------------------------------


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 3)).double().eval()


def method(model: nn.Module, x: Tensor, t: Tensor, **kw: object) -> Tensor:
    p = explain.ExplainParams(**kw)  # type: ignore[arg-type]
    with explain.make_explainer(model, p, NORM, tuple(x.shape[1:])) as ex:
        return ex(x, t)


def test_saliency_smoothgrad_and_integrated_gradients() -> None:
    model = mlp()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    t = torch.tensor([0, 2, 1, 1])
    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(xg).gather(1, t[:, None]).sum(), xg)
    torch.testing.assert_close(method(model, x, t, method="saliency"), grad)
    # without noise, SmoothGrad is the gradient
    torch.testing.assert_close(
        method(model, x, t, method="smoothgrad", noise_level=0.0, n_iter=3), grad
    )
    noisy = method(model, x, t, method="smoothgrad", noise_level=0.2, n_iter=5)
    assert not torch.allclose(noisy, grad)
    # completeness is exact for an affine model: sum of attributions = f(x) - f(baseline)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double().eval()
    for baseline in ("black", "mean"):
        ig = method(linear, x, t, method="integrated_gradients", baseline=baseline, n_iter=4)
        base = torch.zeros_like(x) if baseline == "mean" else NORM.bounds()[0].to(x).expand_as(x)
        gap = (linear(x) - linear(base)).gather(1, t[:, None])[:, 0]
        torch.testing.assert_close(ig.sum((1, 2, 3)), gap.detach())


def test_guided_backprop_and_deconvnet_follow_their_definitions() -> None:
    model = mlp(1)
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0, 1])
    w1, b1, w2 = model[1].weight, model[1].bias, model[3].weight
    top = w2[t]  # (n, 7): gradient arriving at the ReLU output
    forward_mask = (x.flatten(1) @ w1.T + b1 > 0).double()
    guided = ((top > 0) * forward_mask * top) @ w1
    deconv = top.clamp(min=0) @ w1
    gb = method(model, x, t, method="guided_backprop")
    dc = method(model, x, t, method="deconvnet")
    torch.testing.assert_close(gb.flatten(1), guided.detach())
    torch.testing.assert_close(dc.flatten(1), deconv.detach())


def test_gradcam_follows_its_definition() -> None:
    model = registered_model("net")
    layer = explain.find_layer(model, "auto")
    assert isinstance(layer, nn.Conv2d) and layer is [m for m in model.modules()
                                                       if isinstance(m, nn.Conv2d)][-1]  # fmt: skip
    x = NORM.to_tensor(extreme_images()[1:]) + 0.3 * torch.randn(2, *SHAPE)
    t = torch.tensor([3, 1])
    store: dict[str, Tensor] = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), store["a"])
    weights = grads.mean((2, 3), keepdim=True)
    cam = torch.relu((weights * store["a"]).sum(1, keepdim=True))
    want = nn.functional.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)
    got = method(model, x, t, method="gradcam", gradcam_layer="auto")
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="the model has no layer 'features.99'"):
        explain.find_layer(model, "features.99")


# --- post-processing ---------------------------------------------------------------------


def test_channel_reductions_and_normalizations() -> None:
    a = np.array([[[[1.0, -2.0], [0.5, 0.0]], [[-1.0, 1.0], [0.5, 3.0]]]])  # (1, 2, 2, 2)
    np.testing.assert_allclose(explain.REDUCTIONS["sum"](a)[0], [[0.0, -1.0], [1.0, 3.0]])
    np.testing.assert_allclose(explain.REDUCTIONS["positive"](a)[0], [[1.0, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(explain.REDUCTIONS["abs"](a)[0], [[2.0, 3.0], [1.0, 3.0]])
    h = np.array([[[-1.0, 0.0], [1.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    minmax = explain.normalize_heatmaps(h, "minmax_mass")
    np.testing.assert_allclose(minmax[0], np.array([[0, 1], [2, 3]]) / 6, rtol=1e-6)
    positive = explain.normalize_heatmaps(h, "positive_mass")
    np.testing.assert_allclose(positive[0], np.array([[0, 0], [1, 2]]) / 3, rtol=1e-6)
    np.testing.assert_array_equal(explain.normalize_heatmaps(h, "none"), h.astype(np.float32))
    # an all-zero heatmap stays zero instead of turning into NaN
    assert np.all(minmax[1] == 0) and np.all(positive[1] == 0)
    with pytest.raises(ValueError, match="unknown heatmap normalization 'l2'"):
        explain.normalize_heatmaps(h, "l2")
    with pytest.raises(ValueError, match="unknown channel reduction 'max'"):
        explain.to_heatmaps(a, "max")


def test_sum_pooling_keeps_the_mass() -> None:
    rng = np.random.default_rng(0)
    h = rng.random((3, 8, 8))
    pooled = explain.sum_pool(h, 4)
    assert pooled.shape == (3, 2, 2)
    np.testing.assert_allclose(pooled[1, 0, 1], h[1, :4, 4:].sum())
    np.testing.assert_allclose(pooled.sum((1, 2)), h.sum((1, 2)))
    assert explain.sum_pool(h, 1) is h
    with pytest.raises(ValueError, match="pool factor 3 must be >= 1 and divide"):
        explain.sum_pool(h, 3)
    a = rng.normal(size=(2, 3, 8, 8))
    out = explain.to_heatmaps(a, "abs", "positive_mass", pool=2)
    assert out.shape == (2, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum((1, 2)), 1.0, rtol=1e-5)
