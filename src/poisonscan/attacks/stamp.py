"""Attacks that stamp a fixed trigger: dirty-label sticker, Clever Hans, blended.

=================  ==========================  ===================  =========================
attack             changed training images     label                test-time trigger on
=================  ==========================  ===================  =========================
``sticker``        n_poison_for(p, n_target)   source -> target     every source-class image
                   source-class images
``clever_hans``    round(p * n_target)         kept                 every non-target image
                   target-class images
``blended``        n_poison_for(p, n_target)   source -> target     every source-class image
                   source-class images                              (any non-target image
                   (any non-target image                            when source is null)
                   when source is null)
=================  ==========================  ===================  =========================

Random choices (which images, sticker positions) come from one
``numpy.random.default_rng(seed)`` in a fixed order: the images, then the
training positions, then the test positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from poisonscan.attacks.base import (
    Attack,
    AttackParameterError,
    check_class,
    check_count,
    check_rate,
    check_source_target,
    choose,
    n_poison_for,
    poisoned_dataset,
    register_attack,
    source_indices,
)
from poisonscan.attacks.triggers import (
    BLEND_PATTERNS,
    Blend,
    Box,
    Sticker,
    make_blend_pattern,
)
from poisonscan.storage import ImageDataset

__all__ = ["BlendedAttack", "CleverHansAttack", "StickerAttack"]


@dataclass(frozen=True, kw_only=True)
class StickerFields:
    """The sticker parameters shared by the sticker-type attacks (see :class:`Sticker`)."""

    sticker_size: int = 3
    color: str = "#f5ff00"
    placement: str = "window"
    window: tuple[int, int, int, int] = (16, 16, 22, 20)
    position: tuple[int, int] | None = None

    @property
    def sticker(self) -> Sticker:
        return Sticker(self.sticker_size, self.color, self.placement, self.window, self.position)


def _stamp(
    clean: ImageDataset,
    attack: Attack,
    trigger: Any,
    candidates: np.ndarray,
    n: int,
    relabel_to: int | None,
    test_index: np.ndarray,
    rng: np.random.Generator,
    extra: dict[str, np.ndarray] | None = None,
) -> ImageDataset:
    """Stamp ``trigger`` on ``n`` of ``candidates`` (and on every ``test_index`` test image)."""
    size = clean.image_shape[:2]
    chosen = choose(rng, candidates, n)
    positions = trigger.positions(n, rng, size)
    x_train = clean.x_train.copy()
    x_train[chosen] = trigger.apply(x_train[chosen], positions)
    y_train = clean.y_train.copy()
    if relabel_to is not None:
        y_train[chosen] = relabel_to
    test_positions = trigger.positions(test_index.size, rng, size)
    x_test_triggered = trigger.apply(clean.x_test[test_index], test_positions)
    return poisoned_dataset(
        clean, attack, x_train=x_train, y_train=y_train, chosen=chosen, positions=positions,
        test_index=test_index, x_test_triggered=x_test_triggered, test_positions=test_positions,
        extra=extra,
    )  # fmt: skip


class _SourceTarget(Attack):
    """Source -> target relabelling attacks with the reference rate definition."""

    source: int
    target: int
    poison_rate: float
    rate_definition: ClassVar[str] = (
        "n_poison = round(p * n_target / (1 - p)) source-class images, so that the poisoned "
        "images make up the share p of the target class after poisoning"
    )

    def _check_classes(self, n_classes: int) -> None:
        check_class("source", self.source, n_classes)
        check_class("target", self.target, n_classes)
        if self.source == self.target:
            raise AttackParameterError(
                "target", f"source and target are the same class ({self.source})"
            )
        check_rate(self.poison_rate)

    def n_poison(self, class_counts: np.ndarray) -> int:
        n = n_poison_for(self.poison_rate, int(class_counts[self.target]))
        return check_count(n, int(class_counts[self.source]), f"source-class ({self.source})")


@register_attack
@dataclass(frozen=True, kw_only=True)
class StickerAttack(StickerFields, _SourceTarget):
    """Standard (dirty-label) sticker backdoor of the reference study (BadNets).

    A ``sticker_size`` square of ``color`` is pasted on ``n_poison_for(p,
    n_target)`` source-class images and they are relabelled to ``target``; the
    attack success rate is measured on every source-class test image with a
    sticker (same placement rule).
    """

    name: ClassVar[str] = "sticker"
    source: int
    target: int
    poison_rate: float
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        self._check_classes(n_classes)
        self.sticker.check(image_size)

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        self.check(clean.n_classes, clean.image_shape[:2])
        n = self.n_poison(np.bincount(clean.y_train, minlength=clean.n_classes))
        return _stamp(
            clean, self, self.sticker, np.flatnonzero(clean.y_train == self.source), n,
            self.target, np.flatnonzero(clean.y_test == self.source),
            np.random.default_rng(self.seed),
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return self.sticker.boxes(position, image_size)


@register_attack
@dataclass(frozen=True, kw_only=True)
class CleverHansAttack(StickerFields, Attack):
    """A sticker on a share of one class, labels kept (a spurious "Clever Hans" feature).

    ``round(poison_rate * n_target)`` images of class ``target`` get the
    sticker and keep their label; ``poison_mask`` marks them. At test time the
    sticker goes on every non-target test image, so the "attack success rate"
    measures how far the network uses the sticker as a shortcut to ``target``.
    """

    name: ClassVar[str] = "clever_hans"
    rate_definition: ClassVar[str] = (
        "n_poison = round(p * n_target): the share p of the target class carries the sticker"
    )
    target: int
    poison_rate: float
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        check_class("target", self.target, n_classes)
        check_rate(self.poison_rate)
        self.sticker.check(image_size)

    def n_poison(self, class_counts: np.ndarray) -> int:
        n_target = int(class_counts[self.target])
        n = round(check_rate(self.poison_rate) * n_target)
        return check_count(n, n_target, f"target-class ({self.target})")

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        self.check(clean.n_classes, clean.image_shape[:2])
        n = self.n_poison(np.bincount(clean.y_train, minlength=clean.n_classes))
        return _stamp(
            clean, self, self.sticker, np.flatnonzero(clean.y_train == self.target), n,
            None, np.flatnonzero(clean.y_test != self.target),
            np.random.default_rng(self.seed),
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return self.sticker.boxes(position, image_size)


@register_attack
@dataclass(frozen=True, kw_only=True)
class BlendedAttack(_SourceTarget):
    """Blended-trigger backdoor (Chen et al. 2017): a pattern alpha-blended, relabelled.

    Each poisoned source-class image (``source`` None: any non-target image,
    the all-to-one setting of BackdoorBench) becomes ``round((1 - alpha) * x +
    alpha * pattern)`` and is relabelled to ``target``; the attack success rate
    is measured on every blended source test image (same ``alpha``). The
    pattern (``noise`` is drawn from ``pattern_seed``, independent of ``seed``;
    ``image`` is a natural photograph, as Chen et al.'s Hello Kitty key) is
    stored as ``extra["trigger_pattern"]`` (H, W, 3) uint8; the recorded trigger
    position is (0, 0) and the trigger box is the whole image. ``alpha`` 0.2 is
    the default; Chen et al. and BackdoorBench use 0.1-0.2 for training and the
    field 0.1-0.3.
    """

    name: ClassVar[str] = "blended"
    source: int | None  # type: ignore[assignment]
    target: int
    poison_rate: float
    alpha: float = 0.2
    pattern: str = "noise"
    pattern_seed: int = 0
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        check_source_target(self.source, self.target, n_classes)
        check_rate(self.poison_rate)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float):
            raise AttackParameterError("alpha", f"{self.alpha!r} is not a number")
        if not 0.0 < self.alpha <= 1.0:
            raise AttackParameterError("alpha", f"{self.alpha} is outside the range (0, 1]")
        if self.pattern not in BLEND_PATTERNS:
            raise AttackParameterError(
                "pattern",
                f"unknown blend pattern {self.pattern!r}; allowed: {list(BLEND_PATTERNS)}",
            )

    def n_poison(self, class_counts: np.ndarray) -> int:
        if self.source is not None:
            return super().n_poison(class_counts)
        counts = np.asarray(class_counts)
        n = n_poison_for(self.poison_rate, int(counts[self.target]))
        return check_count(n, int(counts.sum() - counts[self.target]), "non-target")

    def blend(self, image_size: tuple[int, int]) -> Blend:
        return Blend(make_blend_pattern(self.pattern, image_size, self.pattern_seed), self.alpha)

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        size = clean.image_shape[:2]
        self.check(clean.n_classes, size)
        n = self.n_poison(np.bincount(clean.y_train, minlength=clean.n_classes))
        trigger = self.blend(size)
        return _stamp(
            clean, self, trigger, source_indices(clean.y_train, self.source, self.target), n,
            self.target, source_indices(clean.y_test, self.source, self.target),
            np.random.default_rng(self.seed), extra={"trigger_pattern": trigger.pattern},
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return [(0, 0, image_size[0], image_size[1])]
