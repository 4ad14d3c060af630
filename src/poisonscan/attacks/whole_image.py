"""What the whole-image trigger attacks (SIG, WaNet, FTrojan) share.

A whole-image trigger changes (potentially) every pixel, so its recorded
trigger position is (0, 0) and its one trigger box is the whole image. The
dirty-label ones among them are *all-to-one*: ``source`` None poisons images of
every class but ``target`` (BackdoorBench's setting), an int that class only.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from poisonscan.attacks.base import (
    Attack,
    AttackParameterError,
    check_count,
    check_rate,
    check_source_target,
    n_poison_for,
    source_indices,
)
from poisonscan.attacks.triggers import Box

__all__ = ["AllToOne", "check_number", "whole_image_box"]


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


def whole_image_box(image_size: tuple[int, int]) -> list[Box]:
    """The one trigger box of a whole-image trigger: (0, 0, H, W)."""
    return [(0, 0, int(image_size[0]), int(image_size[1]))]


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
