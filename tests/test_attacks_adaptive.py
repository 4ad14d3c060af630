"""Adaptive-Blend and Adaptive-Patch: partitioned and weak triggers, cover images."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_dataset

from poisonscan.attacks import (
    AdaptiveBlendAttack,
    AdaptivePatchAttack,
    AttackParameterError,
    make_blend_pattern,
    n_poison_for,
)


def test_adaptive_blend_carries_half_the_pieces_and_covers_keep_labels() -> None:
    clean = random_dataset(n_classes=4, n_train=100, n_test=10)
    attack = AdaptiveBlendAttack(target=1, poison_rate=0.1, pattern="noise", cover_ratio=1.0)
    out = attack.poison(clean)
    mask, cover = out.extra["poison_mask"], out.extra["cover_mask"]
    n = n_poison_for(0.1, 100)
    assert mask.sum() == n == cover.sum() and not np.any(mask & cover)
    assert 1 not in set(clean.y_train[mask]) and np.all(out.y_train[mask] == 1)
    assert np.array_equal(out.y_train[cover], clean.y_train[cover])
    pieces = out.extra["trigger_pieces"]
    assert np.all(pieces[mask | cover].sum(axis=1) == 8)  # 16 pieces, half masked
    assert not np.any(pieces[~(mask | cover)])
    pattern = make_blend_pattern("noise", (32, 32)).astype(float)
    for i in np.flatnonzero(mask | cover)[:5]:
        grid = pieces[i].reshape(4, 4)
        on = np.kron(grid, np.ones((8, 8), dtype=bool))
        x = clean.x_train[i].astype(float)
        expected = np.clip(np.rint(x + 0.15 * (pattern - x)), 0, 255)
        assert np.array_equal(out.x_train[i][on], expected[on])  # blended where present
        assert np.array_equal(out.x_train[i][~on], clean.x_train[i][~on])  # untouched elsewhere
    # test images: the whole pattern at the stronger test alpha
    xt = clean.x_test[out.extra["test_triggered_index"]].astype(float)
    expected = np.clip(np.rint(xt + 0.2 * (pattern - xt)), 0, 255)
    assert np.array_equal(out.extra["x_test_triggered"], expected.astype(np.uint8))


def test_adaptive_blend_refuses_a_grid_that_does_not_fit() -> None:
    with pytest.raises(AttackParameterError) as err:
        AdaptiveBlendAttack(target=0, poison_rate=0.1, pieces=9).check(4, (32, 32))
    assert err.value.key == "pieces"


def test_adaptive_patch_splits_four_weak_triggers_and_tests_two_strong_ones() -> None:
    clean = random_dataset(n_classes=4, n_train=200, n_test=10)
    attack = AdaptivePatchAttack(target=0, poison_rate=0.1)
    out = attack.poison(clean)
    mask, cover, which = (
        out.extra["poison_mask"],
        out.extra["cover_mask"],
        out.extra["trigger_index"],
    )
    n = n_poison_for(0.1, 200)
    assert mask.sum() == n and cover.sum() == 2 * n
    for group in (mask, cover):  # each trigger on a quarter of the payload and of the covers
        counts = np.bincount(which[group], minlength=4)
        assert counts.max() - counts.min() <= 1
    placed = attack.patches((32, 32))
    for i in np.flatnonzero(mask)[:8]:  # weak: a blend of the clean pixels and the trigger
        k = which[i]
        r, c = placed[k].position
        x = clean.x_train[i, r : r + 5, c : c + 5].astype(float)
        expected = np.rint(x + attack.train_alphas[k] * (placed[k].pixels - x))
        assert np.array_equal(out.x_train[i, r : r + 5, c : c + 5], expected)
    strong = attack.patches((32, 32), (1.0, 1.0, 1.0, 1.0))
    for k in attack.test_triggers:  # test images carry the two triggers at full strength
        r, c = strong[k].position
        assert np.all(out.extra["x_test_triggered"][:, r : r + 5, c : c + 5] == strong[k].pixels)
