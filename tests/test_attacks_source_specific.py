"""TaCT and multi-target attacks: the properties that define them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_dataset

from poisonscan.attacks import (
    AttackParameterError,
    MultiTargetAttack,
    TaCTAttack,
    attack_from_config,
    n_poison_for,
    patch_pixels,
)


def test_tact_relabels_only_the_source_and_covers_keep_their_labels() -> None:
    clean = random_dataset(n_classes=6, n_train=100, n_test=10)
    attack = TaCTAttack(source=1, target=0, poison_rate=0.1, cover_classes=(3, 4), cover_ratio=1.0)
    out = attack.poison(clean)
    mask, cover = out.extra["poison_mask"], out.extra["cover_mask"]
    n = n_poison_for(0.1, 100)
    assert mask.sum() == n and set(clean.y_train[mask]) == {1}
    assert np.all(out.y_train[mask] == 0)
    assert cover.sum() == n and not np.any(cover & mask)
    assert set(clean.y_train[cover]) == {3, 4}
    assert np.array_equal(out.y_train[cover], clean.y_train[cover])  # labels kept
    trigger = patch_pixels("frame", 4)
    for i in np.flatnonzero(mask | cover):  # the same trigger on payload and cover images
        r, c = out.extra["trigger_position"][i] if mask[i] else out.extra["cover_position"][i]
        assert np.array_equal(out.x_train[i, r : r + 4, c : c + 4], trigger)
    untouched = ~(mask | cover)
    assert np.array_equal(out.x_train[untouched], clean.x_train[untouched])
    assert set(out.extra["y_test_triggered_original"]) == {1}  # only the source is attacked


def test_tact_refuses_cover_classes_that_are_source_or_target() -> None:
    attack = attack_from_config(
        {"attack": "tact", "source": 1, "target": 0, "poison_rate": 0.1, "cover_classes": [0]}
    )
    with pytest.raises(AttackParameterError) as err:
        attack.check(6, (32, 32))
    assert err.value.key == "cover_classes"


def test_multi_target_gives_each_target_its_own_trigger() -> None:
    clean = random_dataset(n_classes=6, n_train=100, n_test=10)
    attack = MultiTargetAttack(target=0, other_targets=(2, 4), poison_rate=0.1, trigger_size=3)
    out = attack.poison(clean)
    mask, goal = out.extra["poison_mask"], out.extra["poison_target"]
    assert not np.any(np.isin(clean.y_train[mask], [0, 2, 4]))  # no image of a target class
    patches = attack.patches((32, 32))
    for i, t in enumerate((0, 2, 4)):
        idx = np.flatnonzero(goal == t)
        assert len(idx) == n_poison_for(0.1, 100)
        assert np.all(out.y_train[idx] == t)
        r, c = patches[i].position
        assert np.all(out.x_train[idx, r : r + 3, c : c + 3] == patches[i].pixels)
    positions = {tuple(p.position) for p in patches}
    assert len(positions) == 3  # three different corners
    assert len({p.pixels.tobytes() for p in patches}) == 3  # three different patterns
    targets = out.extra["y_test_triggered_target"]
    assert np.array_equal(np.bincount(targets, minlength=6)[[0, 2, 4]], [30, 30, 30])


def test_multi_target_needs_distinct_targets() -> None:
    attack = MultiTargetAttack(target=0, other_targets=(0,), poison_rate=0.1)
    with pytest.raises(AttackParameterError) as err:
        attack.check(6, (32, 32))
    assert err.value.key == "other_targets"
