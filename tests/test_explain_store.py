"""Tests for explanation stores: explain_classes, the explain step, the montage, readers."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from conftest import random_dataset
from PIL import Image
from torch import nn

from poisonscan import checkpoints, explain, storage
from poisonscan.inference import Normalization
from poisonscan.models import build_model
from poisonscan.steps.distances import distances_euclidean
from poisonscan.steps.explain import explain_target
from poisonscan.storage import ProvenanceError, StoreError, read_sidecar, write_dataset

NORM = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
PARAMS = {"method": "lrp", "composite": "epsilon_plus", "normalization": "positive_mass",
          "batch_size": 4}  # fmt: skip


@functools.cache
def small_net() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("net", n_classes=4)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32))
    return model.eval()


def training_set(n: int = 11, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 2, 2, 1, 2, 0, 2, 2, 1, 2, 2])[:n]  # class 3 has no images
    poison = np.zeros(n, bool)
    poison[[2, 6]] = True
    return images, labels, poison


def test_store_has_one_group_per_class_written_in_whole_chunks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images, labels, poison = training_set()
    out = tmp_path / "explain.zarr"
    with caplog.at_level(logging.INFO, logger="poisonscan"):
        explain.explain_classes(small_net(), NORM, images, labels, poison, out, PARAMS,
                                target_class=2, attrs={"model_sha256": "abc"})  # fmt: skip
    assert explain.store_classes(out) == [0, 1, 2, 3]  # "all" by default, empty class too
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["target_class"] == 2 and root.attrs["method"] == "lrp"
    assert explain.class_group_path(out) == str(out / "2")
    for cls in range(4):
        ex = explain.read_explanations(out, cls)
        idx = np.flatnonzero(labels == cls)
        assert np.array_equal(ex["index"], idx) and np.all(ex["label"] == cls)
        assert np.array_equal(ex["poison"], poison[idx])
        assert ex["heatmaps"].shape == (len(idx), 32, 32) and ex["heatmaps"].dtype == np.float32
        assert ex["activations"].shape == (len(idx), 128)
        mass = ex["heatmaps"].sum(axis=(1, 2))
        assert np.all(np.isclose(mass, 1.0, rtol=1e-4) | (mass == 0))
        group = zarr.open_group(explain.class_group_path(out, cls), mode="r")
        assert group["heatmaps"].chunks == (4, 32, 32) and group["activations"].chunks == (4, 128)
        attrs = explain.store_attrs(out, cls)
        assert attrs["class"] == cls and attrs["composite"] == "epsilon_plus"
        assert attrs["model_sha256"] == "abc" and attrs["normalization"] == "positive_mass"
    target = explain.read_explanations(out)  # default: the target class
    assert np.sum(target["heatmaps"].sum(axis=(1, 2)) > 0) >= 4
    # the same heatmaps as explaining the images directly
    idx = np.flatnonzero(labels == 2)
    p = explain.ExplainParams.from_config(PARAMS)
    with explain.make_explainer(small_net(), p, NORM, (3, 32, 32)) as ex:
        raw = ex(NORM.to_tensor(images[idx]), torch.full((len(idx),), 2)).double().numpy()
    np.testing.assert_allclose(target["heatmaps"], explain.to_heatmaps(raw), atol=1e-6)
    assert "11/11 images" in caplog.text and "images/s" in caplog.text
    assert [q.name for q in tmp_path.iterdir()] == ["explain.zarr"]  # no temporaries left
    with pytest.raises(
        ValueError, match=r"has no group for class 7; it has classes \[0, 1, 2, 3\]"
    ):
        explain.class_group_path(out, 7)


def test_class_selection_relevance_of_prediction_and_pooling(tmp_path: Path) -> None:
    images, labels, poison = training_set()
    model = small_net()
    params = {**PARAMS, "classes": [1], "relevance_of": "prediction", "pool": 4,
              "method": "gradcam", "normalization": "none"}  # fmt: skip
    out = tmp_path / "explain.zarr"
    explain.explain_classes(model, NORM, images, labels, poison, out, params, target_class=0)
    assert explain.store_classes(out) == [0, 1]
    ex = explain.read_explanations(out, 1)
    assert ex["heatmaps"].shape == (2, 8, 8)
    x = NORM.to_tensor(images[labels == 1])
    preds = model(x).argmax(1)
    assert np.array_equal(ex["prediction"], preds.numpy())
    p = explain.ExplainParams.from_config(params)
    with explain.make_explainer(model, p, NORM, (3, 32, 32)) as explainer:
        want = explain.to_heatmaps(explainer(x, preds).double().numpy(), "sum", "none", pool=4)
    np.testing.assert_allclose(ex["heatmaps"], want, rtol=1e-5, atol=1e-7)
    assert explain.store_attrs(out, 1)["composite"] is None  # not an LRP store
    only = tmp_path / "target.zarr"
    explain.explain_classes(model, NORM, images, labels, poison, only, {**PARAMS,
                            "classes": "target"}, target_class=1)  # fmt: skip
    assert explain.store_classes(only) == [1]


def test_failures_leave_no_store(tmp_path: Path) -> None:
    images, labels, poison = training_set()
    out = tmp_path / "explain.zarr"
    for bad, match in [({"classes": [9]}, r"class ids \[9\]"),
                       ({"gradcam_layer": "nope", "method": "gradcam"}, "no layer 'nope'"),
                       ({"pool": 3}, "pool factor 3")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            explain.explain_classes(small_net(), NORM, images, labels, poison, out,
                                    {**PARAMS, **bad})  # fmt: skip
    broken = build_model("net", n_classes=4).eval()
    with torch.no_grad():
        broken.head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite attribution"):
        explain.explain_classes(broken, NORM, images, labels, poison, out, PARAMS)
    assert list(tmp_path.iterdir()) == []


def test_explain_step_montage_and_the_readers_of_the_target_group(tmp_path: Path) -> None:
    ds = random_dataset(n_classes=3, n_train=6, n_test=2)
    ds.extra["poison_mask"] = np.zeros(len(ds.y_train), bool)
    ds.extra["poison_mask"][np.flatnonzero(ds.y_train == 1)[:2]] = True
    write_dataset(tmp_path / "poisoned.h5", ds)
    torch.manual_seed(0)
    model = build_model("net", n_classes=3).eval()
    sha = storage.file_sha256(tmp_path / "poisoned.h5")
    checkpoints.save_checkpoint(tmp_path / "model.safetensors", model, "net", ds, NORM,
                             {"dataset_sha256": sha})  # fmt: skip
    out, png = tmp_path / "explain.zarr", tmp_path / "montage.png"
    explain_target(tmp_path / "poisoned.h5", tmp_path / "model.safetensors", out,
                         {"target": 1}, {**PARAMS, "classes": "target"}, montage=png)  # fmt: skip
    assert explain.store_classes(out) == [1]
    assert len(explain.store_attrs(out)["model_sha256"]) == 64
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 400
    # the distance step reads the target class group
    distances_euclidean(explain.class_group_path(out), tmp_path / "l2.zarr")
    d = zarr.open_group(str(tmp_path / "l2.zarr"), mode="r")["distances"][...]
    hm = explain.read_explanations(out)["heatmaps"].reshape(6, -1).astype(np.float64)
    assert d.shape == (6, 6)
    np.testing.assert_allclose(d[0, 1], np.linalg.norm(hm[0] - hm[1]), rtol=1e-5)


def test_a_damaged_store_is_refused_naming_the_store(tmp_path: Path) -> None:
    images, labels, poison = training_set()
    out = tmp_path / "explain.zarr"
    explain.explain_classes(small_net(), NORM, images, labels, poison, out, PARAMS, target_class=2)
    # all-False poison chunks are written too, so a lost chunk cannot pass for "clean"
    chunks = sorted((out / "2" / "poison").rglob("c/*"))
    assert chunks and all(c.is_file() for c in chunks)
    chunks[0].unlink()
    with pytest.raises(StoreError, match=r"explain.zarr: array 2/poison, chunk \(0,\): missing"):
        explain.read_explanations(out, 2)
    heat = sorted(p for p in (out / "2" / "heatmaps").rglob("*") if p.is_file() and
                  p.name != "zarr.json")  # fmt: skip
    heat[0].write_bytes(b"\x00garbage")
    with pytest.raises(StoreError, match=r"array 2/heatmaps, chunk \(0, 0, 0\): not the chunk"):
        distances_euclidean(out / "2", tmp_path / "l2.zarr")
    assert not (tmp_path / "l2.zarr").exists()


def test_readers_compare_the_recorded_model_and_heatmaps(tmp_path: Path) -> None:
    images, labels, poison = training_set()
    ds = random_dataset(n_classes=4, n_train=3, n_test=1)
    checkpoints.save_checkpoint(tmp_path / "m.safetensors", small_net(), "net", ds, NORM)
    sidecar = tmp_path / "m.safetensors.json"
    weights = read_sidecar(sidecar)["weights_sha256"]
    out = tmp_path / "explain.zarr"
    explain.explain_classes(small_net(), NORM, images, labels, poison, out, PARAMS,
                            target_class=2, attrs={"model_sha256": weights})  # fmt: skip
    explain.check_model(out / "2", sidecar)
    distances_euclidean(out / "2", tmp_path / "l2.zarr", sidecar=sidecar)
    explain.check_heatmaps(tmp_path / "l2.zarr", out / "2")
    # another model's store: refused, naming the store and the sidecar
    other = tmp_path / "other.zarr"
    explain.explain_classes(small_net(), NORM, images, labels, poison, other, PARAMS,
                            target_class=2, attrs={"model_sha256": "f" * 64})  # fmt: skip
    with pytest.raises(ProvenanceError, match=r"other.zarr was computed with another checkpoint "
                       r"than the one of .*m.safetensors.json") as err:  # fmt: skip
        distances_euclidean(other / "2", tmp_path / "l2b.zarr", sidecar=sidecar)
    assert err.value.path == str(sidecar)  # the upstream output: recomputing it redoes both
    # heatmaps of another explanation (other composite) than the distances were computed from
    swapped = tmp_path / "swapped.zarr"
    explain.explain_classes(small_net(), NORM, images, labels, poison, swapped,
                            {**PARAMS, "composite": "epsilon"}, target_class=2,
                            attrs={"model_sha256": weights})  # fmt: skip
    with pytest.raises(ProvenanceError, match=r"l2.zarr was computed from other heatmaps than "
                       r"those of .*swapped.zarr/2") as err:  # fmt: skip
        explain.check_heatmaps(tmp_path / "l2.zarr", swapped / "2")
    assert err.value.path == str(swapped)
