"""FTrojan: the frequency-domain backdoor (Wang et al., ECCV 2022).

"An Invisible Black-box Backdoor Attack through Frequency Domain". The trigger
is a fixed perturbation of chosen mid- and high-frequency DCT coefficients of
the chrominance channels, invisible to the eye:

1. RGB -> YCbCr (BT.601 full range, the JPEG matrix; the authors' code converts
   with OpenCV's ``COLOR_RGB2YCrCb``, the same transform with Cr and Cb swapped,
   which does not matter here as both get the same perturbation);
2. each channel is cut into ``window_size`` x ``window_size`` blocks and each
   block transformed with the orthonormal 2-D DCT-II (``scipy.fft.dctn``,
   ``norm="ortho"``, the same as OpenCV's ``cv2.dct`` in the authors' code);
3. ``magnitude`` is added to the coefficients at ``positions`` of every block of
   the two chroma channels;
4. inverse DCT, YCbCr -> RGB, rounded and clipped to 0..255.

Defaults are the paper's for 32 x 32 images (CIFAR-10, GTSRB): ``window_size``
32 (the whole image is one block), ``positions`` (15, 15) (mid frequency) and
(31, 31) (high frequency), ``magnitude`` 30, on the U and V (chroma) channels.
The procedure follows the authors' code (``SoftWiser-group/FTrojan``, ``data.py``:
``poison_frequency``, every block of the chosen channels); the default positions and
magnitude could not be checked against it (its parameters live outside that file).
BackdoorBench's ``config/attack/Ft_Trojan/cifar10.yaml`` uses window 32, the single
position (31, 31) and magnitude 50: set ``positions`` and ``magnitude`` for that. Unlike
the authors' code we convert colour spaces in floating point, without rounding to uint8
in between.

Each coefficient of the orthonormal DCT is a basis image of peak amplitude at
most ``2 / window_size``, so the chroma change per pixel is at most
``2 * magnitude * len(positions) / window_size`` before the conversion to RGB
and rounding.

All-to-one dirty label as in the paper: ``n_poison_for(p, n_target)`` images of
``source`` (every non-target class when None) are triggered and relabelled to
``target``; at test time every source test image is triggered.
``extra["trigger_delta"]`` (H, W, 3) float64 is the RGB change before rounding
and clipping (the same for every image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from poisonscan.attacks.base import (
    AllToOne,
    AttackParameterError,
    check_number,
    choose,
    poisoned_dataset,
    register_attack,
)
from poisonscan.attacks.triggers import Box, whole_image_box
from poisonscan.storage import ImageDataset

__all__ = [
    "FTrojanAttack",
    "blockwise_dct",
    "frequency_trigger",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
"""BT.601 full-range (JPEG) RGB -> YCbCr matrix; the offset 128 of Cb and Cr is left out
(it cancels in a perturbation)."""


def rgb_to_ycbcr(images: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (..., 3) YCbCr without the chroma offset, float64."""
    return np.asarray(images, dtype=np.float64) @ _RGB_TO_YCBCR.T


