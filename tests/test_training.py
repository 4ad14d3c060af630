from __future__ import annotations

import csv
import itertools
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_dataset

from poisonscan import checkpoints, inference, storage, training
from poisonscan.models import build_model
from poisonscan.steps.train import train
from poisonscan.storage import ProvenanceError, StoreError, write_dataset

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained() -> tuple[training.TrainResult, object]:
    data = random_dataset(n_classes=3, n_train=40, n_test=15)
    params = training.TrainParams(
        epochs=3, batch_size=16, learning_rate=3e-3, seed=1, validation_fraction=0.2
    )
    return training.train_model(data, "net", params, CPU), data


def test_training_learns_and_logs_history(trained) -> None:
    result, data = trained
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert set(result.history[0]) == {
        "epoch",
        "loss",
        "train_acc",
        "val_acc",
        "val_loss",
        "lr",
        "seconds",
    }
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert (result.n_train, result.n_val) == (96, 24)
    assert 1 <= result.best_epoch <= 3 and not result.stopped_early
    pred = inference.predict(result.model, result.normalization, data.x_test)
    assert pred.shape == (45,) and pred.dtype == np.int64
    assert np.mean(pred == data.y_test) > 0.6  # chance is 1/3; tinted noise is easy
    assert not result.model.training


def test_training_is_deterministic_on_cpu_with_every_augmentation() -> None:
    data = random_dataset(n_classes=2, n_train=12, n_test=4)
    params = training.TrainParams(
        epochs=2, batch_size=8, seed=5, augment=tuple(training.AUGMENTATIONS), shift=2,
        validation_fraction=0.25,
    )  # fmt: skip
    a = training.train_model(data, "net", params, CPU).model.state_dict()
    b = training.train_model(data, "net", params, CPU).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = training.TrainParams(**{**params.__dict__, "seed": 6})
    c = training.train_model(data, "net", other, CPU).model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_augmenting_in_worker_processes_is_deterministic() -> None:
    data = random_dataset(n_classes=2, n_train=8, n_test=2)
    params = training.TrainParams(
        epochs=1, batch_size=4, augment=("rotation", "color_jitter"), validation_fraction=0.0
    )
    runs = [training.train_model(data, "net", params, CPU, workers=1) for _ in range(2)]
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("model", "optimizer"), [("inception3", "sgd"), ("vgg", "adamw")])
def test_every_model_and_optimizer_trains_an_epoch(model: str, optimizer: str) -> None:
    data = random_dataset(n_classes=2, n_train=6, n_test=2)
    params = training.TrainParams(
        epochs=1, batch_size=6, optimizer=optimizer, learning_rate=0.01, schedule="step",
        augment=("resized_crop", "grayscale"), validation_fraction=0.0,
    )  # fmt: skip
    result = training.train_model(data, model, params, CPU)
    assert np.isfinite(result.history[0]["loss"]) and result.best_epoch == 1
    assert inference.predict(result.model, result.normalization, data.x_test).shape == (4,)


def test_early_stopping_stops_and_restores_the_best_epoch(monkeypatch) -> None:
    data = random_dataset(n_classes=2, n_train=10, n_test=2)
    # (validation accuracy, loss) per epoch; epoch 3 ties epoch 2 at a lower loss
    scripted = iter([(0.5, 1.0), (1.0, 0.3), (1.0, 0.2), (0.5, 0.1), (1.0, 0.25), (1.0, 0.0)])
    snapshots: list[dict[str, torch.Tensor]] = []
    params = training.TrainParams(epochs=8, batch_size=4, patience=2, validation_fraction=0.2)
    val_idx = training.validation_split(data, 0.2, params.seed)[1]

    def fake_evaluate(model, norm, images, labels, device=None) -> tuple[float, float]:
        assert np.array_equal(labels, data.y_train[val_idx]) and len(images) == 4
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(training, "evaluate", fake_evaluate)
    result = training.train_model(data, "net", params, CPU)
    assert [r["val_acc"] for r in result.history] == [0.5, 1.0, 1.0, 0.5, 1.0]
    assert result.stopped_early and result.best_epoch == 3 and len(snapshots) == 5
    final = result.model.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[4][k]) for k in final)
    # patience 0: never stop early, still restore the best epoch
    scripted = iter([(0.5, 1.0), (1.0, 0.3), (0.5, 0.1), (0.5, 0.1)])
    snapshots.clear()
    params = training.TrainParams(epochs=4, batch_size=4, patience=0, validation_fraction=0.2)
    result = training.train_model(data, "net", params, CPU)
    assert len(result.history) == 4 and result.best_epoch == 2 and not result.stopped_early
    final = result.model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)


