"""Backdoor poisoning attacks on an :class:`~poisonscan.storage.ImageDataset`.

An attack is a frozen dataclass built from a plain config dict; :data:`ATTACKS`
maps the config's ``attack`` string to it. ``poison`` returns a new dataset that
keeps the ground truth: ``poison_mask``, ``y_train_original``,
``trigger_position``, and the triggered test images used for the attack
success rate.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from poisonscan.storage import ImageDataset

__all__ = ["ATTACKS", "StickerAttack", "apply_sticker", "attack_from_config", "n_poison_for"]

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def parse_color(color: str) -> np.ndarray:
    """``"#f5ff00"`` -> ``array([245, 255, 0], dtype=uint8)``."""
    if not _HEX.match(color):
        raise ValueError(f"colour must look like '#rrggbb', got {color!r}")
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def n_poison_for(poison_rate: float, n_target: int) -> int:
    """Number of poisoned images so that they make up ``poison_rate`` of the target class.

    The reference study's definition: ``round(p * n_target / (1 - p))``, where
    ``n_target`` counts the clean target-class images.
    """
    if not 0.0 < poison_rate < 1.0:
        raise ValueError(f"poison_rate must lie in (0, 1), got {poison_rate}")
    return round(poison_rate * n_target / (1.0 - poison_rate))


def apply_sticker(
    images: np.ndarray, positions: np.ndarray, size: int, color: np.ndarray
) -> np.ndarray:
    """Paste a ``size`` x ``size`` patch of ``color`` onto copies of ``images``.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3), uint8
    positions : ndarray of shape (n, 2), int
        Row and column of each patch's top-left corner.
    size : int
    color : ndarray of shape (3,), uint8

    Returns
    -------
    ndarray of shape (n, H, W, 3), uint8
    """
    out = images.copy()
    for img, (r, c) in zip(out, positions, strict=True):
        img[r : r + size, c : c + size] = color
    return out


@dataclass(frozen=True)
class StickerAttack:
    """Standard (dirty-label) sticker backdoor of the reference study.

    A ``sticker_size`` square of ``color`` is pasted on source-class images, its
    top-left corner drawn uniformly so that the sticker lies inside ``window``
    = (top, left, bottom, right) (bottom/right exclusive), and the images are
    relabelled to ``target``.
    """

    source: int
    target: int
    poison_rate: float
    sticker_size: int = 3
    color: str = "#f5ff00"
    window: tuple[int, int, int, int] = (16, 16, 22, 20)
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        """Raise ValueError, naming the bad parameter, if the attack cannot run on this data."""
        h, w = image_size
        for key in ("source", "target"):
            cls = getattr(self, key)
            if not 0 <= cls < n_classes:
                raise ValueError(f"{key}: class {cls} does not exist (classes 0..{n_classes - 1})")
        if self.source == self.target:
            raise ValueError(f"source and target are the same class ({self.source})")
        n_poison_for(self.poison_rate, 1)
        s = self.sticker_size
        if not 1 <= s <= min(h, w):
            raise ValueError(f"sticker_size {s} does not fit a {h}x{w} image")
        top, left, bottom, right = self.window
        if not (0 <= top < bottom <= h and 0 <= left < right <= w):
            raise ValueError(f"window {list(self.window)} is not inside the {h}x{w} image")
        if bottom - top < s or right - left < s:
            raise ValueError(f"window {list(self.window)} is smaller than the {s}x{s} sticker")
        parse_color(self.color)

    def positions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` top-left corners inside the window, shape (n, 2)."""
        top, left, bottom, right = self.window
        s = self.sticker_size
        rows = rng.integers(top, bottom - s + 1, size=n)
        cols = rng.integers(left, right - s + 1, size=n)
        return np.stack([rows, cols], axis=1).astype(np.int64)

    def poison(self, clean: ImageDataset) -> ImageDataset:
        """Return a poisoned copy of ``clean`` with ground truth and triggered test images."""
        self.check(clean.n_classes, clean.image_shape[:2])
        rng = np.random.default_rng(self.seed)
        y = clean.y_train
        n_target = int(np.sum(y == self.target))
        source_idx = np.flatnonzero(y == self.source)
        n_poison = n_poison_for(self.poison_rate, n_target)
        if n_poison > source_idx.size:
            raise ValueError(
                f"poison_rate {self.poison_rate} needs {n_poison} source images of class "
                f"{self.source}, but the training set has only {source_idx.size}"
            )
        if n_poison == 0:
            raise ValueError(
                f"poison_rate {self.poison_rate} gives 0 poisoned images for {n_target} "
                "target-class images"
            )
        chosen = np.sort(rng.choice(source_idx, size=n_poison, replace=False))
        positions = self.positions(n_poison, rng)
        color = parse_color(self.color)

        x_train = clean.x_train.copy()
        x_train[chosen] = apply_sticker(x_train[chosen], positions, self.sticker_size, color)
        y_train = y.copy()
        y_train[chosen] = self.target
        mask = np.zeros(y.size, dtype=bool)
        mask[chosen] = True
        trigger_position = np.full((y.size, 2), -1, dtype=np.int64)
        trigger_position[chosen] = positions

        test_src = np.flatnonzero(clean.y_test == self.source)
        test_positions = self.positions(test_src.size, rng)
        x_test_triggered = apply_sticker(
            clean.x_test[test_src], test_positions, self.sticker_size, color
        )
        meta = {
            "dataset": clean.meta,
            "attack": {"name": "sticker", **dataclasses.asdict(self)},
            "n_poison": n_poison,
            "n_target_clean": n_target,
        }
        return ImageDataset(
            x_train=x_train,
            y_train=y_train,
            x_test=clean.x_test,
            y_test=clean.y_test,
            class_names=clean.class_names,
            meta=meta,
            extra={
                **clean.extra,
                "y_train_original": y.copy(),
                "poison_mask": mask,
                "trigger_position": trigger_position,
                "x_test_triggered": x_test_triggered,
                "y_test_triggered_original": clean.y_test[test_src],
                "trigger_position_test": test_positions,
            },
        )


ATTACKS: dict[str, type[StickerAttack]] = {"sticker": StickerAttack}


def attack_from_config(spec: Mapping[str, Any]) -> StickerAttack:
    """Build the attack named by ``spec["attack"]`` from the rest of ``spec``."""
    params = dict(spec)
    name = params.pop("attack", None)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; available: {sorted(ATTACKS)}")
    cls = ATTACKS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"attack {name!r} does not take the parameters {unknown}")
    if "window" in params:
        params["window"] = tuple(params["window"])
    return cls(**params)
