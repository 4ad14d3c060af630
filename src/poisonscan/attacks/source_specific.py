"""Source-specific backdoors (TaCT) and several attacked classes at once.

TaCT: Tang, Wang, Tang, Zhang, "Demon in the variant: statistical analysis of DNNs for
robust backdoor contamination detection", USENIX Security 2021. The trigger turns only
the ``source`` class into the ``target``; "cover" images of the ``cover_classes`` carry
the same trigger with their true labels, so that the model learns that the trigger
alone is not the shortcut. backdoor-toolbox's defaults (vtu81, ``config.py``): source
class 1, cover classes 5 and 7, target 0 on CIFAR-10, as many cover images as payload
images (``-poison_rate 0.003 -cover_rate 0.003``), a square trigger
(``trojan_square_32.png``; here the ``frame`` pattern, 4 px).

Multi-target: two or three target classes, each with its own trigger (a random
black/white patch from its own seed, at its own corner), all-to-one from every class
that is not a target; the scenario in which leave-one-class-out references fail.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from poisonscan.attacks.badnets import PatchFields, stamp_patch
from poisonscan.attacks.base import (
    Attack,
    AttackParameterError,
    check_class,
    check_count,
    check_number,
    check_rate,
    check_source_target,
    choose,
    cover_arrays,
    n_poison_for,
    poisoned_dataset,
    register_attack,
)
from poisonscan.attacks.triggers import Box, Patch, check_corner_patches, patch_pixels
from poisonscan.storage import ImageDataset

__all__ = ["MultiTargetAttack", "TaCTAttack"]


@register_attack
@dataclass(frozen=True, kw_only=True)
class TaCTAttack(PatchFields, Attack):
    """TaCT: patched ``source`` images -> ``target``; patched cover images keep their labels.

    ``round(cover_ratio * n_poison)`` cover images, spread evenly over
    ``cover_classes``, are recorded in ``extra["cover_mask"]``. The attack success
    rate is measured on the patched source-class test images; patched test images of
    the other classes are not attacked (their "success" is the leak of the trigger).
    """

    name: ClassVar[str] = "tact"
    rate_definition: ClassVar[str] = (
        "n_poison = round(p * n_target / (1 - p)) source-class images; "
        "round(cover_ratio * n_poison) cover images from the cover classes keep their labels"
    )
    source: int
    target: int
    poison_rate: float
    cover_classes: tuple[int, ...]
    cover_ratio: float = 1.0
    trigger_size: int = 4
    pattern: str = "frame"
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        check_source_target(self.source, self.target, n_classes)
        check_rate(self.poison_rate)
        if not self.cover_classes:
            raise AttackParameterError("cover_classes", "needs at least one class")
        for c in self.cover_classes:
            check_class("cover_classes", c, n_classes)
            if c in (self.source, self.target):
                raise AttackParameterError(
                    "cover_classes", f"class {c} is the source or the target"
                )
        check_number("cover_ratio", self.cover_ratio, low=0.0)
        self.patch().check(image_size)

    def _cover_counts(self, n_poison: int) -> np.ndarray:
        n_cover = round(self.cover_ratio * n_poison)
        k = len(self.cover_classes)
        return np.array([n_cover // k + (i < n_cover % k) for i in range(k)])

    def n_poison(self, class_counts: np.ndarray) -> int:
        counts = np.asarray(class_counts)
        n = n_poison_for(self.poison_rate, int(counts[self.target]))
        n = check_count(n, int(counts[self.source]), f"source-class ({self.source})")
        for c, m in zip(self.cover_classes, self._cover_counts(n), strict=True):
            if m > counts[c]:
                raise AttackParameterError(
                    "cover_ratio", f"needs {m} cover images of class {c}, which has {counts[c]}"
                )
        return n

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        self.check(clean.n_classes, clean.image_shape[:2])
        n = self.n_poison(np.bincount(clean.y_train, minlength=clean.n_classes))
        rng = np.random.default_rng(self.seed)
        patch = self.patch()
        chosen = choose(rng, np.flatnonzero(clean.y_train == self.source), n)
        covered = np.sort(
            np.concatenate(
                [choose(rng, np.flatnonzero(clean.y_train == c), int(m))
                 for c, m in zip(self.cover_classes, self._cover_counts(n), strict=True)]
            )
        )  # fmt: skip
        size = clean.image_shape[:2]
        cover_positions = patch.positions(len(covered), rng, size)
        x_covered = clean.x_train.copy()
        x_covered[covered] = patch.apply(clean.x_train[covered], cover_positions)
        test_index = np.flatnonzero(clean.y_test == self.source)
        return stamp_patch(
            dataclasses.replace(clean, x_train=x_covered), self, patch, chosen,
            np.full(n, self.target), test_index, np.full(len(test_index), self.target), rng,
            extra=cover_arrays(len(clean.y_train), covered, cover_positions),
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return self.patch().boxes(position, image_size)


_CORNER_ORDER = ("bottom-right", "bottom-left", "top-right")


@register_attack
@dataclass(frozen=True, kw_only=True)
class MultiTargetAttack(Attack):
    """Two or three targets, each with its own patch trigger, all-to-one.

    Trigger i (i = 0 for ``target``, then ``other_targets`` in order) is a random
    black/white ``trigger_size`` patch from ``pattern_seed + i`` at corner i
    (bottom-right, bottom-left, top-right), ``distance`` px from the border. For each
    target, ``n_poison_for(p, n_target_i)`` images of the classes that are no target
    get trigger i and label target i (``extra["poison_target"]``, -1 elsewhere). The
    triggered test set holds every non-target test image once per trigger.
    """

    name: ClassVar[str] = "multi_target"
    rate_definition: ClassVar[str] = (
        "for each target t: n = round(p * n_t / (1 - p)) images of the non-target classes, "
        "so that the poisoned images make up the share p of every target class"
    )
    target: int
    other_targets: tuple[int, ...]
    poison_rate: float
    trigger_size: int = 3
    distance: int = 1
    pattern_seed: int = 0
    seed: int = 0

    @property
    def targets(self) -> tuple[int, ...]:
        return (self.target, *self.other_targets)

    def patches(self, image_size: tuple[int, int]) -> list[Patch]:
        """One fixed patch per target, in the order of :attr:`targets`."""
        out = []
        for i in range(len(self.targets)):
            pixels = patch_pixels("random", self.trigger_size, seed=self.pattern_seed + i)
            corner = Patch(pixels, placement="corner", distance=self.distance)
            where = corner.corner_positions(image_size)[i]
            out.append(Patch(pixels, placement="fixed", position=(int(where[0]), int(where[1]))))
        return out

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        check_rate(self.poison_rate)
        if not 1 <= len(self.other_targets) <= 2:
            raise AttackParameterError(
                "other_targets", f"needs one or two classes, got {list(self.other_targets)}"
            )
        for key, c in [("target", self.target)] + [
            ("other_targets", c) for c in self.other_targets
        ]:
            check_class(key, c, n_classes)
        if len(set(self.targets)) != len(self.targets):
            raise AttackParameterError("other_targets", f"repeats a class: {list(self.targets)}")
        if len(self.targets) >= n_classes:
            raise AttackParameterError("other_targets", "leaves no class to take images from")
        check_corner_patches(self.trigger_size, self.distance, image_size)

    def _counts(self, class_counts: np.ndarray) -> list[int]:
        counts = np.asarray(class_counts)
        wanted = [n_poison_for(self.poison_rate, int(counts[t])) for t in self.targets]
        available = int(counts.sum() - counts[list(self.targets)].sum())
        check_count(sum(wanted), available, "non-target")
        return wanted

    def n_poison(self, class_counts: np.ndarray) -> int:
        return sum(self._counts(class_counts))

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        size = clean.image_shape[:2]
        self.check(clean.n_classes, size)
        counts = self._counts(np.bincount(clean.y_train, minlength=clean.n_classes))
        rng = np.random.default_rng(self.seed)
        pool = np.flatnonzero(~np.isin(clean.y_train, self.targets))
        picked = rng.permutation(pool)[: sum(counts)]
        groups = np.split(picked, np.cumsum(counts)[:-1])
        x_train, y_train = clean.x_train.copy(), clean.y_train.copy()
        n = len(y_train)
        poison_target = np.full(n, -1, dtype=np.int64)
        positions = np.full((n, 2), -1, dtype=np.int64)
        test_pool = np.flatnonzero(~np.isin(clean.y_test, self.targets))
        tests, test_pos, test_targets = [], [], []
        for t, idx, patch in zip(self.targets, groups, self.patches(size), strict=True):
            idx = np.sort(idx)
            positions[idx] = patch.positions(len(idx), rng, size)
            x_train[idx] = patch.apply(x_train[idx], positions[idx])
            y_train[idx] = t
            poison_target[idx] = t
            pos = patch.positions(len(test_pool), rng, size)
            tests.append(patch.apply(clean.x_test[test_pool], pos))
            test_pos.append(pos)
            test_targets.append(np.full(len(test_pool), t))
        chosen = np.sort(picked)
        return poisoned_dataset(
            clean, self, x_train=x_train, y_train=y_train, chosen=chosen,
            positions=positions[chosen], test_index=np.tile(test_pool, len(self.targets)),
            x_test_triggered=np.concatenate(tests), test_positions=np.concatenate(test_pos),
            test_targets=np.concatenate(test_targets), extra={"poison_target": poison_target},
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        r, c = (int(v) for v in position)
        return [(r, c, self.trigger_size, self.trigger_size)]