def test_without_validation_all_epochs_run_and_the_last_is_kept() -> None:
    data = random_dataset(n_classes=2, n_train=6, n_test=2)
    params = training.TrainParams(epochs=2, batch_size=4, validation_fraction=0.0, patience=1)
    result = training.train_model(data, "net", params, CPU)
    assert len(result.history) == 2 and result.best_epoch == 2 and result.n_val == 0
    assert all(np.isnan(r["val_acc"]) and np.isnan(r["val_loss"]) for r in result.history)


def test_validation_split_keeps_tracks_whole_and_is_stratified_otherwise() -> None:
    data = random_dataset(n_classes=3, n_train=60, n_test=1)
    rng = np.random.default_rng(0)
    # tracks of 1..9 frames within each class, in image order
    tracks = np.concatenate([
        c * 100_000 + np.repeat(np.arange(60), rng.integers(1, 10, 60))[:60]
        for c in range(3)
    ])  # fmt: skip
    data.extra["group_train"] = tracks
    train, val = training.validation_split(data, 0.2, seed=3)
    assert np.intersect1d(tracks[train], tracks[val]).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(180))
    assert 0.1 < len(val) / 180 < 0.3
    data.extra["group_train"] = tracks[:-1]
    with pytest.raises(ValueError, match="179 group ids for 180 training images"):
        training.validation_split(data, 0.2, seed=3)
    del data.extra["group_train"]
    train, val = training.validation_split(data, 0.2, seed=3)
    assert len(val) == 36 and np.bincount(data.y_train[val]).tolist() == [12, 12, 12]
    assert np.intersect1d(train, val).size == 0 and len(train) == 144
    again = training.validation_split(data, 0.2, seed=3)[1]
    assert np.array_equal(val, again)
    assert not np.array_equal(val, training.validation_split(data, 0.2, seed=4)[1])
    assert training.validation_split(data, 0.0, seed=3)[1].size == 0
    tiny = random_dataset(n_classes=4, n_train=2, n_test=1)  # 8 images: 1 for validation
    train, val = training.validation_split(tiny, 0.1, seed=0)
    assert len(val) == 1 and len(train) == 7 and np.intersect1d(train, val).size == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"schedule": "linear"}, "unknown schedule 'linear'"),
        ({"augment": ["rotation", "mixup"]}, "unknown augmentation 'mixup'"),
        ({"patience": -1}, "patience = -1"),
        ({"validation_fraction": 1.0}, r"validation_fraction must lie in \[0, 1\), got 1.0"),
        ({"validation_fraction": -0.1}, r"got -0.1"),
        ({"batch_size": 1}, "batch_size = 1"),
        ({"nesterov": True}, "unknown training parameter\\(s\\) \\['nesterov'\\]"),
    ],
)
def test_bad_training_parameters_are_named(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        training.TrainParams.from_config({"epochs": 2, **override})


def test_unknown_model_is_named() -> None:
    data = random_dataset(n_classes=2, n_train=4, n_test=1)
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        training.train_model(data, "resnet50", training.TrainParams(epochs=1), CPU)


def test_schedules_and_augmentations() -> None:
    assert training.SCHEDULES["cosine"](10)(0) == 1.0 and training.SCHEDULES["cosine"](10)(5) == 0.5
    step = training.SCHEDULES["step"](8)
    assert [round(step(e), 6) for e in (0, 3, 4, 5, 6, 7)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    assert training.make_augmentation([], 32) is None
    aug = training.make_augmentation(["grayscale", "resized_crop"], 32)
    assert [type(t).__name__ for t in aug.transforms] == ["RandomResizedCrop", "RandomGrayscale"]
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    y = training.make_augmentation(list(training.AUGMENTATIONS), 32)(x)
    assert y.shape == x.shape and y.dtype == torch.uint8 and not torch.equal(x, y)


def test_onecycle_hflip_and_label_smoothing() -> None:
    """CIFAR-10's recipe: one-cycle rate, horizontal flips (opt-in), label smoothing."""
    factors = [training.SCHEDULES["onecycle"](10)(e) for e in range(10)]
    np.testing.assert_allclose(factors[:4], [0.2, 0.6, 1.0, 13 / 15])
    assert all(a > b > 0 for a, b in itertools.pairwise(factors[2:]))
    flip = training.make_augmentation(["hflip"], 32)
    assert [type(t).__name__ for t in flip.transforms] == ["RandomHorizontalFlip"]
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    outs = [flip(x) for _ in range(20)]
    assert all(torch.equal(o, x) or torch.equal(o, x.flip(-1)) for o in outs)
    assert any(torch.equal(o, x.flip(-1)) for o in outs) and any(torch.equal(o, x) for o in outs)
    assert "hflip" not in training.TrainParams().augment  # traffic signs must not flip
    params = training.TrainParams(label_smoothing=0.1)
    norm = inference.Normalization((0.5,) * 3, (0.25,) * 3)
    step = training.TrainStep(build_model("net", 3), norm, params, CPU)
    assert step.loss_fn.label_smoothing == 0.1
    with pytest.raises(ValueError, match="label_smoothing = 1.0 is invalid"):
        training.TrainParams(label_smoothing=1.0)


def test_checkpoint_round_trip(trained, tmp_path: Path) -> None:
    result, data = trained
    path = tmp_path / "m.safetensors"
    checkpoints.save_checkpoint(path, result.model, "net", data, result.normalization)
    model, norm, meta = checkpoints.load_checkpoint(path)
    assert meta["architecture"] == "net" and meta["n_classes"] == 3
    assert len(meta["weights_sha256"]) == 64
    assert norm == result.normalization
    a = inference.predict(result.model, result.normalization, data.x_test)
    b = inference.predict(model, norm, data.x_test)
    assert np.array_equal(a, b)


class _Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_refuses_malicious_pickles_without_running_them(trained, tmp_path: Path) -> None:
    result, data = trained
    path = tmp_path / "m.safetensors"
    checkpoints.save_checkpoint(path, result.model, "net", data, result.normalization)
    sidecar = Path(f"{path}.json").read_text()
    marker = tmp_path / "pwned"
    # the payload works: plain unpickling would create the marker
    pickle.loads(pickle.dumps(_Evil(tmp_path / "control")))
    assert (tmp_path / "control").exists()
    evil_pickle = tmp_path / "evil.pkl"
    evil_pickle.write_bytes(pickle.dumps({"weight": _Evil(marker)}))
    evil_pt = tmp_path / "evil.pt"
    torch.save({"weight": _Evil(marker)}, evil_pt)  # torch's zip + pickle format
    for evil in (evil_pickle, evil_pt):
        Path(f"{evil}.json").write_text(sidecar)
        with pytest.raises(ValueError, match="is not a safetensors checkpoint"):
            checkpoints.load_checkpoint(evil)
    assert not marker.exists()


def test_checkpoint_refuses_tampered_and_misfitting_weights(trained, tmp_path: Path) -> None:
    result, data = trained
    path = tmp_path / "m.safetensors"
    checkpoints.save_checkpoint(path, result.model, "net", data, result.normalization)
    sidecar = Path(f"{path}.json").read_text()
    # other weights (a valid safetensors file) under the same sidecar
    other_model = build_model("net", 3)
    swapped = tmp_path / "swapped.safetensors"
    checkpoints.save_checkpoint(swapped, other_model, "net", data, result.normalization)
    Path(f"{swapped}.json").write_text(sidecar)
    with pytest.raises(ValueError, match="does not match the weights_sha256"):
        checkpoints.load_checkpoint(swapped)
    # same file, sidecar claiming a different class count -> weights do not fit
    other = tmp_path / "other.safetensors"
    other.write_bytes(path.read_bytes())
    Path(f"{other}.json").write_text(sidecar.replace('"n_classes": 3', '"n_classes": 5'))
    with pytest.raises(ValueError, match="does not hold weights of architecture 'net'"):
        checkpoints.load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        checkpoints.load_checkpoint(tmp_path / "missing.safetensors")


def test_checkpoint_sidecar_hashes_are_required_and_compared(trained, tmp_path: Path) -> None:
    result, data = trained
    path = tmp_path / "m.safetensors"
    dataset = tmp_path / "d.h5"
    write_dataset(dataset, data)
    extra = {"dataset_sha256": storage.file_sha256(dataset)}
    checkpoints.save_checkpoint(path, result.model, "net", data, result.normalization, extra)
    sidecar = Path(f"{path}.json")
    text = sidecar.read_text()
    checkpoints.load_checkpoint(path, CPU, dataset=dataset)
    other = tmp_path / "other.h5"
    write_dataset(other, random_dataset(n_classes=3, n_train=8, n_test=2, seed=5))
    with pytest.raises(ProvenanceError, match=r"other.h5 is not the dataset .* trained on") as err:
        checkpoints.load_checkpoint(path, CPU, dataset=other)
    assert err.value.path == str(other)
    sidecar.write_text(text[: len(text) // 2])  # truncated
    with pytest.raises(StoreError, match=r"sidecar .*m.safetensors.json is not valid JSON"):
        checkpoints.load_checkpoint(path, CPU)
    meta = json.loads(text)
    for key in ("weights_sha256", "dataset_sha256"):
        sidecar.write_text(json.dumps({k: v for k, v in meta.items() if k != key}))
        with pytest.raises(StoreError, match=rf"m.safetensors.json lacks \['{key}'\]"):
            checkpoints.load_checkpoint(path, CPU, dataset=dataset)


def test_train_step_writes_checkpoint_metrics_and_curves(tmp_path: Path) -> None:
    data = random_dataset(n_classes=6, n_train=10, n_test=3)
    data.meta["attack"] = {"target": 5}
    data.extra["x_test_triggered"] = data.x_test[:9]
    data.extra["y_test_triggered_original"] = data.y_test[:9]
    ds_path = tmp_path / "poisoned.h5"
    write_dataset(ds_path, data)
    params = {"epochs": 2, "batch_size": 16, "validation_fraction": 0.2, "patience": 5}
    out = {k: tmp_path / k for k in ("model.safetensors", "metrics.json", "curve.csv", "c.png")}
    train(
        ds_path, out["model.safetensors"], out["metrics.json"], {"name": "net"}, params,
        curve_csv=out["curve.csv"], curve_png=out["c.png"],
    )  # fmt: skip
    metrics = json.loads(out["metrics.json"].read_text())
    assert metrics["epochs"] == 2 and metrics["best_epoch"] in (1, 2)
    assert metrics["seconds_per_epoch"] == pytest.approx(metrics["seconds"] / 2)
    assert set(metrics["per_class_acc"]) == {str(c) for c in range(6)}
    assert set(metrics["asr_per_class"]) == {"0", "1", "2"}  # classes of the triggered images
    assert metrics["n_train"] + metrics["n_val"] == 60
    meta = json.loads(Path(f"{out['model.safetensors']}.json").read_text())
    assert meta["dataset_sha256"] == storage.file_sha256(ds_path)
    assert meta["training"] == params and meta["model"] == {"name": "net"}
    with open(out["curve.csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and float(rows[0]["loss"]) > 0
    assert out["c.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoints.load_checkpoint(out["model.safetensors"], CPU)


def test_attack_success_rate() -> None:
    assert inference.attack_success_rate(np.array([5, 5, 1, 5]), 5) == 0.75
    assert np.isnan(inference.attack_success_rate(np.array([], dtype=int), 5))


def test_random_shift_moves_whole_pixels_and_replicates_borders() -> None:
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    gen = torch.Generator().manual_seed(0)
    y = training.random_shift(x, 2, gen)
    for i in range(2):
        # every output pixel is an input pixel of the same image and channel (no blending)
        for c in range(3):
            assert set(y[i, c].flatten().tolist()) <= set(x[i, c].flatten().tolist())
        # interior differences are preserved: a pure translation
        dx = y[i, 0, 2:4, 2:4] - x[i, 0, 2:4, 2:4]
        assert torch.all(dx == dx[0, 0])
    assert torch.equal(training.random_shift(x, 0, gen), x)


def test_attack_success_rates_per_class_and_mean_ignore_the_target() -> None:
    pred = np.array([5, 5, 1, 5, 5, 0, 5])
    orig = np.array([1, 1, 1, 2, 2, 2, 5])
    mean, per_class = inference.attack_success_rates(pred, orig, 5)
    assert per_class == {"1": 2 / 3, "2": 2 / 3}
    assert mean == 2 / 3
    mean, per_class = inference.attack_success_rates(np.array([5]), np.array([5]), 5)
    assert per_class == {} and np.isnan(mean)


@pytest.mark.parametrize(
    ("augment", "workers"),
    [((), 0), (tuple(training.AUGMENTATIONS), 0), (("rotation", "color_jitter"), 1)],
)
def test_fast_loader_gives_the_reference_batches(augment: tuple[str, ...], workers: int) -> None:
    """Whole-batch fetching keeps the order, the labels and every augmented pixel."""
    data = random_dataset(n_classes=3, n_train=10, n_test=1)
    params = training.TrainParams(batch_size=7, augment=augment, seed=3)  # 30 = 4 x 7 + 2
    epochs = {}
    for fast in (False, True):
        torch.manual_seed(11)  # the augmentations draw from torch's global generator
        loader = training.make_loader(data.x_train, data.y_train, params, workers, fast=fast)
        epochs[fast] = [batch for _ in range(2) for batch in loader]
    assert len(epochs[True]) == len(epochs[False]) == 10
    for (x_ref, y_ref), (x, y) in zip(epochs[False], epochs[True], strict=True):
        assert x.dtype == x_ref.dtype == torch.uint8 and y.dtype == y_ref.dtype == torch.int64
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    assert not torch.equal(epochs[True][0][1], epochs[True][5][1])  # reshuffled per epoch


def test_fast_step_feeds_the_model_what_the_reference_step_does() -> None:
    """Same normalised, shifted inputs and labels; the same weights up to rounding."""
    data = random_dataset(n_classes=3, n_train=12, n_test=1)
    params = training.TrainParams(batch_size=8, optimizer="sgd", learning_rate=0.05, shift=2)
    norm = inference.Normalization.fit(data.x_train)
    runs = {}
    for fast in (False, True):
        torch.manual_seed(0)
        model = build_model("net", 3).train()
        seen: list[torch.Tensor] = []

        def record(_: object, args: tuple[torch.Tensor], seen: list = seen) -> None:
            seen.append(args[0].detach().clone())

        model.register_forward_pre_hook(record)
        step = training.TrainStep(model, norm, params, CPU, fast=fast)
        loader = training.make_loader(data.x_train, data.y_train, params, fast=fast)
        results = [step(xb, yb) for xb, yb in loader]
        runs[fast] = seen, results, model.state_dict()
    (seen_ref, results_ref, weights_ref), (seen, results, weights) = runs[False], runs[True]
    assert len(seen) == len(seen_ref) == 5
    assert all(torch.equal(a, b) for a, b in zip(seen, seen_ref, strict=True))
    assert [c for _, c in results] == [c for _, c in results_ref]
    losses, losses_ref = [r[0] for r in results], [r[0] for r in results_ref]
    assert losses == pytest.approx(losses_ref, rel=1e-4)
    for key, value in weights_ref.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5)


def test_fast_training_matches_the_reference_and_hands_back_a_plain_model() -> None:
    data = random_dataset(n_classes=3, n_train=12, n_test=1)
    params = training.TrainParams(
        epochs=2, batch_size=8, optimizer="sgd", learning_rate=0.05, validation_fraction=0.25
    )
    ref = training.train_model(data, "net", params, CPU, fast=False)
    fast = training.train_model(data, "net", params, CPU, fast=True)
    assert fast.best_epoch == ref.best_epoch and fast.n_train == ref.n_train
    for row, row_ref in zip(fast.history, ref.history, strict=True):
        assert row["train_acc"] == row_ref["train_acc"]
        assert row["loss"] == pytest.approx(row_ref["loss"], rel=1e-5)
    weights, weights_ref = fast.model.state_dict(), ref.model.state_dict()
    for key, value in weights_ref.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5)
    assert all(w.is_contiguous() for w in weights.values())  # channels_last while training


def test_fast_training_without_channels_last_is_bit_identical(monkeypatch) -> None:
    """The batched loader, on-device constants and per-epoch sums change no bit."""
    monkeypatch.setattr(training, "CHANNELS_LAST_ON_CPU", False)
    data = random_dataset(n_classes=3, n_train=12, n_test=1)
    params = training.TrainParams(epochs=2, batch_size=8, seed=2, validation_fraction=0.25)
    ref = training.train_model(data, "net", params, CPU, fast=False)
    fast = training.train_model(data, "net", params, CPU, fast=True)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in ref.history]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in fast.history] == strip
    weights, weights_ref = fast.model.state_dict(), ref.model.state_dict()
    assert all(torch.equal(weights[key], value) for key, value in weights_ref.items())
