"""Whole-image triggers: SIG, WaNet, FTrojan, and the blended attack's natural image.

Each attack is tested on the property that defines it (not only shapes), on its ground
truth, its determinism, its montage and its config validation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, random_dataset
from scipy.fft import dctn

from poisonscan.attacks import (
    ATTACKS,
    AttackParameterError,
    BlendedAttack,
    FTrojanAttack,
    SIGAttack,
    WaNetAttack,
    attack_from_config,
    attack_from_meta,
    n_poison_for,
    save_attack_montage,
    trigger_footprint,
)
from poisonscan.attacks.ftrojan import blockwise_dct, frequency_trigger, rgb_to_ycbcr
from poisonscan.attacks.sig import apply_sig, sig_signal
from poisonscan.attacks.triggers import make_blend_pattern, natural_image
from poisonscan.attacks.wanet import identity_grid, warp, warping_grid
from poisonscan.config import ConfigError, load_schema, validate_config
from poisonscan.storage import ImageDataset, read_dataset, write_dataset

SCHEMA = load_schema(REPO / "config" / "schema.yaml")


def mid_range_dataset(n_classes: int = 4, n_train: int = 30, seed: int = 0) -> ImageDataset:
    """Random images in 60..190, so that small triggers are never clipped."""
    ds = random_dataset(n_classes=n_classes, n_train=n_train, seed=seed)

    def squeeze(x: np.ndarray) -> np.ndarray:
        return (60 + x.astype(np.int64) * 130 // 255).astype(np.uint8)

    return dataclasses.replace(ds, x_train=squeeze(ds.x_train), x_test=squeeze(ds.x_test))


def assert_whole_image_ground_truth(clean: ImageDataset, out: ImageDataset) -> None:
    mask = out.extra["poison_mask"]
    assert np.all(out.extra["trigger_position"][mask] == 0)
    assert np.all(out.extra["trigger_position"][~mask] == -1)
    assert np.all(out.extra["trigger_position_test"] == 0)
    assert np.array_equal(out.extra["y_train_original"], clean.y_train)
    assert trigger_footprint(out.meta, np.array([0, 0]), clean.image_shape[:2]).all()
    assert np.array_equal(
        out.extra["y_test_triggered_original"], clean.y_test[out.extra["test_triggered_index"]]
    )


# --------------------------------------------------------------------------- SIG


def test_sig_adds_a_column_sinusoid_to_target_images_and_keeps_labels() -> None:
    clean = random_dataset(n_classes=4, n_train=30)
    attack = SIGAttack(target=2, poison_rate=0.4, delta=20, frequency=6, test_delta=35)
    out = attack.poison(clean)
    mask = out.extra["poison_mask"]
    assert mask.sum() == round(0.4 * 30) == out.meta["n_poison"]
    assert np.array_equal(out.y_train, clean.y_train)  # clean label
    assert np.all(clean.y_train[mask] == 2)  # only target-class images
    assert np.array_equal(out.x_train[~mask], clean.x_train[~mask])
    assert_whole_image_ground_truth(clean, out)

    v = 20 * np.sin(2 * np.pi * np.arange(32) * 6 / 32)
    assert np.allclose(out.extra["trigger_signal"], v)
    x = clean.x_train[mask].astype(np.float64)
    diff = out.x_train[mask].astype(np.float64) - x
    unclipped = (x + v[None, None, :, None] >= 0) & (x + v[None, None, :, None] <= 255)
    expected = np.broadcast_to(np.rint(v)[None, None, :, None], diff.shape)
    assert unclipped.mean() > 0.8
    # a function of the column only: the same change in every row and channel
    assert np.array_equal(diff[unclipped], expected[unclipped])
    assert np.array_equal(out.x_train[mask], np.clip(np.rint(x + v[None, None, :, None]), 0, 255))
    # of frequency f: the signal's spectrum peaks at f periods per width
    assert np.argmax(np.abs(np.fft.rfft(out.extra["trigger_signal"]))) == 6

    idx = out.extra["test_triggered_index"]
    assert np.array_equal(idx, np.flatnonzero(clean.y_test != 2))
    assert np.all(out.extra["y_test_triggered_target"] == 2)
    assert np.array_equal(out.extra["x_test_triggered"], apply_sig(clean.x_test[idx], 35, 6))


def test_sig_signal_and_defaults() -> None:
    assert np.allclose(sig_signal(8, 10.0, 2.0), 10 * np.sin(np.pi * np.arange(8) / 2))
    attack = SIGAttack(target=0, poison_rate=0.1)
    assert (attack.delta, attack.frequency, attack.test_delta) == (40.0, 6.0, None)
    flat = np.full((1, 4, 16, 3), 100, dtype=np.uint8)
    out = apply_sig(flat, 40.0, 4.0)
    assert np.all(out == out[:, :1])  # identical rows
    assert np.array_equal(out[0, 0, :, 0], np.rint(100 + sig_signal(16, 40.0, 4.0)))


# --------------------------------------------------------------------------- WaNet


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_wanet_field_is_smooth_and_small(seed: int) -> None:
    grid = warping_grid((32, 32), k=4, s=0.5, grid_rescale=1.0, seed=seed)
    assert grid.shape == (32, 32, 2) and np.all(np.abs(grid) <= 1)
    disp = (grid - identity_grid((32, 32))) * 31 / 2  # in pixels
    inner = disp[1:-1, 1:-1]  # the border rows and columns are clamped to the image
    step = max(np.abs(np.diff(inner, axis=0)).max(), np.abs(np.diff(inner, axis=1)).max())
    assert step < 0.35 * np.abs(inner).max()  # neighbours move alike (a random field: ~2)
    assert 0.05 < np.abs(inner).max() < 2.0  # a sub-pixel to pixel-sized warp at s = 0.5
    # the same field from the same seed; another seed, another field
    assert np.array_equal(grid, warping_grid((32, 32), seed=seed))
    assert not np.allclose(grid, warping_grid((32, 32), seed=seed + 10))


def test_wanet_warp_is_a_resampling() -> None:
    grid = warping_grid((32, 32), k=4, s=2.0, seed=5)
    const = np.full((2, 32, 32, 3), 137, dtype=np.uint8)
    assert np.array_equal(warp(const, grid), const)  # no pixel value is made up
    # bilinear sampling reproduces a ramp: x = column, align_corners=True
    ramp = np.broadcast_to((np.arange(32) * 8)[None, None, :, None], (1, 32, 32, 3))
    expected = np.rint((grid[..., 0] + 1) / 2 * 31 * 8)
    assert np.array_equal(warp(ramp.astype(np.uint8), grid)[0, ..., 0], expected)
    # s = 0 is the identity
    images = random_dataset(n_train=2).x_train
    assert np.array_equal(warp(images, warping_grid((32, 32), s=0.0)), images)


def test_wanet_poisons_relabels_and_adds_noise_mode_images() -> None:
    clean = random_dataset(n_classes=4, n_train=30)
    attack = WaNetAttack(target=1, poison_rate=0.2, s=1.0, grid_seed=3)
    out = attack.poison(clean)
    mask, cross = out.extra["poison_mask"], out.extra["cross_mask"]
    n = n_poison_for(0.2, 30)
    assert mask.sum() == n == out.meta["n_poison"]
    assert cross.sum() == 2 * n == out.meta["n_cross"] and not np.any(mask & cross)
    assert np.all(clean.y_train[mask] != 1) and np.all(out.y_train[mask] == 1)
    assert np.array_equal(out.y_train[cross], clean.y_train[cross])  # noise mode keeps labels
    assert np.array_equal(out.y_train[~mask], clean.y_train[~mask])
    untouched = ~mask & ~cross
    assert np.array_equal(out.x_train[untouched], clean.x_train[untouched])
    assert_whole_image_ground_truth(clean, out)
    grid = out.extra["trigger_grid"]
    assert np.array_equal(grid, warping_grid((32, 32), 4, 1.0, 1.0, seed=3))
    assert np.array_equal(out.x_train[mask], warp(clean.x_train[mask], grid))
    # noise-mode images: warped, but not with the trigger's own grid
    exact = warp(clean.x_train[cross], grid)
    assert not np.any(np.all(out.x_train[cross] == exact, axis=(1, 2, 3)))
    assert np.mean(np.abs(out.x_train[cross].astype(int) - exact)) < 40
    idx = out.extra["test_triggered_index"]
    assert np.array_equal(idx, np.flatnonzero(clean.y_test != 1))
    assert np.array_equal(out.extra["x_test_triggered"], warp(clean.x_test[idx], grid))
    # one source class; the trigger does not depend on seed
    one = WaNetAttack(target=1, poison_rate=0.2, source=3, seed=9, grid_seed=3, s=1.0)
    other = one.poison(clean)
    assert np.all(clean.y_train[other.extra["poison_mask"]] == 3)
    assert np.all(clean.y_test[other.extra["test_triggered_index"]] == 3)
    assert np.array_equal(other.extra["trigger_grid"], grid)


# --------------------------------------------------------------------------- FTrojan


def test_ftrojan_changes_only_the_chosen_chroma_frequencies() -> None:
    clean = mid_range_dataset()
    attack = FTrojanAttack(target=0, poison_rate=0.25)
    out = attack.poison(clean)
    mask = out.extra["poison_mask"]
    assert mask.sum() == n_poison_for(0.25, 30) and np.all(clean.y_train[mask] != 0)
    assert np.all(out.y_train[mask] == 0)
    assert_whole_image_ground_truth(clean, out)

    diff = out.x_train[mask].astype(np.float64) - clean.x_train[mask]
    ycc = rgb_to_ycbcr(diff)  # (n, H, W, 3)
    assert np.abs(ycc[..., 0]).max() <= 1.0  # luminance: rounding only
    chosen = np.zeros((32, 32), dtype=bool)
    chosen[15, 15] = chosen[31, 31] = True
    for ch in (1, 2):
        coeffs = dctn(ycc[..., ch], type=2, norm="ortho", axes=(1, 2))
        energy = coeffs**2
        share = energy[:, chosen].sum(axis=1) / energy.sum(axis=(1, 2))
        assert np.all(share > 0.9)  # the rest is the rounding to integers
        assert np.allclose(coeffs[:, chosen], 30, atol=2.0)
    # invisible: at most 2 * magnitude * 2 / 32 per chroma channel, <= 7 per RGB value
    assert np.abs(diff).max() <= 7
    assert np.abs(out.extra["trigger_delta"]).max() <= 1.772 * 2 * 30 * 2 / 32 + 1e-9


def test_ftrojan_trigger_equals_the_dct_route_and_tiles_blocks() -> None:
    from scipy.fft import idctn

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(32, 32, 3))
    for win in (32, 16):
        ycc = rgb_to_ycbcr(x)
        pos = ((3, 5), (win - 1, win - 1))
        for ch in (1, 2):
            blocks = ycc[..., ch].reshape(32 // win, win, 32 // win, win)
            c = dctn(blocks, type=2, norm="ortho", axes=(1, 3))
            for r, q in pos:
                c[:, r, :, q] += 12.5
            ycc[..., ch] = idctn(c, type=2, norm="ortho", axes=(1, 3)).reshape(32, 32)
        expected = ycc @ np.linalg.inv(
            np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                      [0.5, -0.418688, -0.081312]])
        ).T  # fmt: skip
        delta = frequency_trigger((32, 32), win, pos, 12.5)
        assert np.allclose(x + delta, expected, atol=1e-9)
        coeffs = blockwise_dct(rgb_to_ycbcr(delta)[..., 1], win)
        last = 32 - win  # the top-left corner of the last block
        assert np.isclose(coeffs[3, 5], 12.5) and np.isclose(coeffs[last + 3, last + 5], 12.5)


# --------------------------------------------------------------------------- blended image


def test_blended_natural_image_and_all_to_one() -> None:
    img = natural_image((32, 32))
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert img.std() > 20 and len(np.unique(img)) > 100  # a photograph, not a flat pattern
    assert np.array_equal(make_blend_pattern("image", (32, 32), seed=5), img)
    assert natural_image((24, 40)).shape == (24, 40, 3)
    clean = random_dataset(n_classes=4, n_train=30)
    attack = BlendedAttack(source=None, target=3, poison_rate=0.2, pattern="image", alpha=0.1)
    out = attack.poison(clean)
    mask = out.extra["poison_mask"]
    assert mask.sum() == n_poison_for(0.2, 30) and np.all(clean.y_train[mask] != 3)
    assert len(np.unique(clean.y_train[mask])) > 1 and np.all(out.y_train[mask] == 3)
    expected = np.rint(0.9 * clean.x_train[mask] + 0.1 * img.astype(np.float64))
    assert np.array_equal(out.x_train[mask], expected)
    assert np.array_equal(out.extra["test_triggered_index"], np.flatnonzero(clean.y_test != 3))
    assert out.extra["x_test_triggered"].shape[0] == 30


# --------------------------------------------------------------------------- all four

SPECS: dict[str, dict[str, Any]] = {
    "sig": {"attack": "sig", "target": 1, "poison_rate": 0.3},
    "wanet": {"attack": "wanet", "target": 1, "poison_rate": 0.2},
    "ftrojan": {"attack": "ftrojan", "target": 1, "poison_rate": 0.2,
                "positions": [[15, 15], [31, 31]]},
    "blended": {"attack": "blended", "source": None, "target": 1, "poison_rate": 0.2,
                "pattern": "image"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SPECS))
def test_same_seed_is_bit_identical_and_other_seed_differs(name: str, tmp_path: Path) -> None:
    clean = random_dataset(n_train=30)
    a = attack_from_config({**SPECS[name], "seed": 7})
    first, second = a.poison(clean), a.poison(clean)
    assert first.meta == second.meta and sorted(first.extra) == sorted(second.extra)
    for key in first.extra:
        assert np.array_equal(first.extra[key], second.extra[key]), key
    assert np.array_equal(first.x_train, second.x_train)
    write_dataset(tmp_path / "p.h5", first)
    back = read_dataset(tmp_path / "p.h5")
    assert back.meta == first.meta and attack_from_meta(back.meta) == a
    for key in first.extra:
        assert np.array_equal(back.extra[key], first.extra[key]), key
    other = attack_from_config({**SPECS[name], "seed": 8}).poison(clean)
    assert not np.array_equal(other.extra["poison_mask"], first.extra["poison_mask"])


def test_registered_and_montage(tmp_path: Path) -> None:
    assert {"sig", "wanet", "ftrojan", "blended"} <= set(ATTACKS)
    clean = random_dataset(n_train=20)
    titles = {
        "sig": "sig, class 1, p = 0.3, 6 images, sinusoid delta 40, f 6, labels kept",
        "wanet": "wanet, every other class -> 1, p = 0.2, 5 images, warp k 4, s 0.5, rescale 1, "
        "10 noise-mode images (cross ratio 2)",
        "ftrojan": "ftrojan, every other class -> 1, p = 0.2, 5 images, DCT (15,15) (31,31) of "
        "UV += 30, window 32",
        "blended": "blended, every other class -> 1, p = 0.2, 5 images, image alpha 0.2",
    }
    from poisonscan.attacks.montage import attack_title

    for name, spec in SPECS.items():
        out = attack_from_config(spec).poison(clean)
        assert attack_title(out.meta) == titles[name]
        save_attack_montage(clean, out, tmp_path / f"{name}.png", n=4)
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"attack": "sig", "frequency": 16}, r"frequency: 16 is outside the range \(0, 16\)"),
        ({"attack": "sig", "frequency": 0}, r"frequency: 0 is outside the range \(0, inf\)"),
        ({"attack": "sig", "delta": 0}, r"delta: 0 is outside the range \(0, 255\]"),
        ({"attack": "sig", "test_delta": 300}, r"test_delta: 300 is outside"),
        ({"attack": "sig", "poison_rate": 1.0}, r"poison_rate: 1.0 is outside"),
        ({"attack": "sig", "poison_rate": 0.01}, "gives 0 poisoned images"),
        ({"attack": "wanet", "k": 1}, r"k: 1 is outside the range 2\.\.32"),
        ({"attack": "wanet", "k": 2.5}, "k: 2.5 is not an integer"),
        ({"attack": "wanet", "s": -0.5}, r"s: -0.5 is outside the range \[0, inf\)"),
        ({"attack": "wanet", "grid_rescale": 0}, "grid_rescale: 0 is outside"),
        ({"attack": "wanet", "cross_ratio": 30}, "cross_ratio: 8 poisoned and 240 noise-mode"),
        ({"attack": "wanet", "source": 2}, "target: source and target are the same class"),
        ({"attack": "wanet", "poison_rate": 0.0}, r"poison_rate: 0.0 is outside"),
        ({"attack": "ftrojan", "magnitude": 0}, "magnitude: 0 is outside"),
        ({"attack": "ftrojan", "window_size": 64}, "window_size: 64 does not divide .* smaller"),
        ({"attack": "ftrojan", "window_size": 12}, "window_size: 12 does not divide the 32x32"),
        ({"attack": "ftrojan", "positions": [[32, 1]]},
         r"positions: \[32, 1\] is not a \[row, col\] DCT coefficient of a 32x32 window"),
        ({"attack": "ftrojan", "positions": [[1, 1], [1, 1]]}, "repeats a coefficient"),
        ({"attack": "ftrojan", "positions": []}, "positions: .* not a non-empty list"),
        ({"attack": "blended", "source": None, "pattern": "kitty"}, "unknown blend pattern"),
        ({"attack": "blended", "source": None, "poison_rate": 0.9}, "needs 270 non-target"),
    ],
)  # fmt: skip
def test_bad_parameters_name_the_key(spec: dict, message: str) -> None:
    base: dict[str, Any] = {"target": 2, "poison_rate": 0.2}
    if spec["attack"] == "blended":
        base["source"] = 1
    attack = attack_from_config({**base, **spec})
    with pytest.raises(AttackParameterError, match=message):
        attack.poison(random_dataset(n_classes=4, n_train=30))


def config(size: int = 32, **scenarios: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset": {"name": "synthetic", "n_train_per_class": 40, "image_size": size},
        "scenarios": scenarios,
    }


def test_schema_defaults_are_the_attack_defaults() -> None:
    cfg = validate_config(config(**{k: v for k, v in SPECS.items()}), SCHEMA)
    for name, spec in cfg["scenarios"].items():
        cls = ATTACKS[spec["attack"]]
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.default is not dataclasses.MISSING
        }
        given = SPECS[name]
        for key, value in defaults.items():
            if key not in given:
                assert json.loads(json.dumps(value)) == spec[key], (name, key)
        assert set(spec) == {"attack"} | {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        attack_from_config(spec)


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("sig", {"frequency": 0}, r"sig.frequency': 0 is less than or equal to the minimum"),
        ("sig", {"frequency": 20}, r"sig.frequency': 20 is outside the range \(0, 16\)"),
        ("sig", {"poison_rate": 1}, r"sig.poison_rate': 1 is greater than or equal"),
        ("sig", {"poison_rate": 0}, r"sig.poison_rate': 0 is less than or equal"),
        ("sig", {"source": 0}, r"'source' was unexpected"),
        ("wanet", {"k": 1}, r"wanet.k': 1 is less than the minimum of 2"),
        ("wanet", {"k": 33}, r"wanet.k': 33 is outside the range 2\.\.32"),
        ("wanet", {"s": -0.1}, r"wanet.s': -0.1 is less than the minimum of 0"),
        ("wanet", {"cross_ratio": 50}, r"wanet.cross_ratio': 10 poisoned and 500 noise-mode"),
        ("wanet", {"source": 1}, r"scenarios.wanet': source and target are both class 1"),
        ("wanet", {"poison_rate": 0.001}, r"wanet.poison_rate': gives 0 poisoned images"),
        ("ftrojan", {"magnitude": 0}, r"ftrojan.magnitude': 0 is less than or equal"),
        ("ftrojan", {"window_size": 64}, r"ftrojan.window_size': 64 does not divide"),
        ("ftrojan", {"positions": [[15, 40]]}, r"ftrojan.positions': \[15, 40\] is not a"),
        ("ftrojan", {"positions": [[15]]}, r"ftrojan.positions.0': \[15\] is too short"),
        ("blended", {"pattern": "kitty"}, r"blended.pattern': 'kitty' is not allowed"),
    ],
)  # fmt: skip
def test_bad_scenario_values_stop_at_validation(name: str, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(config(x=SPECS["sig"], **{name: {**SPECS[name], **change}}), SCHEMA)


def test_image_too_small_for_the_window() -> None:
    with pytest.raises(ConfigError, match=r"ftrojan.window_size': 32 does not divide the 16x16"):
        validate_config(config(size=16, ftrojan=SPECS["ftrojan"]), SCHEMA)
    small = {**SPECS["ftrojan"], "window_size": 8, "positions": [[3, 3], [7, 7]]}
    cfg = validate_config(config(size=16, ftrojan=small), SCHEMA)
    assert cfg["scenarios"]["ftrojan"]["magnitude"] == 30
