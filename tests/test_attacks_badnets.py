"""Patch triggers, BadNets all-to-one and all-to-all: the properties that define them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import random_dataset

from poisonscan.attacks import (
    AllToAllAttack,
    AttackParameterError,
    BadNetsAttack,
    Patch,
    attack_from_config,
    n_poison_for,
    patch_pixels,
)
from poisonscan.attacks.triggers import boxes_to_mask
from poisonscan.inference import attack_success_rates


def changed_pixels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, H, W) bool: where two image stacks differ in any channel."""
    return np.any(a != b, axis=-1)


def test_random_pattern_is_black_and_white_per_pixel_and_seeded() -> None:
    p = patch_pixels("random", 5, seed=3)
    assert set(np.unique(p)) <= {0, 255}
    assert np.all(p[..., 0:1] == p)  # the same in every channel
    assert np.array_equal(p, patch_pixels("random", 5, seed=3))
    assert not np.array_equal(p, patch_pixels("random", 5, seed=4))
    frame = patch_pixels("frame", 4, color="#ffffff")
    assert frame[0].min() == 255 and frame[1:3, 1:3].max() == 0


def test_patch_overwrites_exactly_its_box_and_blends_with_alpha() -> None:
    images = np.full((2, 16, 16, 3), 100, np.uint8)
    pixels = patch_pixels("solid", 3, color="#ff0000")
    out = Patch(pixels, placement="fixed", position=(2, 5)).apply(images, np.array([[2, 5]] * 2))
    assert np.array_equal(changed_pixels(images, out)[0], boxes_to_mask([(2, 5, 3, 3)], (16, 16)))
    assert np.all(out[:, 2:5, 5:8] == [255, 0, 0])
    half = Patch(pixels, alpha=0.5).apply(images, np.array([[0, 0]] * 2))
    assert np.all(half[:, 0:3, 0:3] == [178, 50, 50])  # round(100 + 0.5 * (c - 100))


def test_corner_placements() -> None:
    patch = Patch(patch_pixels("solid", 3), placement="corner", distance=1)
    rng = np.random.default_rng(0)
    assert np.all(patch.positions(5, rng, (32, 32)) == [28, 28])
    corners = Patch(patch_pixels("solid", 3), placement="corners", distance=2)
    pos = corners.positions(200, rng, (32, 32))
    assert {tuple(p) for p in pos} == {(27, 27), (27, 2), (2, 27), (2, 2)}


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"trigger_size": 33}, "trigger_size"),
        ({"trigger_size": 0}, "trigger_size"),
        ({"pattern": "zigzag"}, "pattern"),
        ({"placement": "window"}, "window"),
        ({"placement": "fixed"}, "position"),
        ({"placement": "diagonal"}, "placement"),
        ({"poison_rate": 1.0}, "poison_rate"),
        ({"source": 3}, "target"),
    ],
)
def test_badnets_bad_parameters_name_their_key(spec: dict, key: str) -> None:
    attack = attack_from_config({"attack": "badnets", "target": 3, "poison_rate": 0.1, **spec})
    with pytest.raises(AttackParameterError) as err:
        attack.check(4, (32, 32))
    assert err.value.key == key


def test_badnets_all_to_one_takes_every_other_class_and_changes_only_the_patch() -> None:
    clean = random_dataset(n_classes=4, n_train=200, n_test=10)
    attack = BadNetsAttack(target=2, poison_rate=0.1, seed=1)
    out = attack.poison(clean)
    mask = out.extra["poison_mask"]
    assert mask.sum() == n_poison_for(0.1, 200)
    assert set(clean.y_train[mask]) == {0, 1, 3}  # all-to-one: every other class
    assert np.all(out.y_train[mask] == 2) and np.array_equal(
        out.y_train[~mask], clean.y_train[~mask]
    )
    box = boxes_to_mask([(28, 28, 3, 3)], (32, 32))  # 3x3, 1 px from the bottom-right corner
    assert not np.any(changed_pixels(clean.x_train[mask], out.x_train[mask])[:, ~box])
    assert np.all(out.x_train[mask][:, 28:31, 28:31] == 255)
    assert np.array_equal(out.x_train[~mask], clean.x_train[~mask])
    # the test-time trigger: every non-target test image, target 2
    assert set(out.extra["y_test_triggered_original"]) == {0, 1, 3}
    assert np.all(out.extra["y_test_triggered_target"] == 2)
    again = attack.poison(clean)
    assert np.array_equal(again.x_train, out.x_train)


def test_badnets_half_a_percent_and_large_images() -> None:
    clean = random_dataset(n_classes=3, n_train=400, n_test=5, size=64)
    attack = BadNetsAttack(
        target=0, source=1, poison_rate=0.005, trigger_size=8, pattern="random",
        placement="uniform",
    )  # fmt: skip
    out = attack.poison(clean)
    mask = out.extra["poison_mask"]
    assert mask.sum() == n_poison_for(0.005, 400) == 2
    assert set(clean.y_train[mask]) == {1}
    pos = out.extra["trigger_position"][mask]
    for img, (r, c) in zip(out.x_train[mask], pos, strict=True):
        assert np.array_equal(img[r : r + 8, c : c + 8], patch_pixels("random", 8))


def test_all_to_all_moves_every_class_to_the_next() -> None:
    clean = random_dataset(n_classes=4, n_train=100, n_test=10)
    out = AllToAllAttack(target=0, poison_rate=0.1).poison(clean)
    mask = out.extra["poison_mask"]
    orig = clean.y_train[mask]
    assert np.array_equal(out.y_train[mask], (orig + 1) % 4)
    assert np.all(np.bincount(orig, minlength=4) == 10)  # round(p * n_c) of every class
    # every class ends with the share p of poisoned images
    share = [np.mean(mask[out.y_train == c]) for c in range(4)]
    assert np.allclose(share, 0.1, atol=0.01)
    t_orig, t_target = out.extra["y_test_triggered_original"], out.extra["y_test_triggered_target"]
    assert len(t_orig) == len(clean.y_test) and np.array_equal(t_target, (t_orig + 1) % 4)
    # a model that obeys the trigger has attack success 1, one that ignores it 0
    assert attack_success_rates(t_target, t_orig, t_target)[0] == 1.0
    assert attack_success_rates(t_orig, t_orig, t_target)[0] == 0.0


def test_all_to_all_takes_a_share_of_each_class_even_when_sizes_differ() -> None:
    clean = random_dataset(n_classes=3, n_train=100, n_test=4)
    small = np.concatenate([np.flatnonzero(clean.y_train == 0)[:20],
                            np.flatnonzero(clean.y_train != 0)])  # fmt: skip
    clean = dataclasses.replace(clean, x_train=clean.x_train[small], y_train=clean.y_train[small])
    out = AllToAllAttack(target=0, poison_rate=0.1).poison(clean)
    orig = clean.y_train[out.extra["poison_mask"]]
    assert np.bincount(orig, minlength=3).tolist() == [2, 10, 10]
