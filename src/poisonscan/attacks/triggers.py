"""Triggers: what an attack stamps onto an image, and where.

Three kinds, each a frozen dataclass with ``check(image_size)``,
``positions(n, rng, image_size)``, ``apply(images, positions)`` and
``boxes(position, image_size)``:

:class:`Sticker`
    An ``size`` x ``size`` square of one colour that overwrites the pixels.
    Placement ``window`` (top-left corner uniform so that the sticker lies in a
    rectangle; the reference study's default), ``fixed`` (one given top-left
    corner) or ``uniform`` (anywhere the sticker fits).
:class:`Checkerboard`
    A ``size`` x ``size`` black/white checkerboard *added* with +-``amplitude``
    (0..255) and clipped to 0..255 (the reduced-amplitude trigger of Turner et
    al.), at ``distance`` pixels from the bottom-right corner, or at all four
    corners.
:class:`Blend`
    A full-image ``pattern`` alpha-blended into the image (Chen et al. 2017).

A fourth, :class:`Patch`, generalises the sticker (BadNets generalised): an ``s`` x ``s``
block of pixels of a named pattern (:func:`patch_pixels`: ``solid`` colour, BadNets'
white square; ``random`` black/white pixels from a seed, BackdoorBench's random-pixel
patch; ``image``, a photograph shrunk to the patch; ``frame``, a square outline, the look
of TrojanNN's square) that overwrites the image (``alpha`` 1) or is blended into it,
``x + alpha * mask * (pixels - x)`` as backdoor-toolbox's patch triggers, placed by
``window``, ``fixed``, ``uniform``, ``corner`` (bottom-right, ``distance`` px from the
border, BackdoorBench's place) or ``corners`` (one of the four at random per image).
:class:`Sticker` is the solid-colour patch.

A recorded trigger position is always the (row, col) of one box's top-left
corner; :meth:`boxes` turns it into every (top, left, height, width) box the
trigger touches (four for the four-corner checkerboard, the whole image for a
blend), so the exact footprint of every trigger can be rebuilt from the
recorded position and the attack parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from poisonscan.attacks.base import AttackParameterError

__all__ = [
    "BLEND_PATTERNS",
    "CORNERS",
    "PATCH_PATTERNS",
    "PATCH_PLACEMENTS",
    "PLACEMENTS",
    "Blend",
    "Box",
    "Checkerboard",
    "Patch",
    "Sticker",
    "apply_sticker",
    "boxes_to_mask",
    "check_corner_patches",
    "check_patch_size",
    "checkerboard_pattern",
    "make_blend_pattern",
    "natural_image",
    "parse_color",
    "patch_pixels",
    "whole_image_box",
]

Box = tuple[int, int, int, int]
"""(top, left, height, width) of a rectangle in an image."""

PLACEMENTS: tuple[str, ...] = ("window", "fixed", "uniform")
CORNERS: tuple[str, ...] = ("bottom_right", "all")
BLEND_PATTERNS: tuple[str, ...] = ("noise", "stripes", "checkerboard", "image")

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def parse_color(color: str) -> np.ndarray:
    """``"#f5ff00"`` -> ``array([245, 255, 0], dtype=uint8)``."""
    if not isinstance(color, str) or not _HEX.match(color):
        raise AttackParameterError("color", f"{color!r} does not look like '#rrggbb'")
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


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


def boxes_to_mask(boxes: list[Box], image_size: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask that is True inside any of ``boxes``."""
    mask = np.zeros(image_size, dtype=bool)
    for top, left, h, w in boxes:
        mask[top : top + h, left : left + w] = True
    return mask


