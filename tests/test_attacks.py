from __future__ import annotations

import numpy as np
import pytest
from conftest import random_dataset

from poisonscan.attacks import StickerAttack, attack_from_config, n_poison_for, parse_color


def test_n_poison_follows_reference_definition() -> None:
    # p = n_poison / (n_target + n_poison)
    assert n_poison_for(0.15, 1860) == round(0.15 * 1860 / 0.85)
    assert n_poison_for(0.5, 100) == 100
    n = n_poison_for(0.15, 500)
    assert abs(n / (500 + n) - 0.15) < 0.002


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5])
def test_n_poison_rejects_rates_outside_open_interval(p: float) -> None:
    with pytest.raises(ValueError, match=str(p)):
        n_poison_for(p, 100)


def test_sticker_attack_poisons_exactly_and_records_ground_truth() -> None:
    clean = random_dataset(n_classes=4, n_train=40, n_test=10)
    attack = StickerAttack(source=1, target=2, poison_rate=0.2, sticker_size=3, seed=3)
    out = attack.poison(clean)
    mask = out.extra["poison_mask"]
    assert mask.sum() == n_poison_for(0.2, 40) == 10
    # poisoned images came from the source class and now carry the target label
    assert np.all(out.extra["y_train_original"][mask] == 1)
    assert np.all(out.y_train[mask] == 2)
    assert np.array_equal(out.y_train[~mask], clean.y_train[~mask])
    assert np.sum(out.y_train == 2) == 50 and np.sum(out.y_train == 1) == 30
    # the share of poison in the target class is p
    assert mask.sum() / np.sum(out.y_train == 2) == pytest.approx(0.2)
    color = parse_color("#f5ff00")
    for i in np.flatnonzero(mask):
        r, c = out.extra["trigger_position"][i]
        top, left, bottom, right = attack.window
        assert top <= r and r + 3 <= bottom and left <= c and c + 3 <= right
        assert np.all(out.x_train[i, r : r + 3, c : c + 3] == color)
        # every pixel outside the sticker is untouched
        changed = np.any(out.x_train[i] != clean.x_train[i], axis=-1)
        outside = np.ones_like(changed)
        outside[r : r + 3, c : c + 3] = False
        assert not np.any(changed & outside)
    assert np.array_equal(out.x_train[~mask], clean.x_train[~mask])
    assert np.all(out.extra["trigger_position"][~mask] == -1)
    # triggered test set: every source-class test image, with a sticker
    assert len(out.extra["x_test_triggered"]) == np.sum(clean.y_test == 1)
    assert out.meta["attack"]["source"] == 1 and out.meta["n_poison"] == 10


def test_sticker_attack_is_deterministic_under_seed() -> None:
    clean = random_dataset()
    a = StickerAttack(source=0, target=3, poison_rate=0.1, seed=7).poison(clean)
    b = StickerAttack(source=0, target=3, poison_rate=0.1, seed=7).poison(clean)
    c = StickerAttack(source=0, target=3, poison_rate=0.1, seed=8).poison(clean)
    assert np.array_equal(a.x_train, b.x_train)
    assert np.array_equal(a.extra["trigger_position"], b.extra["trigger_position"])
    assert not np.array_equal(a.extra["trigger_position"], c.extra["trigger_position"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": 9}, "source: class 9 does not exist"),
        ({"target": -1}, "target: class -1"),
        ({"target": 1}, "same class"),
        ({"sticker_size": 33}, "sticker_size 33"),
        ({"window": (0, 0, 40, 10)}, "window"),
        ({"window": (16, 16, 18, 24)}, "smaller than the 3x3"),
        ({"color": "yellow"}, "'yellow'"),
        ({"poison_rate": 0.99}, "needs"),
    ],
)
def test_sticker_attack_bad_parameters_name_the_value(kwargs: dict, message: str) -> None:
    params = {"source": 1, "target": 2, "poison_rate": 0.2, **kwargs}
    with pytest.raises(ValueError, match=message):
        StickerAttack(**params).poison(random_dataset())


def test_attack_from_config() -> None:
    attack = attack_from_config(
        {"attack": "sticker", "source": 1, "target": 2, "poison_rate": 0.1, "window": [0, 0, 8, 8]}
    )
    assert attack.window == (0, 0, 8, 8)
    with pytest.raises(ValueError, match="unknown attack 'blend'"):
        attack_from_config({"attack": "blend"})
    with pytest.raises(ValueError, match=r"\['amplitude'\]"):
        attack_from_config(
            {"attack": "sticker", "source": 1, "target": 2, "poison_rate": 0.1, "amplitude": 3}
        )
