"""SIG: the clean-label sinusoidal-signal backdoor (Barni, Kallas, Tondi, ICIP 2019).

"A new backdoor attack in CNNs by training set corruption without label
poisoning". The trigger is a horizontal sinusoid added to the whole image,

    v(i, j) = delta * sin(2 * pi * j * f / W),    j = 0 .. W - 1 the column,

the same for every row and channel; the poisoned image is
``clip(rint(x + v), 0, 255)``. Only images of the target class are poisoned and
they keep their label (clean label); at test time the signal goes on every
non-target test image, whose attack success rate is the share classified as the
target.

Defaults: ``frequency`` 6 (Barni et al.'s sinusoid, also BackdoorBench's
``sig_f``), ``delta`` 40 in pixel units 0..255 (BackdoorBench's ``sig_delta``,
used there for training and test). Barni et al. train with a weaker signal
(delta 20 in their sinusoid experiments) and note that the attacker may use a
stronger one at test time, where it need not be hidden: set ``delta`` 20 and a
larger ``test_delta`` for that protocol. The column index starts at 0 as in
BackdoorBench's ``sigTriggerAttack`` (the paper counts from 1: a shift of one
column). BackdoorBench's ``config/attack/sig/default.yaml`` (commit 59f6cda) sets
``sig_delta: 40`` and ``sig_f: 6``; the authors' sinusoid in the FTrojan code
(``poison_sin_one``) uses delta 20, f 6, column from 0.

``poison_rate`` is the share of the target class that carries the signal:
``n_poison = round(p * n_target)`` (as for the other clean-label attacks here;
the paper's and BackdoorBench's rates count the whole training set, so that
10 % of CIFAR-10 is the whole target class).
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
    check_number,
    check_rate,
    choose,
    poisoned_dataset,
    register_attack,
)
from poisonscan.attacks.triggers import Box, whole_image_box
from poisonscan.storage import ImageDataset

__all__ = ["SIGAttack", "apply_sig", "sig_signal"]


def sig_signal(width: int, delta: float, frequency: float) -> np.ndarray:
    """The SIG signal of one row, ``delta * sin(2 * pi * j * frequency / width)``.

    Parameters
    ----------
    width : int
        Image width W.
    delta : float
        Amplitude in pixel units (0..255).
    frequency : float
        Periods across the image width.

    Returns
    -------
    ndarray of shape (W,), float64
        The value added to every pixel (all rows, all channels) of column j.
    """
    j = np.arange(width, dtype=np.float64)
    return delta * np.sin(2.0 * np.pi * j * frequency / width)


def apply_sig(images: np.ndarray, delta: float, frequency: float) -> np.ndarray:
    """``clip(rint(x + v), 0, 255)`` with the SIG signal ``v`` of :func:`sig_signal`.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3), uint8
    delta, frequency : float
        See :func:`sig_signal`.

    Returns
    -------
    ndarray of shape (n, H, W, 3), uint8
    """
    v = sig_signal(images.shape[2], delta, frequency)[None, None, :, None]
    out = images.astype(np.float64) + v
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@register_attack
@dataclass(frozen=True, kw_only=True)
class SIGAttack(Attack):
    """Clean-label sinusoidal-signal backdoor (Barni et al. 2019); see the module docstring.

    Parameters
    ----------
    target : int
        The class whose images carry the signal (labels kept) and the attack's target.
    poison_rate : float
        Share of the target class that is poisoned, in (0, 1): ``round(p * n_target)`` images.
    delta : float, default 40
        Training amplitude in pixel units, in (0, 255].
    frequency : float, default 6
        Periods across the image width, in (0, W / 2) (W / 2 would sample the sine at its zeros).
    test_delta : float or None, default None
        Amplitude of the test-time signal; None = ``delta``.
    seed : int, default 0
        Seed of the choice of images.

    Ground truth: ``poison_mask`` marks the changed target-class images,
    ``trigger_position`` is (0, 0) for them and the trigger box is the whole image;
    ``extra["trigger_signal"]`` (W,) float64 is the training signal of one row.
    """

    name: ClassVar[str] = "sig"
    rate_definition: ClassVar[str] = (
        "n_poison = round(p * n_target): the share p of the target class carries the signal "
        "(clean label)"
    )
    target: int
    poison_rate: float
    delta: float = 40.0
    frequency: float = 6.0
    test_delta: float | None = None
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        check_class("target", self.target, n_classes)
        check_rate(self.poison_rate)
        check_number("delta", self.delta, 0.0, 255.0, low_open=True)
        if self.test_delta is not None:
            check_number("test_delta", self.test_delta, 0.0, 255.0, low_open=True)
        width = image_size[1]
        check_number("frequency", self.frequency, low=0.0, low_open=True)
        if not self.frequency < width / 2:
            raise AttackParameterError(
                "frequency",
                f"{self.frequency} is outside the range (0, {width / 2:g}) for a {width} px wide "
                "image (at W / 2 or more the sine is sampled at its zeros or aliases)",
            )

    def n_poison(self, class_counts: np.ndarray) -> int:
        n_target = int(class_counts[self.target])
        n = round(check_rate(self.poison_rate) * n_target)
        return check_count(n, n_target, f"target-class ({self.target})")

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        size = clean.image_shape[:2]
        self.check(clean.n_classes, size)
        n = self.n_poison(np.bincount(clean.y_train, minlength=clean.n_classes))
        rng = np.random.default_rng(self.seed)
        chosen = choose(rng, np.flatnonzero(clean.y_train == self.target), n)
        x_train = clean.x_train.copy()
        x_train[chosen] = apply_sig(x_train[chosen], self.delta, self.frequency)
        test_index = np.flatnonzero(clean.y_test != self.target)
        test_delta = self.delta if self.test_delta is None else self.test_delta
        return poisoned_dataset(
            clean, self, x_train=x_train, y_train=clean.y_train.copy(), chosen=chosen,
            positions=np.zeros((n, 2), dtype=np.int64), test_index=test_index,
            x_test_triggered=apply_sig(clean.x_test[test_index], test_delta, self.frequency),
            test_positions=np.zeros((test_index.size, 2), dtype=np.int64),
            extra={"trigger_signal": sig_signal(size[1], self.delta, self.frequency)},
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return whole_image_box(image_size)