def _check_int(key: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise AttackParameterError(key, f"{value!r} is not an integer")
    if value < low or (high is not None and value > high):
        allowed = f"{low}..{high}" if high is not None else f">= {low}"
        raise AttackParameterError(key, f"{value} is outside the allowed range {allowed}")
    return int(value)


@dataclass(frozen=True)
class Sticker:
    """A solid-colour square that overwrites the pixels it covers.

    Parameters
    ----------
    size : int
        Side length in pixels (>= 1).
    color : str
        ``'#rrggbb'``.
    placement : {'window', 'fixed', 'uniform'}
        How the top-left corner is chosen per image (see the module docstring).
    window : tuple of 4 int
        ``(top, left, bottom, right)``, bottom and right exclusive; ``window`` placement only.
    position : tuple of 2 int or None
        ``(row, col)`` of the top-left corner; ``fixed`` placement only (required there).
    """

    size: int = 3
    color: str = "#f5ff00"
    placement: str = "window"
    window: tuple[int, int, int, int] = (16, 16, 22, 20)
    position: tuple[int, int] | None = None

    @property
    def patch(self) -> Patch:
        """The sticker as a solid-colour :class:`Patch` (placement and checks are the patch's)."""
        size = _check_int("sticker_size", self.size, 1)
        pixels = np.broadcast_to(parse_color(self.color), (size, size, 3)).copy()
        return Patch(
            pixels, placement=self.placement, window=self.window, position=self.position,
            size_key="sticker_size", noun="sticker",
        )  # fmt: skip

    def check(self, image_size: tuple[int, int]) -> None:
        """Raise :class:`AttackParameterError` if the sticker cannot be placed in the image."""
        if self.placement not in PLACEMENTS:
            raise AttackParameterError(
                "placement", f"unknown placement {self.placement!r}; allowed: {list(PLACEMENTS)}"
            )
        self.patch.check(image_size)

    def positions(
        self, n: int, rng: np.random.Generator, image_size: tuple[int, int]
    ) -> np.ndarray:
        """Top-left corners of ``n`` stickers, shape (n, 2) int64.

        ``fixed`` placement draws nothing from ``rng``.
        """
        return self.patch.positions(n, rng, image_size)

    def apply(self, images: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Stickered copies of ``images`` (n, H, W, 3) uint8 at ``positions`` (n, 2)."""
        return apply_sticker(images, positions, self.size, parse_color(self.color))

    def boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        r, c = (int(v) for v in position)
        return [(r, c, self.size, self.size)]


def checkerboard_pattern(size: int) -> np.ndarray:
    """+-1 checkerboard of shape (size, size), +1 (white) in the corners, int16."""
    i, j = np.indices((size, size))
    return np.where((i + j) % 2 == 0, 1, -1).astype(np.int16)


@dataclass(frozen=True)
class Checkerboard:
    """Black/white checkerboard added with +-``amplitude`` and clipped to 0..255.

    Parameters
    ----------
    size : int
        Side length (3 in Turner et al. and the reference study).
    amplitude : int
        0..255; 255 turns the cells fully white/black.
    distance : int
        Pixels between the checkerboard and the image border (``d``).
    corners : {'bottom_right', 'all'}
        One copy at the bottom-right corner, or four, one at each corner.
    """

    size: int = 3
    amplitude: int = 255
    distance: int = 10
    corners: str = "bottom_right"

    def check(self, image_size: tuple[int, int]) -> None:
        h, w = image_size
        s = _check_int("sticker_size", self.size, 1)
        if s > min(h, w):
            raise AttackParameterError("sticker_size", f"{s} is larger than the {h}x{w} image")
        _check_int("amplitude", self.amplitude, 0, 255)
        d = _check_int("distance", self.distance, 0)
        if self.corners not in CORNERS:
            raise AttackParameterError(
                "corners", f"unknown corners {self.corners!r}; allowed: {list(CORNERS)}"
            )
        if s + d > min(h, w):
            raise AttackParameterError(
                "distance",
                f"a {s}x{s} trigger at distance {d} from the border lies outside the {h}x{w} "
                f"image (need sticker_size + distance <= {min(h, w)})",
            )
        if self.corners == "all" and 2 * (s + d) > min(h, w):
            raise AttackParameterError(
                "distance",
                f"the four {s}x{s} corner triggers at distance {d} overlap in the {h}x{w} image "
                f"(need 2 * (sticker_size + distance) <= {min(h, w)})",
            )

    def corner_position(self, image_size: tuple[int, int]) -> np.ndarray:
        """Top-left corner of the bottom-right copy, shape (2,) int64 (the recorded position)."""
        h, w = image_size
        return np.array([h - self.distance - self.size, w - self.distance - self.size], np.int64)

    def positions(
        self, n: int, rng: np.random.Generator, image_size: tuple[int, int]
    ) -> np.ndarray:
        """The recorded position (bottom-right copy) for each of ``n`` images; ``rng`` unused."""
        return np.tile(self.corner_position(image_size), (n, 1))

    def boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        s, d = self.size, self.distance
        r, c = (int(v) for v in position)
        if self.corners == "bottom_right":
            return [(r, c, s, s)]
        return [(d, d, s, s), (d, c, s, s), (r, d, s, s), (r, c, s, s)]

    def apply(
        self, images: np.ndarray, positions: np.ndarray, amplitude: int | None = None
    ) -> np.ndarray:
        """Copies of ``images`` with the checkerboard added (``amplitude`` overrides the field)."""
        amp = self.amplitude if amplitude is None else amplitude
        delta = amp * checkerboard_pattern(self.size)[..., None]  # (s, s, 1) int16
        out = images.copy()
        size = images.shape[1:3]
        for img, pos in zip(out, positions, strict=True):
            for top, left, h, w in self.boxes(pos, size):
                cell = img[top : top + h, left : left + w].astype(np.int16) + delta
                img[top : top + h, left : left + w] = np.clip(cell, 0, 255).astype(np.uint8)
        return out


def make_blend_pattern(name: str, image_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A named full-image blend pattern, shape (H, W, 3) uint8.

    ``noise``: every pixel and channel uniform in 0..255 from ``seed`` (Chen et
    al.'s random-noise key); ``stripes``: vertical black/white stripes two pixels
    wide; ``checkerboard``: a one-pixel black/white checkerboard; ``image``: a
    natural photograph (:func:`natural_image`; Chen et al. blended a Hello Kitty
    picture, which cannot be shipped), ``seed`` unused.
    """
    h, w = image_size
    if name == "noise":
        return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    if name == "image":
        return natural_image(image_size)
    i, j = np.indices((h, w))
    if name == "stripes":
        on = (j // 2) % 2 == 0
    elif name == "checkerboard":
        on = (i + j) % 2 == 0
    else:
        raise AttackParameterError(
            "pattern", f"unknown blend pattern {name!r}; allowed: {list(BLEND_PATTERNS)}"
        )
    return np.repeat(np.where(on, 255, 0).astype(np.uint8)[..., None], 3, axis=2)


def natural_image(image_size: tuple[int, int]) -> np.ndarray:
    """A natural photograph as a blend key: matplotlib's sample portrait of Grace Hopper.

    The file ships with matplotlib (``matplotlib.cbook.get_sample_data("grace_hopper.jpg")``,
    512 x 600 px, RGB). It is centre-cropped to the aspect ratio of ``image_size`` and
    resized with PIL's Lanczos filter.

    Returns
    -------
    ndarray of shape (H, W, 3), uint8
    """
    from matplotlib import cbook
    from PIL import Image

    h, w = image_size
    with cbook.get_sample_data("grace_hopper.jpg") as f, Image.open(f) as img:
        rgb = img.convert("RGB")
    iw, ih = rgb.size
    if iw * h > ih * w:  # too wide: crop the sides
        cw, ch = round(ih * w / h), ih
    else:  # too tall: crop top and bottom
        cw, ch = iw, round(iw * h / w)
    left, top = (iw - cw) // 2, (ih - ch) // 2
    rgb = rgb.crop((left, top, left + cw, top + ch))
    return np.asarray(rgb.resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8).copy()


@dataclass(frozen=True)
class Blend:
    """``round((1 - alpha) * x + alpha * pattern)`` over the whole image.

    Parameters
    ----------
    pattern : ndarray of shape (H, W, 3), uint8
    alpha : float
        Blend weight in (0, 1].
    """

    pattern: np.ndarray = field(repr=False)
    alpha: float = 0.2

    def apply(self, images: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """Blended copies of ``images`` (n, H, W, 3) uint8; ``positions`` is ignored."""
        x = images.astype(np.float64)
        out = (1.0 - self.alpha) * x + self.alpha * self.pattern.astype(np.float64)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def positions(
        self, n: int, rng: np.random.Generator, image_size: tuple[int, int]
    ) -> np.ndarray:
        """(0, 0) for every image: the blend covers the whole image."""
        return np.zeros((n, 2), dtype=np.int64)

    def boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return [(0, 0, image_size[0], image_size[1])]


def whole_image_box(image_size: tuple[int, int]) -> list[Box]:
    """The one trigger box of a whole-image trigger: (0, 0, H, W)."""
    return [(0, 0, int(image_size[0]), int(image_size[1]))]


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


def check_patch_size(size: object) -> int:
    """``size`` as int if it is a patch side (an integer >= 1); else key ``trigger_size``."""
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise AttackParameterError("trigger_size", f"{size!r} is not an integer >= 1")
    return int(size)


def check_corner_patches(size: object, distance: int, image_size: tuple[int, int]) -> None:
    """Patches of side ``size``, ``distance`` px from the border, fit every corner of the
    image without overlapping (the several-trigger attacks put one per corner)."""
    s = check_patch_size(size)
    Patch(np.zeros((s, s, 3), np.uint8), placement="corner", distance=distance).check(image_size)
    if 2 * (s + distance) > min(image_size):
        raise AttackParameterError(
            "trigger_size", f"the corner triggers overlap in the {image_size} image"
        )


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
    size_key, noun : str
        The config key of the size and the word for the patch in error messages
        (``sticker_size`` / ``sticker`` for :class:`~poisonscan.attacks.triggers.Sticker`).
    """

    pixels: np.ndarray = field(repr=False)
    placement: str = "corner"
    window: tuple[int, int, int, int] | None = None
    position: tuple[int, int] | None = None
    distance: int = 1
    alpha: float = 1.0
    mask: np.ndarray | None = field(default=None, repr=False)
    size_key: str = "trigger_size"
    noun: str = "trigger"

    @property
    def size(self) -> int:
        return int(self.pixels.shape[0])

    def check(self, image_size: tuple[int, int]) -> None:
        """Raise :class:`AttackParameterError` (naming the key) if it cannot be placed."""
        h, w = image_size
        s, noun = self.size, f"{self.size}x{self.size} {self.noun}"
        if s > min(h, w):
            raise AttackParameterError(self.size_key, f"{s} is larger than the {h}x{w} image")
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
                    "window", f"{list(self.window)} is smaller than the {noun}"
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
                    f"{list(self.position)}: the {noun} would leave the {h}x{w} image "
                    f"(allowed rows 0..{h - s}, columns 0..{w - s})",
                )
        elif self.placement in ("corner", "corners"):
            d = _check_int("distance", self.distance, 0)
            if s + d > min(h, w):
                raise AttackParameterError(
                    "distance", f"a {noun} {d} px from the border does not fit the {h}x{w} image"
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
