from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from poisonscan import explain
from poisonscan.models import build_model
from poisonscan.training import Normalization

NORM = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@functools.cache
def trained_like_net(seed: int = 0) -> nn.Module:
    """A Net with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_model("net", n_classes=5)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("name", sorted(explain.COMPOSITES))
@pytest.mark.parametrize("fill", [0, 255, "saturated"])
def test_heatmaps_finite_on_extreme_images(name: str, fill: int | str) -> None:
    model = trained_like_net()
    if fill == "saturated":
        images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
        images[..., 0] = 255
        images[1, ::2] = 255
    else:
        images = np.full((2, 32, 32, 3), fill, dtype=np.uint8)
    composite = explain.make_composite(name, 1e-6, NORM, (3, 32, 32))
    rel = explain.lrp_heatmaps(model, composite, NORM.to_tensor(images), torch.tensor([1, 3]))
    assert rel.shape == (2, 32, 32)
    assert np.all(np.isfinite(rel))


def test_epsilon_rule_conserves_relevance_on_bias_free_network() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 4, bias=False),
    ).eval()
    x = torch.randn(3, 3, 8, 8)
    target = torch.tensor([0, 1, 2])
    composite = explain.make_composite("epsilon", 1e-9, NORM, (3, 8, 8))
    rel = explain.lrp_heatmaps(model, composite, x, target)
    # the explained output carries relevance 1 (one-hot start), all of which reaches the input
    np.testing.assert_allclose(rel.sum(axis=(1, 2)), 1.0, rtol=1e-4)


def test_composites_leave_the_model_unchanged() -> None:
    model = trained_like_net()
    x = torch.randn(4, 3, 32, 32)
    before = model(x).detach()
    composite = explain.make_composite("epsilon_plus", 1e-6, NORM, (3, 32, 32))
    explain.lrp_heatmaps(model, composite, x, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(model(x).detach(), before)
    with pytest.raises(ValueError, match="unknown LRP composite 'lrp_magic'"):
        explain.make_composite("lrp_magic", 1e-6, NORM, (3, 32, 32))


def test_normalizations() -> None:
    h = np.array([[[-1.0, 0.0], [1.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    minmax = explain.normalize_heatmaps(h, "minmax_mass")
    np.testing.assert_allclose(minmax[0], np.array([[0, 1], [2, 3]]) / 6, rtol=1e-6)
    positive = explain.normalize_heatmaps(h, "positive_mass")
    np.testing.assert_allclose(positive[0], np.array([[0, 0], [1, 2]]) / 3, rtol=1e-6)
    # an all-zero heatmap stays zero instead of turning into NaN
    assert np.all(minmax[1] == 0) and np.all(positive[1] == 0)
    with pytest.raises(ValueError, match="unknown heatmap normalization 'abs'"):
        explain.normalize_heatmaps(h, "abs")


def test_explain_class_writes_complete_store(tmp_path: Path) -> None:
    model = trained_like_net()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 32, 32, 3), dtype=np.uint8)
    labels = np.full(7, 2)
    index = np.arange(10, 17)
    poison = np.array([1, 0, 0, 1, 0, 0, 0], dtype=bool)
    out = tmp_path / "explain.zarr"
    params = {"composite": "epsilon_plus", "epsilon": 1e-6, "normalization": "positive_mass",
              "batch_size": 3}  # fmt: skip
    explain.explain_class(model, NORM, images, labels, index, poison, out, params, {"class": 2})
    store = explain.read_explanations(out)
    assert store["heatmaps"].shape == (7, 32, 32) and store["heatmaps"].dtype == np.float32
    mass = store["heatmaps"].sum(axis=(1, 2))
    # mass 1, or 0 where an untrained net gives a heatmap without positive relevance
    assert np.all(np.isclose(mass, 1.0, rtol=1e-4) | (mass == 0)) and np.sum(mass > 0) >= 4
    assert store["activations"].shape == (7, 128)
    assert np.array_equal(store["index"], index) and np.array_equal(store["poison"], poison)
    root = zarr.open_group(str(out), mode="r")
    assert root["heatmaps"].chunks == (3, 32, 32)
    assert root.attrs["composite"] == "epsilon_plus" and root.attrs["class"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["explain.zarr"]  # no temporaries left


def test_interrupted_explain_leaves_no_store(tmp_path: Path) -> None:
    model = trained_like_net()
    out = tmp_path / "explain.zarr"
    params = {"composite": "no_such", "epsilon": 1e-6, "normalization": "positive_mass",
              "batch_size": 3}  # fmt: skip
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        explain.explain_class(
            model, NORM, images, np.zeros(2, int), np.arange(2), np.zeros(2, bool), out, params
        )
    assert not out.exists() and list(tmp_path.iterdir()) == []
