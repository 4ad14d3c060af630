"""Label-consistent attack: PGD on a tiny proxy, projection, quantisation, triggers, steps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_dataset

from poisonscan import training
from poisonscan.attacks import (
    AttackParameterError,
    LabelConsistentAttack,
    Proxy,
    attack_from_config,
    checkerboard_pattern,
    parse_color,
    perturbation_norms,
    pgd_perturb,
    trigger_footprint,
)
from poisonscan.attacks.label_consistent import quantize_perturbation
from poisonscan.steps.data import poison_dataset
from poisonscan.steps.train import train_proxy
from poisonscan.storage import ImageDataset, read_dataset, write_dataset

SIZE = 16


@pytest.fixture(scope="module")
def clean() -> ImageDataset:
    return random_dataset(n_classes=4, n_train=30, n_test=8, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def proxy(clean: ImageDataset) -> Proxy:
    torch.set_num_threads(1)
    params = training.TrainParams(epochs=3, batch_size=16)
    result = training.train_model(clean, "net", params, torch.device("cpu"))
    return Proxy(result.model, result.normalization, {"n_classes": clean.n_classes})


def proxy_loss(proxy: Proxy, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = proxy.model(proxy.normalization.to_tensor(images))
        return torch.nn.functional.cross_entropy(
            logits, torch.as_tensor(labels), reduction="none"
        ).numpy()


@pytest.mark.parametrize(
    ("norm", "eps"), [("l2", 120.0), ("l2", 33.3), ("linf", 8.0), ("linf", 3.5)]
)
def test_pgd_stays_in_the_ball_and_increases_the_loss(
    proxy: Proxy, clean: ImageDataset, norm: str, eps: float
) -> None:
    x, y = clean.x_train[:20], clean.y_train[:20]
    adv = pgd_perturb(
        proxy.model, proxy.normalization, x, y, norm=norm, eps=eps, step_size=2.5 * eps / 5,
        steps=5, batch_size=7,
    )  # fmt: skip
    assert adv.dtype == np.uint8 and adv.shape == x.shape
    norms = perturbation_norms(adv, x, norm)
    assert np.all(norms <= eps)
    assert np.all(norms >= 0.9 * math.floor(eps))  # the budget is used, not wasted
    before, after = proxy_loss(proxy, x, y), proxy_loss(proxy, adv, y)
    assert after.mean() > before.mean()
    assert np.mean(after > before) >= 0.9


def test_pgd_l2_projects_the_perturbation_not_the_image(proxy: Proxy, clean: ImageDataset) -> None:
    # one huge step: the perturbation is scaled back onto the sphere of radius eps;
    # the image itself keeps its brightness (dividing the image by a norm would not)
    x, y = clean.x_train[:8], clean.y_train[:8]
    adv = pgd_perturb(
        proxy.model, proxy.normalization, x, y, norm="l2", eps=50.0, step_size=1e4, steps=1
    )
    norms = perturbation_norms(adv, x, "l2")
    assert np.all((norms <= 50.0) & (norms > 48.0))
    assert abs(adv.astype(float).mean() - x.astype(float).mean()) < 2.0


def test_pgd_restores_the_model_mode(proxy: Proxy, clean: ImageDataset) -> None:
    proxy.model.train()
    pgd_perturb(
        proxy.model, proxy.normalization, clean.x_train[:2], clean.y_train[:2], norm="linf",
        eps=2.0, step_size=1.0, steps=1,
    )  # fmt: skip
    assert proxy.model.training
    proxy.model.eval()


@pytest.mark.parametrize(
    ("norm", "eps"), [("l2", 40.0), ("l2", 7.25), ("linf", 2.5), ("linf", 4.0)]
)
def test_quantisation_keeps_range_and_ball(norm: str, eps: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 8, 8, 3)).astype(np.uint8)
    delta = rng.normal(0, 3, size=x.shape)
    flat = delta.reshape(6, -1)
    if norm == "l2":  # exactly on the sphere: nearest rounding alone would leave the ball
        flat *= eps / np.linalg.norm(flat, axis=1, keepdims=True)
    else:
        flat[:] = np.clip(flat, -eps, eps)
    delta = np.clip(x + delta, 0, 255) - x
    q = quantize_perturbation(x, delta, norm, eps)
    diff = q.astype(float) - x
    assert np.all(perturbation_norms(q, x, norm) <= eps)
    assert np.all(np.abs(diff - delta) < 1.0 + 1e-9)  # at most one grey level from the ideal
    if norm == "l2":  # most pixels are plainly rounded
        assert np.mean(q == np.clip(np.rint(x + delta), 0, 255)) > 0.9
    else:
        assert np.abs(diff).max() == math.floor(eps)


@pytest.mark.parametrize(
    ("trigger", "corners", "amplitude"),
    [("checkerboard", "bottom_right", 64), ("checkerboard", "all", 255),
     ("checkerboard", "bottom_right", 0), ("sticker", "bottom_right", 255)],
)  # fmt: skip
def test_label_consistent_attack_ground_truth(
    proxy: Proxy, clean: ImageDataset, trigger: str, corners: str, amplitude: int
) -> None:
    attack = LabelConsistentAttack(
        target=2, poison_rate=0.3, norm="linf", eps=6.0, steps=4, trigger=trigger,
        corners=corners, amplitude=amplitude, distance=1, placement="uniform", seed=3,
    )  # fmt: skip
    out = attack.poison(clean, proxy)
    mask = out.extra["poison_mask"]
    assert mask.sum() == round(0.3 * 30) == 9  # p * n_target, not p * n / (1 - p)
    assert np.all(clean.y_train[mask] == 2)
    assert np.array_equal(out.y_train, clean.y_train)  # labels kept
    assert np.array_equal(out.extra["y_train_original"], clean.y_train)
    assert np.array_equal(out.x_train[~mask], clean.x_train[~mask])
    assert np.all(out.extra["trigger_position"][~mask] == -1)
    chosen = np.flatnonzero(mask)
    adv = attack.perturb(proxy, clean.x_train[chosen], clean.y_train[chosen])
    norms = perturbation_norms(adv, clean.x_train[chosen], "linf")
    assert np.all(norms <= 6.0) and np.allclose(out.extra["perturbation_norm"][chosen], norms)
    assert np.all(out.extra["perturbation_norm"][~mask] == 0)
    board = checkerboard_pattern(3)[..., None]
    for k, i in enumerate(chosen):
        pos = out.extra["trigger_position"][i]
        foot = trigger_footprint(out.meta, pos, (SIZE, SIZE))
        assert foot.sum() == (36 if corners == "all" and trigger == "checkerboard" else 9)
        # outside the trigger: exactly the PGD image
        assert np.array_equal(out.x_train[i][~foot], adv[k][~foot])
        expected = adv[k].copy()
        if trigger == "sticker":
            r, c = pos
            expected[r : r + 3, c : c + 3] = parse_color("#f5ff00")
        else:
            assert np.array_equal(pos, [SIZE - 4, SIZE - 4])  # d = 1 from bottom and right
            boxes = attack.trigger_boxes(pos, (SIZE, SIZE))
            for top, left, h, w in boxes:
                cell = expected[top : top + h, left : left + w].astype(int) + amplitude * board
                expected[top : top + h, left : left + w] = np.clip(cell, 0, 255)
        assert np.array_equal(out.x_train[i], expected)
    # test time: full-amplitude trigger on every non-target test image
    idx = out.extra["test_triggered_index"]
    assert np.array_equal(idx, np.flatnonzero(clean.y_test != 2))
    for img, src, pos in zip(
        out.extra["x_test_triggered"], clean.x_test[idx], out.extra["trigger_position_test"],
        strict=True,
    ):  # fmt: skip
        foot = trigger_footprint(out.meta, pos, (SIZE, SIZE))
        assert np.array_equal(img[~foot], src[~foot])
        if trigger == "checkerboard":
            r, c = pos
            cells = img[r : r + 3, c : c + 3]
            assert np.array_equal(cells, np.broadcast_to(np.where(board > 0, 255, 0), (3, 3, 3)))
    assert out.meta["attack"]["eps"] == 6.0 and out.meta["attack"]["step_size"] == 2.5 * 6 / 4
    assert out.meta["proxy"] == {"n_classes": 4}


def test_label_consistent_defaults_and_determinism(proxy: Proxy, clean: ImageDataset) -> None:
    spec = {"attack": "label_consistent", "target": 1, "poison_rate": 0.2, "distance": 0,
            "steps": 3, "seed": 5}  # fmt: skip
    attack = attack_from_config(spec)
    assert attack.eps == 300.0 and attack.step_size == 2.5 * 300.0 / 3  # l2 default
    assert attack_from_config({**spec, "norm": "linf"}).eps == 8.0
    a, b = attack.poison(clean, proxy), attack.poison(clean, proxy)
    assert np.array_equal(a.x_train, b.x_train)
    for key in a.extra:
        assert np.array_equal(a.extra[key], b.extra[key]), key
    assert np.all(a.extra["perturbation_norm"] <= 300.0)
    c = attack_from_config({**spec, "seed": 6}).poison(clean, proxy)
    assert not np.array_equal(a.extra["poison_mask"], c.extra["poison_mask"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"eps": 0.0}, r"eps: 0.0 must be a finite number > 0"),
        ({"eps": -3}, r"eps: -3 must be"),
        ({"step_size": 0}, r"step_size: 0 must be"),
        ({"steps": 0}, r"steps: 0 must be an integer >= 1"),
        ({"amplitude": 256}, r"amplitude: 256 is outside the allowed range 0\.\.255"),
        ({"amplitude": -1}, r"amplitude: -1 is outside the allowed range 0\.\.255"),
        ({"norm": "l1"}, r"norm: unknown norm 'l1'; allowed: \['l2', 'linf'\]"),
        ({"trigger": "star"}, r"unknown trigger 'star'; allowed: \['checkerboard', 'sticker'\]"),
        ({"corners": "top"}, r"unknown corners 'top'; allowed: \['bottom_right', 'all'\]"),
        ({"distance": 14}, r"distance: a 3x3 trigger at distance 14 .* outside the 16x16 image"),
        ({"distance": 6, "corners": "all"}, "four 3x3 corner triggers at distance 6 overlap"),
        ({"trigger": "sticker", "placement": "fixed", "position": (14, 0)}, "would leave"),
        ({"target": 4}, "target: class 4 does not exist"),
        ({"poison_rate": 1.0}, "poison_rate: 1.0 is outside"),
        ({"poison_rate": 0.01}, "gives 0 poisoned images"),
    ],
)  # fmt: skip
def test_label_consistent_bad_parameters(
    proxy: Proxy, clean: ImageDataset, params: dict, message: str
) -> None:
    spec = {"attack": "label_consistent", "target": 2, "poison_rate": 0.2, "distance": 1}
    with pytest.raises(AttackParameterError, match=message):
        attack_from_config({**spec, **params}).poison(clean, proxy)


def test_label_consistent_needs_a_matching_proxy(proxy: Proxy, clean: ImageDataset) -> None:
    attack = LabelConsistentAttack(target=2, poison_rate=0.2, distance=1)
    with pytest.raises(ValueError, match="needs a clean proxy model"):
        attack.poison(clean)
    other = Proxy(proxy.model, proxy.normalization, {"n_classes": 7})
    with pytest.raises(ValueError, match="proxy model has 7 classes, the dataset 4"):
        attack.poison(clean, other)


def test_steps_train_proxy_and_poison_are_reproducible(clean: ImageDataset, tmp_path: Path) -> None:
    write_dataset(tmp_path / "dataset.h5", clean)
    ckpt = tmp_path / "proxy" / "model.safetensors"
    train_proxy(
        tmp_path / "dataset.h5", ckpt, tmp_path / "proxy" / "metrics.json", {"name": "net"},
        {"epochs": 1, "batch_size": 16},
    )  # fmt: skip
    scenario = {"attack": "label_consistent", "target": 3, "poison_rate": 0.2, "distance": 2,
                "steps": 2, "corners": "all", "seed": 1}  # fmt: skip
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run / "poisoned.h5"
        montage = tmp_path / run / "attack_montage.png"
        poison_dataset(tmp_path / "dataset.h5", out, scenario, montage=montage, proxy=ckpt)
        assert montage.read_bytes()[:4] == b"\x89PNG"
        outs.append(read_dataset(out))
    a, b = outs
    assert np.array_equal(a.x_train, b.x_train) and a.meta == b.meta
    for key in a.extra:
        assert np.array_equal(a.extra[key], b.extra[key]), key
    assert a.meta["proxy"]["weights_sha256"] and a.meta["n_poison"] == 6
    with pytest.raises(ValueError, match="needs a proxy checkpoint"):
        poison_dataset(tmp_path / "dataset.h5", tmp_path / "c.h5", scenario)
    # attacks without a proxy ignore the argument
    poison_dataset(tmp_path / "dataset.h5", tmp_path / "clean.h5", {"attack": "clean", "target": 0})
    assert read_dataset(tmp_path / "clean.h5").meta["n_poison"] == 0
