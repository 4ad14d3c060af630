"""Sticker, Clever Hans, blended and clean attacks; triggers; registry; ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_dataset

from poisonscan.attacks import (
    ATTACKS,
    AttackParameterError,
    BlendedAttack,
    CleanAttack,
    CleverHansAttack,
    StickerAttack,
    attack_from_config,
    attack_from_meta,
    checkerboard_pattern,
    make_blend_pattern,
    n_poison_for,
    parse_color,
    save_attack_montage,
    trigger_footprint,
)
from poisonscan.attacks.triggers import Checkerboard, Sticker
from poisonscan.storage import ImageDataset, read_dataset, write_dataset

YELLOW = parse_color("#f5ff00")


def test_n_poison_follows_reference_definition() -> None:
    # p = n_poison / (n_target + n_poison)
    assert n_poison_for(0.15, 1860) == round(0.15 * 1860 / 0.85)
    assert n_poison_for(0.5, 100) == 100
    n = n_poison_for(0.15, 500)
    assert abs(n / (500 + n) - 0.15) < 0.002


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5])
def test_n_poison_rejects_rates_outside_open_interval(p: float) -> None:
    with pytest.raises(
        ValueError, match=rf"poison_rate: {p} is outside the open interval \(0, 1\)"
    ):
        n_poison_for(p, 100)


def assert_only_trigger_changed(
    clean: ImageDataset, out: ImageDataset, expected_in_trigger: Any = None
) -> None:
    """Poisoned images differ from the clean ones only inside the recorded trigger boxes.

    ``expected_in_trigger(i, clean_image)`` gives the exact expected poisoned image of
    training image ``i``; it is compared pixel by pixel inside the footprint.
    """
    mask = out.extra["poison_mask"]
    size = clean.image_shape[:2]
    assert np.array_equal(out.x_train[~mask], clean.x_train[~mask])
    assert np.all(out.extra["trigger_position"][~mask] == -1)
    for i in np.flatnonzero(mask):
        foot = trigger_footprint(out.meta, out.extra["trigger_position"][i], size)
        assert foot.any()
        changed = np.any(out.x_train[i] != clean.x_train[i], axis=-1)
        assert not np.any(changed & ~foot), f"image {i} changed outside its trigger"
        if expected_in_trigger is not None:
            expected = expected_in_trigger(i, clean.x_train[i])
            assert np.array_equal(out.x_train[i][foot], expected[foot])


def sticker_at(pos: np.ndarray, size: int) -> Any:
    def paint(_: int, img: np.ndarray) -> np.ndarray:
        out = img.copy()
        out[pos[0] : pos[0] + size, pos[1] : pos[1] + size] = YELLOW
        return out

    return paint


# --------------------------------------------------------------------------- sticker


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
    positions = out.extra["trigger_position"]
    for i in np.flatnonzero(mask):
        r, c = positions[i]
        top, left, bottom, right = attack.window
        assert top <= r and r + 3 <= bottom and left <= c and c + 3 <= right
        assert np.all(out.x_train[i, r : r + 3, c : c + 3] == YELLOW)
    assert_only_trigger_changed(clean, out, lambda j, img: sticker_at(positions[j], 3)(j, img))
    # triggered test set: every source-class test image, with a sticker where recorded
    idx = out.extra["test_triggered_index"]
    assert np.array_equal(idx, np.flatnonzero(clean.y_test == 1))
    assert np.all(out.extra["y_test_triggered_original"] == 1)
    for img, src, (r, c) in zip(
        out.extra["x_test_triggered"], clean.x_test[idx], out.extra["trigger_position_test"],
        strict=True,
    ):  # fmt: skip
        assert np.array_equal(img, sticker_at(np.array([r, c]), 3)(0, src))
    assert out.meta["attack"]["source"] == 1 and out.meta["n_poison"] == 10
    assert (
        out.meta["attack"]["name"] == "sticker"
        and "p * n_target / (1 - p)" in out.meta["rate_definition"]
    )


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize(
    ("placement", "extra"),
    [("window", {"window": (2, 3, 12, 14)}), ("fixed", {"position": (0, 27)}),
     ("uniform", {})],
)  # fmt: skip
def test_sticker_placements_and_sizes(size: int, placement: str, extra: dict) -> None:
    if placement == "fixed":
        extra = {"position": (0, 32 - size)}  # touches the top-right corner
    clean = random_dataset(n_classes=3, n_train=60, n_test=20)
    attack = StickerAttack(
        source=0, target=1, poison_rate=0.4, sticker_size=size, placement=placement, seed=5,
        **extra,
    )  # fmt: skip
    out = attack.poison(clean)
    mask = out.extra["poison_mask"]
    assert mask.sum() == n_poison_for(0.4, 60) == 40
    pos = out.extra["trigger_position"][mask]
    assert_only_trigger_changed(
        clean, out, lambda i, img: sticker_at(out.extra["trigger_position"][i], size)(i, img)
    )
    assert np.all(pos >= 0) and np.all(pos + size <= 32)
    if placement == "window":
        top, left, bottom, right = extra["window"]
        assert np.all((pos[:, 0] >= top) & (pos[:, 0] + size <= bottom))
        assert np.all((pos[:, 1] >= left) & (pos[:, 1] + size <= right))
    elif placement == "fixed":
        assert np.all(pos == [0, 32 - size])
        assert np.all(out.extra["trigger_position_test"] == [0, 32 - size])
    else:  # uniform: the positions spread over the image, not one default window
        assert np.ptp(pos[:, 0]) > 16 and np.ptp(pos[:, 1]) > 16


def test_sticker_triggers_directly() -> None:
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    out = Sticker(size=2, color="#010203", placement="fixed", position=(6, 0)).apply(
        images, np.array([[6, 0], [0, 6]])
    )
    assert np.array_equal(out[0, 6:8, 0:2], np.broadcast_to([1, 2, 3], (2, 2, 3)))
    assert np.array_equal(out[1, 0:2, 6:8], np.broadcast_to([1, 2, 3], (2, 2, 3)))
    assert out.sum() == 2 * 4 * 6 and images.sum() == 0  # input untouched
    assert np.array_equal(
        checkerboard_pattern(3), [[1, -1, 1], [-1, 1, -1], [1, -1, 1]]
    )  # white corners, as Turner et al.
    board = Checkerboard(size=3, amplitude=50, distance=1, corners="all")
    board.check((8, 8))
    x = np.full((1, 8, 8, 3), 30, dtype=np.uint8)
    pos = board.positions(1, np.random.default_rng(0), (8, 8))
    assert np.array_equal(pos, [[4, 4]])  # bottom-right copy, 1 px from the border
    y = board.apply(x, pos)[0, ..., 0]
    for top, left in [(1, 1), (1, 4), (4, 1), (4, 4)]:
        assert np.array_equal(
            y[top : top + 3, left : left + 3], [[80, 0, 80], [0, 80, 0], [80, 0, 80]]
        )
    assert np.sum(y != 30) == 36


# --------------------------------------------------------------------------- clever hans


def test_clever_hans_stickers_part_of_one_class_and_keeps_labels() -> None:
    clean = random_dataset(n_classes=4, n_train=40, n_test=10)
    attack = CleverHansAttack(target=3, poison_rate=0.25, sticker_size=2, placement="uniform")
    out = attack.poison(clean)
    mask = out.extra["poison_mask"]
    assert mask.sum() == round(0.25 * 40) == 10
    assert np.all(clean.y_train[mask] == 3)
    assert np.array_equal(out.y_train, clean.y_train)  # no relabelling
    assert np.array_equal(out.extra["y_train_original"], clean.y_train)
    assert_only_trigger_changed(
        clean, out, lambda i, img: sticker_at(out.extra["trigger_position"][i], 2)(i, img)
    )
    # test-time sticker on every non-target image
    assert np.array_equal(out.extra["test_triggered_index"], np.flatnonzero(clean.y_test != 3))
    assert set(out.extra["y_test_triggered_original"].tolist()) == {0, 1, 2}
    assert out.meta["n_poison"] == 10 and "round(p * n_target)" in out.meta["rate_definition"]


# --------------------------------------------------------------------------- blended


def test_blended_attack_blends_exactly_and_relabels() -> None:
    clean = random_dataset(n_classes=3, n_train=30, n_test=10)
    attack = BlendedAttack(source=0, target=2, poison_rate=0.25, alpha=0.3, pattern_seed=4)
    out = attack.poison(clean)
    mask = out.extra["poison_mask"]
    assert mask.sum() == n_poison_for(0.25, 30) == 10
    assert np.all(out.y_train[mask] == 2) and np.all(clean.y_train[mask] == 0)
    pattern = out.extra["trigger_pattern"]
    assert np.array_equal(pattern, make_blend_pattern("noise", (32, 32), seed=4))
    assert np.all(out.extra["trigger_position"][mask] == 0)

    def blend(_: int, img: np.ndarray) -> np.ndarray:
        return np.rint(0.7 * img.astype(float) + 0.3 * pattern.astype(float)).astype(np.uint8)

    assert_only_trigger_changed(clean, out, blend)
    foot = trigger_footprint(out.meta, np.array([0, 0]), (32, 32))
    assert foot.all()  # the blend covers the whole image
    src = clean.x_test[out.extra["test_triggered_index"]]
    assert np.all(clean.y_test[out.extra["test_triggered_index"]] == 0)
    assert np.array_equal(out.extra["x_test_triggered"], np.stack([blend(0, x) for x in src]))


def test_blend_patterns() -> None:
    noise = make_blend_pattern("noise", (8, 8), seed=1)
    assert np.array_equal(noise, make_blend_pattern("noise", (8, 8), seed=1))
    assert not np.array_equal(noise, make_blend_pattern("noise", (8, 8), seed=2))
    stripes = make_blend_pattern("stripes", (4, 8))
    assert np.array_equal(stripes[0, :, 0], [255, 255, 0, 0, 255, 255, 0, 0])
    board = make_blend_pattern("checkerboard", (2, 2))
    assert np.array_equal(board[..., 1], [[255, 0], [0, 255]])
    with pytest.raises(AttackParameterError, match="unknown blend pattern 'kitty'"):
        make_blend_pattern("kitty", (8, 8))


# --------------------------------------------------------------------------- clean control


def test_clean_attack_changes_nothing() -> None:
    clean = random_dataset()
    out = CleanAttack(target=2).poison(clean)
    assert np.array_equal(out.x_train, clean.x_train) and np.array_equal(out.y_train, clean.y_train)
    assert (
        not out.extra["poison_mask"].any() and out.extra["poison_mask"].size == clean.y_train.size
    )
    assert np.all(out.extra["trigger_position"] == -1)
    assert "x_test_triggered" not in out.extra
    assert out.meta["n_poison"] == 0 and out.meta["attack"] == {"name": "clean", "target": 2}


# --------------------------------------------------------------------------- all attacks

SPECS: dict[str, dict[str, Any]] = {
    "clean": {"attack": "clean", "target": 1},
    "sticker": {"attack": "sticker", "source": 0, "target": 1, "poison_rate": 0.2,
                "placement": "uniform"},
    "clever_hans": {"attack": "clever_hans", "target": 1, "poison_rate": 0.3},
    "blended": {"attack": "blended", "source": 0, "target": 1, "poison_rate": 0.2},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SPECS))
def test_same_seed_is_bit_identical_and_survives_the_file(name: str, tmp_path: Path) -> None:
    clean = random_dataset(n_train=30)
    a = attack_from_config({**SPECS[name], "seed": 7} if name != "clean" else SPECS[name])
    first, second = a.poison(clean), a.poison(clean)
    assert first.meta == second.meta
    assert sorted(first.extra) == sorted(second.extra)
    for key in first.extra:
        assert np.array_equal(first.extra[key], second.extra[key]), key
    assert np.array_equal(first.x_train, second.x_train)
    write_dataset(tmp_path / "p.h5", first)
    back = read_dataset(tmp_path / "p.h5")
    assert back.meta == first.meta
    assert attack_from_meta(back.meta) == a
    for key in first.extra:
        assert np.array_equal(back.extra[key], first.extra[key]), key


@pytest.mark.parametrize("name", ["sticker", "clever_hans", "blended"])
def test_other_seed_changes_the_choice(name: str) -> None:
    clean = random_dataset(n_train=30)
    a = attack_from_config({**SPECS[name], "seed": 1}).poison(clean)
    b = attack_from_config({**SPECS[name], "seed": 2}).poison(clean)
    assert not np.array_equal(a.extra["poison_mask"], b.extra["poison_mask"])


def test_registry_and_montage(tmp_path: Path) -> None:
    assert sorted(ATTACKS) == [
        "adaptive_blend", "adaptive_patch", "all_to_all", "badnets", "blended", "clean",
        "clever_hans", "ftrojan", "label_consistent", "multi_target", "sig", "sticker", "tact",
        "wanet",
    ]  # fmt: skip
    clean = random_dataset(n_train=20)
    for name, spec in SPECS.items():
        out = attack_from_config(spec).poison(clean)
        path = tmp_path / f"{name}.png"
        save_attack_montage(clean, out, path, n=4)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.png" for n in SPECS)
    with pytest.raises(ValueError, match="n and scale must be at least 1"):
        save_attack_montage(clean, out, tmp_path / "x.png", n=0)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"attack": "sticker", "source": 9}, r"source: class 9 does not exist \(classes 0\.\.3\)"),
        ({"attack": "sticker", "target": -1}, "target: class -1 does not exist"),
        ({"attack": "sticker", "target": 1}, "same class"),
        ({"attack": "sticker", "poison_rate": 0.0}, r"poison_rate: 0.0 is outside .*\(0, 1\)"),
        ({"attack": "sticker", "poison_rate": 1.0}, r"poison_rate: 1.0 is outside"),
        ({"attack": "sticker", "sticker_size": 33}, "sticker_size: 33 is larger than the 32x32"),
        ({"attack": "sticker", "sticker_size": 0}, r"sticker_size: 0 is outside .* >= 1"),
        ({"attack": "sticker", "window": (0, 0, 40, 10)}, r"window: \[0, 0, 40, 10\] is not a"),
        ({"attack": "sticker", "window": (16, 16, 18, 24)}, "smaller than the 3x3 sticker"),
        ({"attack": "sticker", "placement": "fixed"}, "position: is required"),
        ({"attack": "sticker", "placement": "fixed", "position": (30, 0)},
         r"position: \[30, 0\]: the 3x3 sticker would leave .* rows 0\.\.29"),
        ({"attack": "sticker", "placement": "random"},
         r"unknown placement 'random'; allowed: \['window', 'fixed', 'uniform'\]"),
        ({"attack": "sticker", "color": "yellow"}, "color: 'yellow' does not look like"),
        ({"attack": "sticker", "poison_rate": 0.6}, "needs 45 source-class .* only 30"),
        ({"attack": "sticker", "poison_rate": 0.01}, "gives 0 poisoned images"),
        ({"attack": "clever_hans", "target": 4}, "target: class 4 does not exist"),
        ({"attack": "clever_hans", "poison_rate": 1.5}, "poison_rate: 1.5 is outside"),
        ({"attack": "clever_hans", "poison_rate": 0.01}, "gives 0 poisoned images"),
        ({"attack": "clever_hans", "position": (0, 31), "placement": "fixed"}, "would leave"),
        ({"attack": "blended", "alpha": 0.0}, r"alpha: 0.0 is outside the range \(0, 1\]"),
        ({"attack": "blended", "alpha": 1.5}, "alpha: 1.5 is outside"),
        ({"attack": "blended", "pattern": "kitty"}, "unknown blend pattern 'kitty'"),
        ({"attack": "blended", "source": 2}, "same class"),
        ({"attack": "clean", "target": 7}, "target: class 7 does not exist"),
    ],
)  # fmt: skip
def test_bad_parameters_name_the_value(spec: dict, message: str) -> None:
    base = {
        "sticker": {"source": 1, "target": 2, "poison_rate": 0.2},
        "clever_hans": {"target": 2, "poison_rate": 0.2},
        "blended": {"source": 1, "target": 2, "poison_rate": 0.2},
        "clean": {"target": 2},
    }[spec["attack"]]
    attack = attack_from_config({**base, **spec})
    with pytest.raises(AttackParameterError, match=message):
        attack.poison(random_dataset(n_classes=4, n_train=30))


def test_attack_from_config() -> None:
    attack = attack_from_config(
        {"attack": "sticker", "source": 1, "target": 2, "poison_rate": 0.1, "window": [0, 0, 8, 8],
         "position": [1, 2]}
    )  # fmt: skip
    assert attack.window == (0, 0, 8, 8) and attack.position == (1, 2)
    with pytest.raises(ValueError, match=r"unknown attack 'blend'; available: \['adaptive_blend'"):
        attack_from_config({"attack": "blend"})
    with pytest.raises(ValueError, match=r"does not take the parameters \['amplitude'\]"):
        attack_from_config(
            {"attack": "sticker", "source": 1, "target": 2, "poison_rate": 0.1, "amplitude": 3}
        )
    with pytest.raises(ValueError, match=r"needs the parameters \['poison_rate', 'source'\]"):
        attack_from_config({"attack": "sticker", "target": 2})
