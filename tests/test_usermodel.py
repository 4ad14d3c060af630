"""Bring your own model (poisonscan.usermodel, .modelfile): loading, checks, the import step."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import random_dataset
from safetensors.torch import save_file
from torch import nn

from poisonscan.checkpoints import load_checkpoint
from poisonscan.modelfile import (
    SAFETENSORS,
    TORCHSCRIPT,
    ModelFileError,
    check_model_config,
    model_format,
)
from poisonscan.models import build_model
from poisonscan.storage import StoreError, write_dataset
from poisonscan.usermodel import ScriptedClassifier, load_user_model

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def section(file: Path, name: str = "net") -> dict[str, Any]:
    return {"name": name, "file": str(file), "input_size": None, "normalization": NORM}


def safetensors_model(path: Path, n_classes: int, name: str = "net", size: int = 32) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, n_classes, size).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def scripted_model(path: Path, n_classes: int) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("net", n_classes, 32).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        torch.jit.trace(model, torch.zeros(1, 3, 32, 32)).save(str(path))
    return model


class Residual(nn.Module):
    """A classifier whose children do not chain to its output (a skip connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3 * 32 * 32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((x + self.conv(x)).flatten(1))


def test_formats_are_told_apart_by_content(tmp_path: Path) -> None:
    safetensors_model(tmp_path / "a.bin", 3)
    scripted_model(tmp_path / "b.safetensors", 3)
    (tmp_path / "c.pt").write_text("not a model")
    assert model_format(tmp_path / "a.bin") == SAFETENSORS
    assert model_format(tmp_path / "b.safetensors") == TORCHSCRIPT
    with pytest.raises(ModelFileError, match=r"c.pt is neither a safetensors checkpoint nor a "
                       r"TorchScript file"):  # fmt: skip
        model_format(tmp_path / "c.pt")
    with pytest.raises(ModelFileError, match=r"model file .*nope.pt does not exist"):
        model_format(tmp_path / "nope.pt")


def test_a_checkpoint_of_another_class_count_is_refused_naming_both_numbers(tmp_path: Path) -> None:
    safetensors_model(tmp_path / "m.safetensors", 5)
    with pytest.raises(ModelFileError, match=r"m.safetensors: the model outputs 5 classes, the "
                       r"dataset has 3"):  # fmt: skip
        load_user_model(section(tmp_path / "m.safetensors"), 3, 32)
    scripted_model(tmp_path / "m.pt", 5)
    with pytest.raises(ModelFileError, match=r"m.pt: the model outputs 5 classes, the dataset "
                       r"has 3"):  # fmt: skip
        load_user_model(section(tmp_path / "m.pt"), 3, 32)


def test_weights_of_another_architecture_or_size_are_refused(tmp_path: Path) -> None:
    safetensors_model(tmp_path / "vgg.safetensors", 3, name="vgg")
    with pytest.raises(ModelFileError, match=r"does not hold weights of architecture 'net' "
                       r"\(model.name\) for 32x32 images \(missing: "):  # fmt: skip
        load_user_model(section(tmp_path / "vgg.safetensors"), 3, 32)
    safetensors_model(tmp_path / "net64.safetensors", 3, size=64)
    with pytest.raises(ModelFileError, match=r"for 32x32 images \(other shapes: "):
        load_user_model(section(tmp_path / "net64.safetensors"), 3, 32)


def test_safetensors_model_loads_with_its_declared_normalization(tmp_path: Path) -> None:
    ref = safetensors_model(tmp_path / "m.safetensors", 3)
    user = load_user_model(section(tmp_path / "m.safetensors"), 3, 32)
    assert user.format == SAFETENSORS and user.architecture == "net"
    assert user.normalization.mean == (0.5, 0.5, 0.5) and user.normalization.std[0] == 0.25
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(user.module(x), ref(x))
    assert user.provenance()["origin"] == "user" and len(user.sha256) == 64


def test_torchscript_penultimate_is_the_input_of_its_last_layer(tmp_path: Path) -> None:
    from poisonscan.explain.run import layer_outputs

    ref = scripted_model(tmp_path / "m.pt", 4)
    user = load_user_model(section(tmp_path / "m.pt"), 4, 32)
    assert isinstance(user.module, ScriptedClassifier) and user.activations == "penultimate"
    x = torch.randn(3, 3, 32, 32)
    act, logits = layer_outputs(user.module, user.module.penultimate, x)
    ref_act, ref_logits = layer_outputs(ref, ref.penultimate, x)
    assert torch.allclose(act, ref_act, atol=1e-5) and torch.allclose(logits, ref_logits, atol=1e-5)
    # a model whose children do not chain: activations are its logits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(Residual().eval(), torch.zeros(1, 3, 32, 32)).save(str(tmp_path / "r.pt"))
    residual = load_user_model(section(tmp_path / "r.pt"), 4, 32)
    assert residual.activations == "logits"
    act, logits = layer_outputs(residual.module, residual.module.penultimate, x)
    assert torch.equal(act, logits)


@pytest.mark.parametrize("fmt", [SAFETENSORS, TORCHSCRIPT])
def test_import_step_writes_what_train_writes(tmp_path: Path, fmt: str) -> None:
    from poisonscan.steps.train import import_model

    data = random_dataset(n_classes=3, n_train=8, n_test=4)
    write_dataset(tmp_path / "poisoned.h5", data)
    file = tmp_path / ("m.safetensors" if fmt == SAFETENSORS else "m.pt")
    ref = (safetensors_model if fmt == SAFETENSORS else scripted_model)(file, 3)
    out = tmp_path / "results"
    program = out / "model.torchscript.pt" if fmt == TORCHSCRIPT else None
    import_model(tmp_path / "poisoned.h5", out / "model.safetensors", out / "metrics.json",
                 section(file), program=program)  # fmt: skip
    model, norm, meta = load_checkpoint(out / "model.safetensors", device=torch.device("cpu"))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(x), ref(x), atol=1e-5)
    assert meta["origin"] == "user" and meta["user_model"]["format"] == fmt
    assert meta["architecture"] == ("net" if fmt == SAFETENSORS else TORCHSCRIPT)
    assert norm.mean == (0.5, 0.5, 0.5) and meta["n_classes"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["clean_acc"] <= 1.0 and metrics["epochs"] == 0
    assert np.isnan(metrics["asr"])  # no attack, no attack success rate
    if program is not None:  # the program beside the weights is checked
        program.write_bytes(program.read_bytes()[:-10] + b"0123456789")
        with pytest.raises(StoreError, match="does not match the torchscript_sha256"):
            load_checkpoint(out / "model.safetensors", device=torch.device("cpu"))


def test_config_checks_of_the_model_file(tmp_path: Path) -> None:
    scripted_model(tmp_path / "m.pt", 3)
    cfg = {
        "model": section(tmp_path / "m.pt"),
        "dataset": {"image_size": 32},
        "explain": {"method": "lrp", "activation_layer": "penultimate"},
    }
    with pytest.raises(ModelFileError, match=r"config key 'explain.method': 'lrp' cannot explain "
                       r"the TorchScript model .* use one of saliency, smoothgrad"):  # fmt: skip
        check_model_config(cfg)
    cfg["explain"]["method"] = "saliency"
    assert check_model_config(cfg) == TORCHSCRIPT
    cfg["model"]["input_size"] = 64
    with pytest.raises(ModelFileError, match=r"model.input_size': 64 differs from "
                       r"dataset.image_size 32"):  # fmt: skip
        check_model_config(cfg)
    cfg["model"]["file"] = str(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match=r"config key 'model.file': model file .* does not "
                       r"exist"):  # fmt: skip
        check_model_config(cfg)
    cfg["model"]["file"] = None
    assert check_model_config(cfg) is None
