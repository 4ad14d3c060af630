"""Adaptive-Blend and Adaptive-Patch: attacks built to defeat latent-separation detectors.

Qi, Xie, Li, Mahloujifar, Mittal, "Revisiting the assumption of latent separability for
backdoor defenses", ICLR 2023. Two devices keep the poisoned images' latent
representations close to the clean ones: *conservatism* (cover) images carry the
trigger but keep their true labels, and the training-time trigger is weakened: split
into pieces of which only some are present (Adaptive-Blend) or several weak patch
triggers of which each image carries one (Adaptive-Patch), while the test-time trigger
is the full, stronger one. The defaults are backdoor-toolbox's (vtu81,
``poison_tool_box/adaptive_blend.py``, ``adaptive_patch.py``, ``config.py``, README):

- Adaptive-Blend: a photograph blended with alpha 0.15 at training time and 0.2 at test
  time, 16 pieces (a 4 x 4 grid) of which half are masked per image, as many cover images
  as payload images (``-poison_rate 0.003 -cover_rate 0.003`` of the whole set).
- Adaptive-Patch: four patch triggers with training alphas 0.5, 0.2, 0.5, 0.3, each
  image carrying one (the payload and the cover images split into quarters); at test time
  two of them together at alpha 1 (GTSRB: the second and the fourth); twice as many cover
  images as payload images (``-poison_rate 0.003 -cover_rate 0.006``). The toolbox's
  trigger images (phoenix and firefox logos, a 4 px BadNets patch, TrojanNN's square)
  are not shipped here; the four triggers are this package's own patches of the same
  kinds: a photograph, two random black/white patterns and a square frame, one per corner.

Payload images come from every non-target class and are relabelled to ``target``; cover
images come from every class (``extra["cover_mask"]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from poisonscan.attacks.base import (
    Attack,
    AttackParameterError,
    check_class,
    check_count,
    check_number,
    check_rate,
    choose,
    cover_arrays,
    n_poison_for,
    poisoned_dataset,
    register_attack,
)
from poisonscan.attacks.triggers import (
    BLEND_PATTERNS,
    Box,
    Patch,
    check_corner_patches,
    make_blend_pattern,
    patch_pixels,
)
from poisonscan.storage import ImageDataset

__all__ = ["AdaptiveBlendAttack", "AdaptivePatchAttack", "piece_masks"]


def piece_masks(
    n: int, pieces: int, masked: int, image_size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random piece masks of a ``sqrt(pieces)`` x ``sqrt(pieces)`` grid over the image.

    Returns
    -------
    kept : ndarray of shape (n, pieces), bool
        The pieces present in each image (``pieces - masked`` of them), row-major.
    masks : ndarray of shape (n, H, W), float64
        1 where the trigger is present.
    """
    side = math.isqrt(pieces)
    h, w = image_size
    kept = np.ones((n, pieces), dtype=bool)
    for row in kept:
        row[rng.choice(pieces, size=masked, replace=False)] = False
    grid = kept.reshape(n, side, side).astype(np.float64)
    masks = np.repeat(np.repeat(grid, h // side, axis=1), w // side, axis=2)
    return kept, masks


def _payload_and_cover(
    attack: Any, clean: ImageDataset, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(clean.y_train, minlength=clean.n_classes)
    n = attack.n_poison(counts)
    chosen = choose(rng, np.flatnonzero(clean.y_train != attack.target), n)
    rest = np.setdiff1d(np.arange(len(clean.y_train)), chosen)
    n_cover = round(attack.cover_ratio * n)
    check_count(max(n_cover, 1), len(rest), "cover")
    return chosen, choose(rng, rest, n_cover) if n_cover else np.zeros(0, np.int64)


class _Adaptive(Attack):
    target: int
    poison_rate: float
    cover_ratio: float
    rate_definition: ClassVar[str] = (
        "n_poison = round(p * n_target / (1 - p)) images of the non-target classes; "
        "round(cover_ratio * n_poison) cover images of any class keep their labels"
    )

    def n_poison(self, class_counts: np.ndarray) -> int:
        counts = np.asarray(class_counts)
        n = n_poison_for(self.poison_rate, int(counts[self.target]))
        return check_count(n, int(counts.sum() - counts[self.target]), "non-target")


@register_attack
@dataclass(frozen=True, kw_only=True)
class AdaptiveBlendAttack(_Adaptive):
    """Adaptive-Blend (see the module docstring).

    Each payload and cover image gets ``x + alpha * mask * (pattern - x)`` with a random
    half (``mask_rate``) of the ``pieces`` masked; ``extra["trigger_pieces"]`` (n, pieces)
    records which pieces each image carries. Test images (every non-target class) get
    the whole pattern at ``test_alpha``.
    """

    name: ClassVar[str] = "adaptive_blend"
    target: int
    poison_rate: float
    cover_ratio: float = 1.0
    alpha: float = 0.15
    test_alpha: float = 0.2
    pieces: int = 16
    mask_rate: float = 0.5
    pattern: str = "image"
    pattern_seed: int = 0
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        check_class("target", self.target, n_classes)
        check_rate(self.poison_rate)
        check_number("cover_ratio", self.cover_ratio, low=0.0)
        check_number("alpha", self.alpha, 0.0, 1.0, low_open=True)
        check_number("test_alpha", self.test_alpha, 0.0, 1.0, low_open=True)
        check_number("mask_rate", self.mask_rate, 0.0, 1.0)
        if self.pattern not in BLEND_PATTERNS:
            raise AttackParameterError(
                "pattern",
                f"unknown blend pattern {self.pattern!r}; allowed: {list(BLEND_PATTERNS)}",
            )
        p = self.pieces
        side = math.isqrt(p) if isinstance(p, int) and not isinstance(p, bool) and p > 0 else 0
        if side * side != p:
            raise AttackParameterError("pieces", f"{p!r} is not a square number (4, 9, 16, ...)")
        if image_size[0] % side or image_size[1] % side:
            raise AttackParameterError(
                "pieces", f"a {side}x{side} grid does not divide the {image_size} image"
            )

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        size = clean.image_shape[:2]
        self.check(clean.n_classes, size)
        rng = np.random.default_rng(self.seed)
        chosen, covered = _payload_and_cover(self, clean, rng)
        changed = np.sort(np.concatenate([chosen, covered]))
        kept, masks = piece_masks(
            len(changed), self.pieces, round(self.mask_rate * self.pieces), size, rng
        )
        pattern = make_blend_pattern(self.pattern, size, self.pattern_seed).astype(np.float64)
        x = clean.x_train[changed].astype(np.float64)
        x_train = clean.x_train.copy()
        x_train[changed] = np.clip(
            np.rint(x + self.alpha * masks[..., None] * (pattern - x)), 0, 255
        ).astype(np.uint8)
        y_train = clean.y_train.copy()
        y_train[chosen] = self.target
        pieces = np.zeros((len(y_train), self.pieces), dtype=bool)
        pieces[changed] = kept
        test_index = np.flatnonzero(clean.y_test != self.target)
        xt = clean.x_test[test_index].astype(np.float64)
        x_test_triggered = np.clip(np.rint(xt + self.test_alpha * (pattern - xt)), 0, 255)
        zeros = np.zeros((len(covered), 2), dtype=np.int64)
        return poisoned_dataset(
            clean, self, x_train=x_train, y_train=y_train, chosen=chosen,
            positions=np.zeros((len(chosen), 2), dtype=np.int64), test_index=test_index,
            x_test_triggered=x_test_triggered.astype(np.uint8),
            test_positions=np.zeros((len(test_index), 2), dtype=np.int64),
            extra={
                **cover_arrays(len(y_train), covered, zeros),
                "trigger_pieces": pieces,
                "trigger_pattern": pattern.astype(np.uint8),
            },
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return [(0, 0, image_size[0], image_size[1])]


_PATCH_KINDS = (("image", 0), ("random", 0), ("random", 1), ("frame", 0))
"""The four triggers' pattern and seed offset; trigger i sits at corner 3 - i
(top-left, top-right, bottom-left, bottom-right; see Patch.corner_positions)."""


@register_attack
@dataclass(frozen=True, kw_only=True)
class AdaptivePatchAttack(_Adaptive):
    """Adaptive-Patch (see the module docstring).

    Payload and cover images are split into four quarters, quarter i carrying trigger i
    blended at ``train_alphas[i]`` (``extra["trigger_index"]``, -1 elsewhere). Test
    images (every non-target class) carry the triggers ``test_triggers`` at alpha 1; the
    recorded test position is that of the first.
    """

    name: ClassVar[str] = "adaptive_patch"
    target: int
    poison_rate: float
    cover_ratio: float = 2.0
    trigger_size: int = 5
    distance: int = 1
    train_alphas: tuple[float, float, float, float] = (0.5, 0.2, 0.5, 0.3)
    test_triggers: tuple[int, ...] = (1, 3)
    pattern_seed: int = 0
    seed: int = 0

    def patches(
        self, image_size: tuple[int, int], alphas: tuple[float, ...] | None = None
    ) -> list[Patch]:
        """The four triggers at their corners, blended at ``alphas`` (``train_alphas``)."""
        alphas = self.train_alphas if alphas is None else alphas
        out = []
        for i, ((kind, offset), alpha) in enumerate(zip(_PATCH_KINDS, alphas, strict=True)):
            pixels = patch_pixels(kind, self.trigger_size, seed=self.pattern_seed + offset)
            at = Patch(pixels, distance=self.distance).corner_positions(image_size)[3 - i]
            out.append(
                Patch(pixels, placement="fixed", position=(int(at[0]), int(at[1])), alpha=alpha)
            )
        return out

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        check_class("target", self.target, n_classes)
        check_rate(self.poison_rate)
        check_number("cover_ratio", self.cover_ratio, low=0.0)
        if len(self.train_alphas) != 4:
            raise AttackParameterError("train_alphas", "needs one alpha per trigger (4)")
        for a in self.train_alphas:
            check_number("train_alphas", a, 0.0, 1.0, low_open=True)
        if not self.test_triggers or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < 4
            for i in self.test_triggers
        ):
            raise AttackParameterError(
                "test_triggers", f"{list(self.test_triggers)}: needs trigger indices in 0..3"
            )
        check_corner_patches(self.trigger_size, self.distance, image_size)

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        size = clean.image_shape[:2]
        self.check(clean.n_classes, size)
        rng = np.random.default_rng(self.seed)
        chosen, covered = _payload_and_cover(self, clean, rng)
        n = len(clean.y_train)
        x_train, y_train = clean.x_train.copy(), clean.y_train.copy()
        y_train[chosen] = self.target
        which = np.full(n, -1, dtype=np.int64)
        where = np.full((n, 2), -1, dtype=np.int64)
        patches = self.patches(size)
        for group in (chosen, covered):
            for i, part in enumerate(np.array_split(group, 4)):
                which[part] = i
                where[part] = patches[i].positions(len(part), rng, size)
                x_train[part] = patches[i].apply(x_train[part], where[part])
        test_index = np.flatnonzero(clean.y_test != self.target)
        full = self.patches(size, (1.0, 1.0, 1.0, 1.0))
        x_test = clean.x_test[test_index]
        for i in self.test_triggers:
            x_test = full[i].apply(x_test, full[i].positions(len(x_test), rng, size))
        first = full[self.test_triggers[0]].positions(len(test_index), rng, size)
        return poisoned_dataset(
            clean, self, x_train=x_train, y_train=y_train, chosen=chosen,
            positions=where[chosen], test_index=test_index, x_test_triggered=x_test,
            test_positions=first,
            extra={**cover_arrays(n, covered, where[covered]), "trigger_index": which},
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        r, c = (int(v) for v in position)
        return [(r, c, self.trigger_size, self.trigger_size)]