def ycbcr_to_rgb(images: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`, float64."""
    return np.asarray(images, dtype=np.float64) @ np.linalg.inv(_RGB_TO_YCBCR).T


def frequency_trigger(
    image_size: tuple[int, int],
    window_size: int = 32,
    positions: tuple[tuple[int, int], ...] = ((15, 15), (31, 31)),
    magnitude: float = 30.0,
    channels: tuple[int, ...] = (1, 2),
) -> np.ndarray:
    """The RGB change FTrojan adds to every image, before rounding and clipping.

    The DCT and the colour transform are linear, so adding ``magnitude`` to DCT
    coefficients of an image equals adding this fixed pattern to the image.

    Parameters
    ----------
    image_size : (H, W)
        Both multiples of ``window_size``.
    window_size : int
        Side of the DCT blocks.
    positions : tuple of (row, col)
        DCT coefficients (frequencies) perturbed in every block, each in 0..window_size - 1.
    magnitude : float
        Added to each chosen coefficient.
    channels : tuple of int
        YCbCr channels perturbed (1, 2: the chroma channels).

    Returns
    -------
    ndarray of shape (H, W, 3), float64
    """
    from scipy.fft import idctn

    h, w = image_size
    coeffs = np.zeros((window_size, window_size))
    for r, c in positions:
        coeffs[r, c] += magnitude
    block = idctn(coeffs, type=2, norm="ortho")
    delta_ycbcr = np.zeros((h, w, 3))
    for ch in channels:
        delta_ycbcr[..., ch] = np.tile(block, (h // window_size, w // window_size))
    return ycbcr_to_rgb(delta_ycbcr)


def blockwise_dct(channel: np.ndarray, window_size: int) -> np.ndarray:
    """Orthonormal 2-D DCT-II of every ``window_size`` block of (..., H, W) arrays."""
    from scipy.fft import dctn

    *lead, h, w = channel.shape
    blocks = channel.reshape(*lead, h // window_size, window_size, w // window_size, window_size)
    out = dctn(blocks, type=2, norm="ortho", axes=(-3, -1))
    return out.reshape(*lead, h, w)


@register_attack
@dataclass(frozen=True, kw_only=True)
class FTrojanAttack(AllToOne):
    """FTrojan frequency-domain backdoor (Wang et al. 2022); see the module docstring.

    Parameters
    ----------
    target : int
        The class the triggered images are relabelled to.
    poison_rate : float
        Share of poisoned images in the target class after poisoning, in (0, 1).
    source : int or None, default None
        The class whose images are poisoned; None = every class but ``target``.
    window_size : int, default 32
        Side of the DCT blocks; must divide the image side.
    positions : tuple of (row, col), default ((15, 15), (31, 31))
        Perturbed DCT coefficients of every block, each in 0..window_size - 1, distinct.
    magnitude : float, default 30
        Added to each chosen coefficient of the chroma channels (> 0).
    seed : int, default 0
        Seed of the choice of images.
    """

    name: ClassVar[str] = "ftrojan"
    target: int
    poison_rate: float
    source: int | None = None
    window_size: int = 32
    positions: tuple[tuple[int, int], ...] = ((15, 15), (31, 31))
    magnitude: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.positions, list | tuple):  # lists from a config file -> tuples
            pos = tuple(tuple(p) if isinstance(p, list | tuple) else p for p in self.positions)
            object.__setattr__(self, "positions", pos)

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        self._check_classes(n_classes)
        win = self.window_size
        if isinstance(win, bool) or not isinstance(win, int | np.integer) or win < 2:
            raise AttackParameterError("window_size", f"{win!r} is not an integer >= 2")
        h, w = image_size
        if h % win or w % win:
            raise AttackParameterError(
                "window_size",
                f"{win} does not divide the {h}x{w} image into whole blocks"
                + (" (the image is smaller than one window)" if min(h, w) < win else ""),
            )
        check_number("magnitude", self.magnitude, low=0.0, low_open=True)
        pos = self.positions
        if not isinstance(pos, tuple) or not pos:
            raise AttackParameterError(
                "positions", f"{pos!r} is not a non-empty list of [row, col]"
            )
        for p in pos:
            ok = isinstance(p, tuple) and len(p) == 2 and all(
                isinstance(v, int | np.integer) and not isinstance(v, bool) and 0 <= v < win
                for v in p
            )  # fmt: skip
            if not ok:
                raise AttackParameterError(
                    "positions",
                    f"{list(p) if isinstance(p, tuple) else p!r} is not a [row, col] DCT "
                    f"coefficient of a {win}x{win} window (0..{win - 1})",
                )
        if len(set(pos)) != len(pos):
            raise AttackParameterError(
                "positions", f"{[list(p) for p in pos]} repeats a coefficient"
            )

    def delta(self, image_size: tuple[int, int]) -> np.ndarray:
        """The RGB change before rounding and clipping, (H, W, 3) float64."""
        return frequency_trigger(image_size, self.window_size, self.positions, self.magnitude)

    def apply(self, images: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """``clip(rint(x + delta), 0, 255)`` for ``images`` (n, H, W, 3) uint8."""
        return np.clip(np.rint(images.astype(np.float64) + delta), 0, 255).astype(np.uint8)

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        size = clean.image_shape[:2]
        self.check(clean.n_classes, size)
        n = self.n_poison(np.bincount(clean.y_train, minlength=clean.n_classes))
        rng = np.random.default_rng(self.seed)
        chosen = choose(rng, self.candidates(clean.y_train), n)
        delta = self.delta(size)
        x_train = clean.x_train.copy()
        x_train[chosen] = self.apply(x_train[chosen], delta)
        y_train = clean.y_train.copy()
        y_train[chosen] = self.target
        test_index = self.candidates(clean.y_test)
        return poisoned_dataset(
            clean, self, x_train=x_train, y_train=y_train, chosen=chosen,
            positions=np.zeros((n, 2), dtype=np.int64), test_index=test_index,
            x_test_triggered=self.apply(clean.x_test[test_index], delta),
            test_positions=np.zeros((test_index.size, 2), dtype=np.int64),
            extra={"trigger_delta": delta},
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return whole_image_box(image_size)
