"""What every attack shares: parameter errors, poison counts, ground-truth assembly.

Every attack returns an :class:`~poisonscan.storage.ImageDataset` with this
ground truth in ``extra`` (``n`` training images, ``m`` triggered test images):

``y_train_original`` (n,) int64
    Labels before the attack.
``poison_mask`` (n,) bool
    The images the attack changed.
``trigger_position`` (n, 2) int64
    (row, col) of the trigger's recorded top-left corner, -1 where none; the
    attack's ``trigger_boxes(position, image_size)`` gives every pixel box the
    trigger covers (see :mod:`poisonscan.attacks.triggers`).
``x_test_triggered`` (m, H, W, 3) uint8, ``y_test_triggered_original`` (m,) int64,
``y_test_triggered_target`` (m,) int64, ``trigger_position_test`` (m, 2) int64,
``test_triggered_index`` (m,) int64
    Test images with the test-time trigger, their true labels, the label the
    attacker wants for each (the target; ``(y + 1) mod C`` for all-to-all, the
    trigger's own target with several targets), trigger positions and their
    index in ``x_test``; absent for the clean control.

Attacks that also stamp the trigger on images keeping their true label (TaCT's
cover images, the adaptive attacks' conservatism samples, WaNet's noise mode)
record them in ``cover_mask`` (n,) bool; they are not poison.

``meta`` holds the clean dataset's meta under ``"dataset"``, the full attack
parameters under ``"attack"`` (``{"name": ..., **fields}``, enough to rebuild
the attack with :func:`poisonscan.attacks.attack_from_meta`), ``n_poison``,
``n_target_clean`` and ``rate_definition``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from poisonscan.storage import ImageDataset

__all__ = [
    "ATTACKS",
    "AllToOne",
    "Attack",
    "AttackParameterError",
    "CleanAttack",
    "check_class",
    "check_number",
    "check_source_target",
    "choose",
    "cover_arrays",
    "n_poison_for",
    "poisoned_dataset",
    "register_attack",
    "source_indices",
]


class AttackParameterError(ValueError):
    """A bad attack parameter; ``key`` names it (as in the config), ``detail`` says why."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        self.detail = detail
        super().__init__(f"{key}: {detail}")


def n_poison_for(poison_rate: float, n_target: int) -> int:
    """Number of poisoned images so that they make up ``poison_rate`` of the target class.

    The reference study's definition for dirty-label attacks:
    ``round(p * n_target / (1 - p))``, where ``n_target`` counts the clean
    target-class images.
    """
    check_rate(poison_rate)
    return round(poison_rate * n_target / (1.0 - poison_rate))


def check_rate(poison_rate: float) -> float:
    if isinstance(poison_rate, bool) or not isinstance(poison_rate, int | float):
        raise AttackParameterError("poison_rate", f"{poison_rate!r} is not a number")
    if not 0.0 < poison_rate < 1.0:
        raise AttackParameterError(
            "poison_rate", f"{poison_rate} is outside the open interval (0, 1)"
        )
    return float(poison_rate)


def check_number(
    key: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as float if it is a number within the bounds; else :class:`AttackParameterError`.

    ``low`` / ``high`` None mean unbounded; ``low_open`` / ``high_open`` exclude the bound.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise AttackParameterError(key, f"{value!r} is not a number")
    v = float(value)
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if too_low or too_high or not np.isfinite(v):
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{left}, {right}" + (
            ")" if high_open or high is None else "]"
        )
        raise AttackParameterError(key, f"{value} is outside the range {interval}")
    return v


def check_class(key: str, cls: Any, n_classes: int) -> int:
    """``cls`` as int if it is a class id of a dataset with ``n_classes`` classes."""
    if isinstance(cls, bool) or not isinstance(cls, int | np.integer):
        raise AttackParameterError(key, f"class id {cls!r} is not an integer")
    if not 0 <= cls < n_classes:
        raise AttackParameterError(key, f"class {cls} does not exist (classes 0..{n_classes - 1})")
    return int(cls)


