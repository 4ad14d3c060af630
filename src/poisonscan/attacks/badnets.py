"""BadNets generalised: a patch trigger of any size, pattern and place, all-to-one or all-to-all.

Gu, Dolan-Gavitt, Garg, "BadNets: identifying vulnerabilities in the machine learning
model supply chain", 2017. BackdoorBench (Wu et al., NeurIPS 2022 Datasets and
Benchmarks) uses a 3x3 white square at the bottom-right corner as its default trigger
and relabels images of every other class (all-to-one); its all-to-all variant labels a
triggered image of class y as (y + 1) mod C. Both are here with those defaults; the
trigger is a :class:`~poisonscan.attacks.triggers.Patch`.

================  ===========================================  ===========================
attack            changed training images                      label
================  ===========================================  ===========================
``badnets``       n_poison_for(p, n_target) images of          target
                  ``source`` (None: every other class)
``all_to_all``    round(p * n_c) images of every class c          (c + 1) mod C
================  ===========================================  ===========================

Random choices come from one ``numpy.random.default_rng(seed)`` in a fixed order: the
images, the training positions, the test positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from poisonscan.attacks.base import (
    AllToOne,
    Attack,
    check_class,
    check_count,
    check_rate,
    choose,
    poisoned_dataset,
    register_attack,
)
from poisonscan.attacks.triggers import Box, Patch, check_patch_size, patch_pixels
from poisonscan.storage import ImageDataset

__all__ = ["AllToAllAttack", "BadNetsAttack", "PatchFields"]


@dataclass(frozen=True, kw_only=True)
class PatchFields:
    """The patch-trigger parameters (see :class:`poisonscan.attacks.triggers.Patch`).

    BackdoorBench's default: a 3x3 white square 1 px from the bottom-right corner.
    """

    trigger_size: int = 3
    pattern: str = "solid"
    color: str = "#ffffff"
    pattern_seed: int = 0
    placement: str = "corner"
    distance: int = 1
    window: tuple[int, int, int, int] | None = None
    position: tuple[int, int] | None = None

    def patch(self) -> Patch:
        """The trigger; raises :class:`AttackParameterError` for a bad size or pattern."""
        size = check_patch_size(self.trigger_size)
        return Patch(
            patch_pixels(self.pattern, size, self.color, self.pattern_seed),
            placement=self.placement, window=self.window, position=self.position,
            distance=self.distance,
        )  # fmt: skip


def stamp_patch(
    clean: ImageDataset,
    attack: Attack,
    patch: Patch,
    chosen: np.ndarray,
    new_labels: np.ndarray,
    test_index: np.ndarray,
    test_targets: np.ndarray,
    rng: np.random.Generator,
    extra: dict[str, np.ndarray] | None = None,
) -> ImageDataset:
    """Patch the ``chosen`` training images (labelled ``new_labels``) and ``test_index``."""
    size = clean.image_shape[:2]
    positions = patch.positions(len(chosen), rng, size)
    x_train = clean.x_train.copy()
    x_train[chosen] = patch.apply(x_train[chosen], positions)
    y_train = clean.y_train.copy()
    y_train[chosen] = new_labels
    test_positions = patch.positions(len(test_index), rng, size)
    x_test_triggered = patch.apply(clean.x_test[test_index], test_positions)
    return poisoned_dataset(
        clean, attack, x_train=x_train, y_train=y_train, chosen=chosen, positions=positions,
        test_index=test_index, x_test_triggered=x_test_triggered, test_positions=test_positions,
        test_targets=test_targets, extra=extra,
    )  # fmt: skip


@register_attack
@dataclass(frozen=True, kw_only=True)
class BadNetsAttack(PatchFields, AllToOne):
    """All-to-one BadNets: patched images of ``source`` (None: every other class) -> ``target``.

    The attack success rate is measured on every patched test image of the source
    class(es).
    """

    name: ClassVar[str] = "badnets"
    target: int
    poison_rate: float
    source: int | None = None
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        self._check_classes(n_classes)
        self.patch().check(image_size)

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        self.check(clean.n_classes, clean.image_shape[:2])
        n = self.n_poison(np.bincount(clean.y_train, minlength=clean.n_classes))
        rng = np.random.default_rng(self.seed)
        chosen = choose(rng, self.candidates(clean.y_train), n)
        test_index = self.candidates(clean.y_test)
        return stamp_patch(
            clean, self, self.patch(), chosen, np.full(n, self.target),
            test_index, np.full(len(test_index), self.target), rng,
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return self.patch().boxes(position, image_size)


@register_attack
@dataclass(frozen=True, kw_only=True)
class AllToAllAttack(PatchFields, Attack):
    """All-to-all BadNets: a patched image of class y is labelled (y + 1) mod C.

    Every class is poisoned and every class is a target, so ``target`` only names
    the class the per-class detection analyses. The attack success rate is the
    mean over classes of the share of patched test images predicted as (y + 1) mod C.
    """

    name: ClassVar[str] = "all_to_all"
    rate_definition: ClassVar[str] = (
        "the share p of every class c (round(p * n_c) images) is patched and labelled "
        "c + 1 (mod C), as BackdoorBench's all2all; with classes of equal size the poisoned "
        "images make up the share p of every class"
    )
    target: int
    poison_rate: float
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        check_class("target", self.target, n_classes)
        check_rate(self.poison_rate)
        self.patch().check(image_size)

    def _per_class(self, class_counts: np.ndarray) -> np.ndarray:
        counts = np.asarray(class_counts)
        wanted = np.array([round(self.poison_rate * int(n)) for n in counts])
        for c, (n, available) in enumerate(zip(wanted, counts, strict=True)):
            check_count(int(n), int(available), f"class-{c}")
        return wanted

    def n_poison(self, class_counts: np.ndarray) -> int:
        return int(self._per_class(class_counts).sum())

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        self.check(clean.n_classes, clean.image_shape[:2])
        per_class = self._per_class(np.bincount(clean.y_train, minlength=clean.n_classes))
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(
            np.concatenate(
                [choose(rng, np.flatnonzero(clean.y_train == c), int(n))
                 for c, n in enumerate(per_class)]
            )
        )  # fmt: skip
        test_index = np.arange(len(clean.y_test))
        return stamp_patch(
            clean, self, self.patch(), chosen, (clean.y_train[chosen] + 1) % clean.n_classes,
            test_index, (clean.y_test + 1) % clean.n_classes, rng,
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return self.patch().boxes(position, image_size)
