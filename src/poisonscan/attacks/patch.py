"""Patch triggers of any size, pattern and placement (BadNets generalised).

A :class:`Patch` is an ``size`` x ``size`` block of pixels that overwrites the image
where its mask is on (``alpha`` 1) or is blended into it (``alpha`` < 1):
``x + alpha * mask * (pixels - x)``, the form backdoor-toolbox uses for its patch
triggers. Patterns (:func:`patch_pixels`):

``solid``
    one colour (BadNets' white square; Gu et al. 2017).
``random``
    a random black/white pixel pattern, the same in every channel, drawn from
    ``pattern_seed`` (BackdoorBench's random-pixel BadNets patch).
``image``
    a natural photograph shrunk to the patch (the photograph of
    :func:`poisonscan.attacks.triggers.make_blend_pattern`'s ``image`` pattern).
``frame``
    a square outline (the "trojan square" look of TrojanNN's trigger).

Placements: ``window`` (top-left corner uniform in a rectangle), ``fixed`` (one given
corner), ``uniform`` (anywhere it fits), ``corner`` (bottom-right, ``distance`` pixels
from the border; BackdoorBench's default place) and ``corners`` (one of the four
corners at random per image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from poisonscan.attacks.base import AttackParameterError
from poisonscan.attacks.triggers import Box, parse_color

__all__ = ["PATCH_PATTERNS", "PATCH_PLACEMENTS", "Patch", "patch_pixels"]

PATCH_PATTERNS: tuple[str, ...] = ("solid", "random", "image", "frame")
PATCH_PLACEMENTS: tuple[str, ...] = ("window", "fixed", "uniform", "corner", "corners")


def patch_pixels(pattern: str, size: int, color: str = "#ffffff", seed: int = 0) -> np.ndarray:
    """The ``size`` x ``size`` pixels of a named pattern, shape (size, size, 3) uint8.

    Raises
    ------
    AttackParameterError
        For an unknown ``pattern`` (key ``pattern``) or a bad ``color``.
    """
    if pattern == "solid":
        return np.broadcast_to(parse_color(color), (size, size, 3)).copy()
    if pattern == "random":
        on = np.random.default_rng(seed).integers(0, 2, size=(size, size), dtype=np.uint8)
        return np.repeat((255 * on)[..., None], 3, axis=2)
    if pattern == "image":
        from poisonscan.attacks.triggers import make_blend_pattern

        return make_blend_pattern("image", (size, size))
    if pattern == "frame":
        inner = np.zeros((size, size), dtype=bool)
        inner[1:-1, 1:-1] = size > 2
        out = np.broadcast_to(parse_color(color), (size, size, 3)).copy()
        out[inner] = 0
        return out
    raise AttackParameterError(
        "pattern", f"unknown patch pattern {pattern!r}; allowed: {list(PATCH_PATTERNS)}"
    )


def _check_int(key: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AttackParameterError(key, f"{value!r} is not an integer")
    if value < low:
        raise AttackParameterError(key, f"{value} is below the minimum {low}")
    return int(value)


@dataclass(frozen=True)
class Patch:
    """A square patch trigger (see the module docstring).

    Parameters
    ----------
    pixels : ndarray of shape (s, s, 3), uint8
    placement : {'window', 'fixed', 'uniform', 'corner', 'corners'}
    window : tuple of 4 int or None
        ``(top, left, bottom, right)``, bottom and right exclusive (``window`` only,
        required there).
    position : tuple of 2 int or None
        Top-left corner (``fixed`` only, required there).
    distance : int
        Pixels between the patch and the border (``corner`` and ``corners``).
    alpha : float
        1 overwrites the pixels; less blends the patch in.
    mask : ndarray of shape (s, s), bool, or None
        Pixels the patch changes; None = all.
    """

    pixels: np.ndarray = field(repr=False)
    placement: str = "corner"
    window: tuple[int, int, int, int] | None = None
    position: tuple[int, int] | None = None
    distance: int = 1
    alpha: float = 1.0
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return int(self.pixels.shape[0])

    def check(self, image_size: tuple[int, int]) -> None:
        """Raise :class:`AttackParameterError` (naming the key) if it cannot be placed."""
        h, w = image_size
        s = self.size
        if s > min(h, w):
            raise AttackParameterError("trigger_size", f"{s} is larger than the {h}x{w} image")
        if self.placement not in PATCH_PLACEMENTS:
            raise AttackParameterError(
                "placement",
                f"unknown placement {self.placement!r}; allowed: {list(PATCH_PLACEMENTS)}",
            )
        if not 0.0 < self.alpha <= 1.0:
            raise AttackParameterError("alpha", f"{self.alpha} is outside the range (0, 1]")
        if self.placement == "window":
            if self.window is None:
                raise AttackParameterError(
                    "window", "is required [top, left, bottom, right) when placement is 'window'"
                )
            top, left, bottom, right = self.window
            if not (0 <= top < bottom <= h and 0 <= left < right <= w):
                raise AttackParameterError(
                    "window",
                    f"{list(self.window)} is not a rectangle [top, left, bottom, right) inside "
                    f"the {h}x{w} image",
                )
            if bottom - top < s or right - left < s:
                raise AttackParameterError(
                    "window", f"{list(self.window)} is smaller than the {s}x{s} trigger"
                )
        elif self.placement == "fixed":
            if self.position is None:
                raise AttackParameterError(
                    "position", "is required (row, col) when placement is 'fixed'"
                )
            r, c = self.position
            if not (0 <= r <= h - s and 0 <= c <= w - s):
                raise AttackParameterError(
                    "position",
                    f"{list(self.position)}: the {s}x{s} trigger would leave the {h}x{w} image",
                )
        elif self.placement in ("corner", "corners"):
            d = _check_int("distance", self.distance, 0)
            if s + d > min(h, w):
                raise AttackParameterError(
                    "distance",
                    f"a {s}x{s} trigger {d} px from the border does not fit the {h}x{w} image",
                )

    def corner_positions(self, image_size: tuple[int, int]) -> np.ndarray:
        """Top-left corners of the four corner places, shape (4, 2): br, bl, tr, tl."""
        h, w = image_size
        s, d = self.size, self.distance
        bottom, right = h - d - s, w - d - s
        return np.array([[bottom, right], [bottom, d], [d, right], [d, d]], dtype=np.int64)

    def positions(
        self, n: int, rng: np.random.Generator, image_size: tuple[int, int]
    ) -> np.ndarray:
        """Top-left corners of ``n`` patches, shape (n, 2) int64.

        ``fixed`` and ``corner`` draw nothing from ``rng``.
        """
        s = self.size
        if self.placement == "fixed":
            assert self.position is not None  # guaranteed by check()
            return np.tile(np.asarray(self.position, dtype=np.int64), (n, 1))
        if self.placement == "corner":
            return np.tile(self.corner_positions(image_size)[0], (n, 1))
        if self.placement == "corners":
            return self.corner_positions(image_size)[rng.integers(0, 4, size=n)]
        if self.placement == "window":
            assert self.window is not None  # guaranteed by check()
            top, left, bottom, right = self.window
        else:
            top, left, bottom, right = 0, 0, image_size[0], image_size[1]
        rows = rng.integers(top, bottom - s + 1, size=n)
        cols = rng.integers(left, right - s + 1, size=n)
        return np.stack([rows, cols], axis=1).astype(np.int64)

    def apply(self, images: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Copies of ``images`` (n, H, W, 3) uint8 with the patch at ``positions`` (n, 2)."""
        s = self.size
        weight = np.full((s, s, 1), self.alpha)
        if self.mask is not None:
            weight = weight * self.mask[..., None]
        mark = self.pixels.astype(np.float64)
        out = images.copy()
        for img, (r, c) in zip(out, positions, strict=True):
            cell = img[r : r + s, c : c + s].astype(np.float64)
            img[r : r + s, c : c + s] = np.clip(np.rint(cell + weight * (mark - cell)), 0, 255)
        return out

    def boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        r, c = (int(v) for v in position)
        return [(r, c, self.size, self.size)]
