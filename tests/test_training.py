from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import random_dataset

from poisonscan import training


@pytest.fixture(scope="module")
def trained() -> tuple[training.TrainResult, object]:
    data = random_dataset(n_classes=3, n_train=40, n_test=15)
    params = training.TrainParams(epochs=3, batch_size=16, learning_rate=3e-3, seed=1)
    return training.train_model(data, "net", params, training.select_device()), data


def test_training_learns_and_logs_history(trained) -> None:
    result, data = trained
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    pred = training.predict(result.model, result.normalization, data.x_test)
    assert pred.shape == (45,) and pred.dtype == np.int64
    assert np.mean(pred == data.y_test) > 0.6  # tinted noise is easy


def test_training_is_deterministic_on_cpu() -> None:
    data = random_dataset(n_classes=2, n_train=12, n_test=4)
    params = training.TrainParams(epochs=1, batch_size=8, seed=5)
    cpu = training.torch.device("cpu")
    a = training.train_model(data, "net", params, cpu).model.state_dict()
    b = training.train_model(data, "net", params, cpu).model.state_dict()
    assert all(training.torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip(trained, tmp_path: Path) -> None:
    result, data = trained
    path = tmp_path / "m.safetensors"
    training.save_checkpoint(path, result.model, "net", data, result.normalization)
    model, norm, meta = training.load_checkpoint(path)
    assert meta["architecture"] == "net" and meta["n_classes"] == 3
    assert len(meta["weights_sha256"]) == 64
    assert norm == result.normalization
    a = training.predict(result.model, result.normalization, data.x_test)
    b = training.predict(model, norm, data.x_test)
    assert np.array_equal(a, b)


def test_checkpoint_refuses_pickles_and_wrong_architecture(trained, tmp_path: Path) -> None:
    result, data = trained
    path = tmp_path / "m.safetensors"
    training.save_checkpoint(path, result.model, "net", data, result.normalization)
    sidecar = Path(f"{path}.json")
    # a pickle that would run code when unpickled is refused, never executed
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"x": 1}))
    Path(f"{evil}.json").write_text(sidecar.read_text())
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        training.load_checkpoint(evil)
    # same file, sidecar claiming a different class count -> weights do not fit
    other = tmp_path / "other.safetensors"
    other.write_bytes(path.read_bytes())
    Path(f"{other}.json").write_text(
        sidecar.read_text().replace('"n_classes": 3', '"n_classes": 5')
    )
    with pytest.raises(ValueError, match="does not hold weights of architecture 'net'"):
        training.load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        training.load_checkpoint(tmp_path / "missing.safetensors")


def test_attack_success_rate_and_params() -> None:
    assert training.attack_success_rate(np.array([5, 5, 1, 5]), 5) == 0.75
    assert np.isnan(training.attack_success_rate(np.array([], dtype=int), 5))
    with pytest.raises(ValueError, match="momentum"):
        training.TrainParams.from_config({"epochs": 2, "momentum": 0.9})


def test_random_shift_moves_whole_pixels_and_replicates_borders() -> None:
    torch = training.torch
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
    mean, per_class = training.attack_success_rates(pred, orig, 5)
    assert per_class == {"1": 2 / 3, "2": 2 / 3}
    assert mean == 2 / 3
    mean, per_class = training.attack_success_rates(np.array([5]), np.array([5]), 5)
    assert per_class == {} and np.isnan(mean)