def check_count(n: int, available: int, what: str) -> int:
    """Raise if ``n`` images are needed but only ``available`` exist, or if ``n`` is 0."""
    if n > available:
        raise AttackParameterError(
            "poison_rate", f"needs {n} {what} images, but the training set has only {available}"
        )
    if n < 1:
        raise AttackParameterError(
            "poison_rate", f"gives 0 poisoned images ({available} {what} images available)"
        )
    return n


def check_source_target(source: int | None, target: int, n_classes: int) -> None:
    """Raise unless ``target`` is a class and ``source`` another one, or None (every other)."""
    check_class("target", target, n_classes)
    if source is None:
        return
    check_class("source", source, n_classes)
    if source == target:
        raise AttackParameterError("target", f"source and target are the same class ({source})")


def source_indices(labels: np.ndarray, source: int | None, target: int) -> np.ndarray:
    """Indices of the images an all-to-one attack may poison.

    ``source`` None means every class but ``target`` (the field's all-to-one
    setting: BadNets, Blended, WaNet as in BackdoorBench); an int, that class only.
    """
    labels = np.asarray(labels)
    return np.flatnonzero(labels != target if source is None else labels == source)


def cover_arrays(n: int, covered: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Ground truth of cover (conservatism) images: the trigger with their true label.

    Returns ``cover_mask`` (n,) bool and ``cover_position`` (n, 2) int64 (-1 where none)
    for a dataset's ``extra``; cover images are not poison (``poison_mask`` stays False).
    """
    mask = np.zeros(n, dtype=bool)
    mask[covered] = True
    where = np.full((n, 2), -1, dtype=np.int64)
    where[covered] = positions
    return {"cover_mask": mask, "cover_position": where}


def choose(rng: np.random.Generator, candidates: np.ndarray, n: int) -> np.ndarray:
    """``n`` of ``candidates`` without replacement, sorted."""
    return np.sort(rng.choice(candidates, size=n, replace=False))


ATTACKS: dict[str, type[Attack]] = {}
"""Attack classes by their config name (``scenarios.<name>.attack``), filled by
:func:`register_attack` where each attack is defined."""


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator adding an attack to :data:`ATTACKS` under its ``name``."""
    if cls.name in ATTACKS:
        raise ValueError(f"attack {cls.name!r} is registered twice")
    ATTACKS[cls.name] = cls
    return cls


class Attack:
    """Interface of the attacks (frozen, keyword-only dataclasses built from config).

    Subclasses set :attr:`name` and :attr:`rate_definition` and implement
    :meth:`check`, :meth:`n_poison`, :meth:`poison` and :meth:`trigger_boxes`.
    """

    name: ClassVar[str]
    needs_proxy: ClassVar[bool] = False
    """True when :meth:`poison` needs a clean proxy model (label-consistent attack)."""
    rate_definition: ClassVar[str] = ""
    target: int

    def params(self) -> dict[str, Any]:
        """The full parameters in JSON types: ``{"name": ..., **fields}`` (tuples -> lists)."""
        fields = dataclasses.asdict(self)  # type: ignore[call-overload]
        return json.loads(json.dumps({"name": self.name, **fields}))

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        """Raise :class:`AttackParameterError` if the attack cannot run on such data."""
        raise NotImplementedError

    def n_poison(self, class_counts: np.ndarray) -> int:
        """Number of images the attack changes, given the training-set count of each class.

        Raises :class:`AttackParameterError` when there are not enough images or none at all.
        """
        raise NotImplementedError

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        """The poisoned copy of ``clean`` with its ground truth (see the module docstring)."""
        raise NotImplementedError

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list:
        """Every (top, left, height, width) box the trigger recorded at ``position`` covers."""
        raise NotImplementedError


def poisoned_dataset(
    clean: ImageDataset,
    attack: Attack,
    *,
    x_train: np.ndarray,
    y_train: np.ndarray,
    chosen: np.ndarray,
    positions: np.ndarray,
    test_index: np.ndarray | None = None,
    x_test_triggered: np.ndarray | None = None,
    test_positions: np.ndarray | None = None,
    test_targets: np.ndarray | None = None,
    meta: Mapping[str, Any] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> ImageDataset:
    """Assemble a poisoned :class:`ImageDataset` with the common ground truth.

    ``chosen`` (k,) are the changed training indices, ``positions`` (k, 2) their
    recorded trigger positions; the test arguments are all given or all None
    (``test_targets``, the label wanted for each triggered test image, defaults
    to ``attack.target`` for every one).
    """
    n = clean.y_train.size
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    trigger_position = np.full((n, 2), -1, dtype=np.int64)
    trigger_position[chosen] = positions
    arrays: dict[str, np.ndarray] = {
        **clean.extra,
        "y_train_original": clean.y_train.copy(),
        "poison_mask": mask,
        "trigger_position": trigger_position,
    }
    if x_test_triggered is not None:
        assert test_index is not None and test_positions is not None
        if test_targets is None:
            test_targets = np.full(len(test_index), attack.target, dtype=np.int64)
        arrays.update(
            x_test_triggered=x_test_triggered,
            y_test_triggered_original=clean.y_test[test_index],
            y_test_triggered_target=np.asarray(test_targets, dtype=np.int64),
            trigger_position_test=np.asarray(test_positions, dtype=np.int64),
            test_triggered_index=np.asarray(test_index, dtype=np.int64),
        )
    arrays.update(extra or {})
    return ImageDataset(
        x_train=x_train,
        y_train=y_train,
        x_test=clean.x_test,
        y_test=clean.y_test,
        class_names=list(clean.class_names),
        meta={
            "dataset": clean.meta,
            "attack": attack.params(),
            "n_poison": int(mask.sum()),
            "n_target_clean": (
                int(np.sum(clean.y_train == attack.target)) if attack.target is not None else 0
            ),
            "rate_definition": attack.rate_definition,
            **(meta or {}),
        },
        extra=arrays,
    )


@register_attack
@dataclass(frozen=True, kw_only=True)
class CleanAttack(Attack):
    """No attack: the control scenario.

    Nothing is changed; ``poison_mask`` is all False and there is no triggered
    test set. ``target`` is only the class that the detection analyses; None in the
    audit of a user's dataset, which analyses every class.
    """

    name: ClassVar[str] = "clean"
    rate_definition: ClassVar[str] = "no poison"
    target: int | None = None

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        if self.target is not None:
            check_class("target", self.target, n_classes)

    def n_poison(self, class_counts: np.ndarray) -> int:
        return 0

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        self.check(clean.n_classes, clean.image_shape[:2])
        empty = np.zeros(0, dtype=np.int64)
        return poisoned_dataset(
            clean, self, x_train=clean.x_train.copy(), y_train=clean.y_train.copy(),
            chosen=empty, positions=np.zeros((0, 2), dtype=np.int64),
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list:
        return []


class AllToOne(Attack):
    """Dirty-label all-to-one attacks: source images (every non-target class when
    ``source`` is None) are triggered and relabelled to ``target``; ``poison_rate`` is the
    share of the target class after poisoning (:func:`~poisonscan.attacks.base.n_poison_for`)."""

    source: int | None
    target: int
    poison_rate: float
    rate_definition: ClassVar[str] = (
        "n_poison = round(p * n_target / (1 - p)) source-class images (every non-target class "
        "when source is null), so that the poisoned images make up the share p of the target "
        "class after poisoning"
    )

    def _check_classes(self, n_classes: int) -> None:
        check_source_target(self.source, self.target, n_classes)
        check_rate(self.poison_rate)

    def _source_name(self) -> str:
        return "non-target" if self.source is None else f"source-class ({self.source})"

    def n_poison(self, class_counts: np.ndarray) -> int:
        counts = np.asarray(class_counts)
        n = n_poison_for(self.poison_rate, int(counts[self.target]))
        available = (
            int(counts.sum() - counts[self.target])
            if self.source is None
            else int(counts[self.source])
        )
        return check_count(n, available, self._source_name())

    def candidates(self, labels: np.ndarray) -> np.ndarray:
        """Indices of the images that may be poisoned (training) or triggered (test)."""
        return source_indices(labels, self.source, self.target)
