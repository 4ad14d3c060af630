"""Procedural traffic-sign images: the embedded default dataset.

Nothing is downloaded. Every image is drawn from vector shapes at a higher
resolution (4x for 32x32 images), reduced with area averaging (antialiasing)
and then degraded like a small camera crop: scale, in-plane rotation, slight
foreshortening, position jitter, faded or tinted paint, background clutter,
uneven lighting, Gaussian blur, partial occlusion and sensor noise.

Class ids follow the German Traffic Sign Recognition Benchmark (GTSRB) for the
eight speed limits (0-7); the other shapes take the next ids (8-11):

==  ==================  ===========================================
id  name                look
==  ==================  ===========================================
0   speed limit 20      white disc, red ring, black "20"
1   speed limit 30      ... "30"
2   speed limit 50      ... "50" (source class of the default attack)
3   speed limit 60      ... "60"
4   speed limit 70      ... "70"
5   speed limit 80      ... "80" (target class of the default attack)
6   speed limit 100     ... "100"
7   speed limit 120     ... "120"
8   stop                red octagon, white rim and "STOP"
9   yield               inverted triangle, red border, white inside
10  priority road       yellow diamond with white border
11  general caution     triangle, red border, white inside, black "!"
==  ==================  ===========================================

Digits and letters are stroked polylines defined here (no system fonts), so
the images are identical on every machine with the same NumPy and Pillow.

Determinism: every image has its own random generator, seeded from
``(seed, split, class id, index)`` through :class:`numpy.random.SeedSequence`,
so an image does not depend on the order of generation, on parallelism or on
which other classes are generated.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from poisonscan.storage import ImageDataset, atomic_path

__all__ = [
    "CLASS_NAMES",
    "make_synthetic_signs",
    "render_sign",
    "save_montage",
]

CLASS_NAMES: tuple[str, ...] = (
    "speed limit 20",
    "speed limit 30",
    "speed limit 50",
    "speed limit 60",
    "speed limit 70",
    "speed limit 80",
    "speed limit 100",
    "speed limit 120",
    "stop",
    "yield",
    "priority road",
    "general caution",
)

_SPEED_DIGITS: dict[int, str] = {
    0: "20",
    1: "30",
    2: "50",
    3: "60",
    4: "70",
    5: "80",
    6: "100",
    7: "120",
}

_SPLIT_KEY = {"train": 0, "test": 1}
_SHUFFLE_KEY = 2
_MIN_IMAGE_SIZE = 16

Colour = tuple[int, int, int]


# --------------------------------------------------------------------------- geometry


def _arc(
    cx: float, cy: float, rx: float, ry: float, t0: float, t1: float, n: int = 14
) -> np.ndarray:
    """Points on an elliptic arc from angle ``t0`` to ``t1`` (degrees, y axis down)."""
    t = np.deg2rad(np.linspace(t0, t1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _bezier(
    p0: Sequence[float], p1: Sequence[float], p2: Sequence[float], n: int = 10
) -> np.ndarray:
    """Points on the quadratic Bezier curve with control points ``p0, p1, p2``."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c = (np.asarray(p, dtype=float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c


def _pts(*xy: tuple[float, float]) -> np.ndarray:
    return np.asarray(xy, dtype=float)


def _regular(n: int, radius: float, phase_deg: float = 0.0) -> np.ndarray:
    """Vertices of a regular ``n``-gon centred at the origin (first vertex at ``phase``)."""
    t = np.deg2rad(phase_deg + np.arange(n) * 360.0 / n)
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


_CIRCLE = _regular(48, 1.0)

# Glyphs: strokes in a unit cell, x in [0, 1] left to right, y in [0, 1] top to bottom.
# Each value is (advance width relative to the cell height, list of polylines).
_GLYPHS: dict[str, tuple[float, list[np.ndarray]]] = {
    "0": (0.6, [_arc(0.5, 0.5, 0.5, 0.5, 0, 360, 28)]),
    "1": (0.42, [_pts((0.05, 0.28), (0.62, 0.0), (0.62, 1.0))]),
    "2": (
        0.6,
        [
            np.concatenate(
                [
                    _arc(0.5, 0.3, 0.46, 0.3, -165, 25),
                    _pts((0.02, 1.0), (1.0, 1.0)),
                ]
            )
        ],
    ),
    "3": (
        0.6,
        [
            np.concatenate(
                [
                    _arc(0.5, 0.25, 0.44, 0.25, -160, 90),
                    _arc(0.5, 0.75, 0.5, 0.25, -90, 160),
                ]
            )
        ],
    ),
    "5": (
        0.6,
        [
            np.concatenate(
                [
                    _pts((0.92, 0.0), (0.16, 0.0), (0.08, 0.48)),
                    _arc(0.5, 0.68, 0.47, 0.32, -130, 150),
                ]
            )
        ],
    ),
    "6": (
        0.6,
        [
            _arc(0.5, 0.68, 0.48, 0.32, 0, 360, 24),
            _bezier((0.88, 0.04), (0.1, 0.02), (0.02, 0.68)),
        ],
    ),
    "7": (0.6, [_pts((0.0, 0.0), (1.0, 0.0), (0.32, 1.0))]),
    "8": (
        0.6,
        [
            _arc(0.5, 0.25, 0.4, 0.25, 0, 360, 22),
            _arc(0.5, 0.74, 0.5, 0.26, 0, 360, 24),
        ],
    ),
    "S": (
        0.6,
        [
            np.concatenate(
                [
                    _arc(0.5, 0.25, 0.46, 0.25, -25, -270),
                    _arc(0.5, 0.75, 0.5, 0.25, -90, 155),
                ]
            )
        ],
    ),
    "T": (0.62, [_pts((0.0, 0.0), (1.0, 0.0)), _pts((0.5, 0.0), (0.5, 1.0))]),
    "O": (0.62, [_arc(0.5, 0.5, 0.5, 0.5, 0, 360, 24)]),
    "P": (
        0.58,
        [
            np.concatenate(
                [
                    _pts((0.05, 1.0), (0.05, 0.0), (0.5, 0.0)),
                    _arc(0.5, 0.28, 0.45, 0.28, -90, 90),
                    _pts((0.05, 0.56)),
                ]
            )
        ],
    ),
}


def _text_strokes(text: str, height: float, gap: float, narrow: float = 1.0) -> list[np.ndarray]:
    """Polylines of ``text`` centred at the origin, in sign units (radius 1).

    ``height`` is the cap height, ``gap`` the spacing between glyphs (both in
    sign units), ``narrow`` scales the glyph widths.
    """
    widths = [_GLYPHS[ch][0] * height * narrow for ch in text]
    total = sum(widths) + gap * (len(text) - 1)
    x = -total / 2.0
    strokes: list[np.ndarray] = []
    for ch, w in zip(text, widths, strict=True):
        for line in _GLYPHS[ch][1]:
            strokes.append(np.stack([x + line[:, 0] * w, (line[:, 1] - 0.5) * height], axis=1))
        x += w + gap
    return strokes


# --------------------------------------------------------------------------- drawing


class _Painter:
    """Draws shapes given in sign units through an affine map onto a canvas."""

    def __init__(self, draw: ImageDraw.ImageDraw, matrix: np.ndarray, offset: np.ndarray):
        self.draw = draw
        self.matrix = matrix
        self.offset = offset
        self.unit = math.sqrt(abs(float(np.linalg.det(matrix))))  # pixels per sign unit

    def _map(self, pts: np.ndarray) -> list[tuple[float, float]]:
        xy = pts @ self.matrix.T + self.offset
        return [(float(a), float(b)) for a, b in xy]

    def polygon(self, pts: np.ndarray, fill: Colour) -> None:
        self.draw.polygon(self._map(pts), fill=fill)

    def disc(self, radius: float, fill: Colour, centre: tuple[float, float] = (0.0, 0.0)) -> None:
        self.polygon(_CIRCLE * radius + np.asarray(centre), fill)

    def stroke(self, pts: np.ndarray, width: float, fill: Colour) -> None:
        w = max(1, round(width * self.unit))
        xy = self._map(pts)
        self.draw.line(xy, fill=fill, width=w, joint="curve")
        # round caps: PIL lines end square and thin strokes look broken without caps
        r = w / 2.0
        for x, y in (xy[0], xy[-1]):
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def _clip(c: np.ndarray | Sequence[float]) -> Colour:
    a = np.clip(np.rint(np.asarray(c, dtype=float)), 0, 255).astype(int)
    return int(a[0]), int(a[1]), int(a[2])


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A random background colour: mostly desaturated greys, greens, browns and sky tones."""
    u = rng.random()
    if u < 0.3:  # foliage
        h = rng.uniform(0.17, 0.42)
    elif u < 0.5:  # sky, water, glass
        h = rng.uniform(0.52, 0.64)
    elif u < 0.75:  # soil, brick, wood
        h = rng.uniform(0.0, 0.13)
    else:  # anything
        h = rng.random()
    s = rng.uniform(0.0, 0.45) if rng.random() < 0.85 else rng.uniform(0.45, 0.8)
    v = rng.uniform(0.12, 0.92)
    return 255.0 * np.asarray(colorsys.hsv_to_rgb(h, s, v))


def _palette(rng: np.random.Generator) -> dict[str, Colour]:
    """Paint colours of one sign: jittered hues, optionally faded towards grey."""
    red = np.array([rng.uniform(165, 235), rng.uniform(5, 55), rng.uniform(15, 60)])
    white = rng.uniform(205, 255) + rng.uniform(-12, 12, size=3)
    black = np.full(3, rng.uniform(0, 50)) + rng.uniform(-6, 6, size=3)
    yellow = np.array([rng.uniform(215, 255), rng.uniform(160, 215), rng.uniform(0, 45)])
    grey = np.full(3, rng.uniform(60, 170))
    fade = rng.uniform(0.0, 0.2) if rng.random() < 0.85 else rng.uniform(0.2, 0.4)
    cols = {"red": red, "white": white, "black": black, "yellow": yellow, "grey": grey}
    return {k: _clip((1 - fade) * v + fade * grey) for k, v in cols.items()}


def _background(rng: np.random.Generator, size: int, out_size: int) -> Image.Image:
    """Gradient + low-frequency texture + clutter shapes, ``size`` x ``size`` RGB."""
    c1, c2 = _muted_colour(rng), _muted_colour(rng)
    if rng.random() < 0.5:  # often a similar pair: smooth sky or wall
        c2 = 0.6 * c1 + 0.4 * c2
    # smooth parts are computed at the output size and upsampled (cheap)
    theta = rng.uniform(0, 2 * math.pi)
    coords = (np.arange(out_size, dtype=np.float32) + 0.5) / out_size - 0.5
    ramp = np.cos(theta) * coords[None, :] + np.sin(theta) * coords[:, None]
    ramp = np.clip(ramp * rng.uniform(0.8, 2.0) + 0.5, 0.0, 1.0)[..., None]
    img = c1.astype(np.float32) * (1 - ramp) + c2.astype(np.float32) * ramp
    # low-frequency texture (foliage, plaster): coarse noise, bicubic upsampled
    n = max(2, out_size // int(rng.choice([2, 4, 8])))
    amp = rng.uniform(0, 35)
    coarse = rng.normal(0.0, 1.0, size=(n, n)).astype(np.float32)
    tex = np.asarray(
        Image.fromarray(coarse, mode="F").resize((out_size, out_size), Image.Resampling.BICUBIC)
    )
    img = img + (amp * tex)[..., None] * rng.uniform(0.7, 1.3, size=3).astype(np.float32)
    small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")
    canvas = small.resize((size, size), Image.Resampling.BILINEAR)

    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 9))):
        col = _clip(_muted_colour(rng))
        kind = rng.integers(0, 4)
        x0, y0 = rng.uniform(-0.2, 1.0, size=2) * size
        w, h = rng.uniform(0.1, 0.7, size=2) * size
        if kind == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=col)
        elif kind == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=col)
        elif kind == 2:
            x1, y1 = rng.uniform(-0.2, 1.2, size=2) * size
            width = max(1, int(rng.uniform(0.01, 0.08) * size))
            draw.line((x0, y0, x1, y1), fill=col, width=width)
        else:
            pts = rng.uniform(-0.2, 1.2, size=(int(rng.integers(3, 6)), 2)) * size
            draw.polygon([(float(a), float(b)) for a, b in pts], fill=col)
    return canvas


def _draw_sign(
    p: _Painter, class_id: int, pal: dict[str, Colour], rng: np.random.Generator
) -> None:
    """Draw sign ``class_id`` in sign units: centred at the origin, radius about 1."""
    red, white, black = pal["red"], pal["white"], pal["black"]
    if class_id in _SPEED_DIGITS:
        digits = _SPEED_DIGITS[class_id]
        if rng.random() < 0.5:  # thin white rim outside the red ring
            p.disc(1.0, white)
            p.disc(0.94, red)
        else:
            p.disc(1.0, red)
        p.disc(rng.uniform(0.74, 0.8), white)
        height = rng.uniform(0.74, 0.84)
        if len(digits) == 2:
            strokes = _text_strokes(digits, height, gap=0.13 * height, narrow=1.0)
        else:
            strokes = _text_strokes(digits, height * 0.92, gap=0.1 * height, narrow=0.8)
        width = rng.uniform(0.14, 0.18)
        for s in strokes:
            p.stroke(s, width, black)
    elif class_id == 8:  # stop
        oct_outer = _regular(8, 1.0, 22.5)
        p.polygon(oct_outer, white)
        p.polygon(oct_outer * 0.91, red)
        for s in _text_strokes("STOP", 0.42, gap=0.07, narrow=0.85):
            p.stroke(s, 0.085, white)
    elif class_id == 9:  # yield: inverted triangle, centroid at the origin
        tri = _regular(3, 1.18, 90.0)
        p.polygon(tri, red)
        p.polygon(tri * 0.52, white)
    elif class_id == 10:  # priority road
        dia = _regular(4, 1.0, 0.0)
        p.polygon(dia, _clip(np.asarray(black) * 0.5 + 60))
        p.polygon(dia * 0.95, white)
        p.polygon(dia * 0.66, pal["yellow"])
    elif class_id == 11:  # general caution
        tri = _regular(3, 1.18, -90.0)
        p.polygon(tri, red)
        p.polygon(tri * 0.58, white)
        p.stroke(_pts((0.0, -0.38), (0.0, 0.02)), 0.13, black)
        p.disc(0.075, black, centre=(0.0, 0.17))
    else:  # pragma: no cover - guarded by the callers
        raise ValueError(f"unknown class id {class_id}")


def _check_class_id(class_id: int) -> int:
    if isinstance(class_id, bool) or not isinstance(class_id, int | np.integer):
        raise ValueError(f"class id must be an integer, got {class_id!r}")
    cid = int(class_id)
    if not 0 <= cid < len(CLASS_NAMES):
        raise ValueError(
            f"unknown class id {cid}; valid ids are 0..{len(CLASS_NAMES) - 1} ({len(CLASS_NAMES)} "
            "classes)"
        )
    return cid


def _check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise ValueError(f"image_size must be an integer, got {image_size!r}")
    if image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIZE}, got {image_size}")
    return int(image_size)


def render_sign(class_id: int, rng: np.random.Generator, image_size: int = 32) -> np.ndarray:
    """Render one random traffic-sign image.

    Parameters
    ----------
    class_id : int
        Index into :data:`CLASS_NAMES`.
    rng : numpy.random.Generator
        Source of all randomness; the same generator state gives the same image.
    image_size : int, default 32
        Height and width of the output in pixels (at least 16).

    Returns
    -------
    ndarray of shape (image_size, image_size, 3), uint8
        The RGB image.

    Raises
    ------
    ValueError
        If ``class_id`` is unknown or ``image_size`` is smaller than 16.
    """
    cid = _check_class_id(class_id)
    out = _check_image_size(image_size)
    ss = max(1, min(4, 256 // out))  # supersampling factor
    size = out * ss

    canvas = _background(rng, size, out)
    draw = ImageDraw.Draw(canvas)

    # sign pose: radius, roll, foreshortening, position
    # diameter 60-90 % of the image, larger signs more likely, as in GTSRB's crops
    radius = 0.5 * (0.60 + 0.30 * rng.beta(2.2, 1.0)) * size
    angle = math.radians(rng.uniform(-15.0, 15.0))
    squeeze = rng.uniform(0.85, 1.0)
    skew = math.radians(rng.uniform(-20.0, 20.0))  # direction of the foreshortening
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    sk = np.array([[math.cos(skew), -math.sin(skew)], [math.sin(skew), math.cos(skew)]])
    matrix = radius * rot @ sk @ np.diag([squeeze, 1.0]) @ sk.T
    # centred within a few pixels, like GTSRB's crops around the annotated sign
    slack = 0.3 * max(0.0, 0.5 * size - radius) + 0.04 * radius
    offset = 0.5 * size + rng.uniform(-slack, slack, size=2)
    painter = _Painter(draw, matrix, offset)

    pal = _palette(rng)
    if rng.random() < 0.5:  # the post
        painter.polygon(_pts((-0.07, 0.5), (0.07, 0.5), (0.07, 4.0), (-0.07, 4.0)), pal["grey"])
    _draw_sign(painter, cid, pal, rng)

    if rng.random() < 0.12:  # partial occlusion from one side (branch, other sign, dirt)
        col = _clip(_muted_colour(rng))
        side = rng.uniform(0, 2 * math.pi)
        normal = np.array([math.cos(side), math.sin(side)])
        tangent = np.array([-normal[1], normal[0]])
        depth = rng.uniform(0.62, 0.92)  # occluder edge distance from the centre (sign units)
        lo, hi = depth * normal, 3.0 * normal
        quad = np.stack([lo - 3 * tangent, lo + 3 * tangent, hi + 3 * tangent, hi - 3 * tangent])
        painter.polygon(quad, col)

    small = canvas.reduce(ss) if ss > 1 else canvas
    # blur, capped relative to the sign so the digits stay legible in principle
    sigma = rng.uniform(0.0, 1.0) if rng.random() < 0.85 else rng.uniform(1.0, 1.5)
    sigma = min(sigma, 2.0 * radius / ss / 16.0)
    if sigma > 0.15:
        small = small.filter(ImageFilter.GaussianBlur(radius=sigma))

    # photometric changes: contrast, brightness, colour cast, uneven light, gamma, noise
    x = np.asarray(small, dtype=np.float32)
    mean = x.mean(axis=(0, 1), keepdims=True)
    contrast = rng.uniform(0.45, 1.1) if rng.random() < 0.8 else rng.uniform(0.3, 0.45)
    x = (x - mean) * contrast + mean
    gain = rng.uniform(0.45, 1.35) * rng.uniform(0.88, 1.12, size=3)
    coords = (np.arange(out, dtype=np.float32) + 0.5) / out - 0.5
    phi = rng.uniform(0, 2 * math.pi)
    shade = 1.0 + rng.uniform(0.0, 0.5) * (
        math.cos(phi) * coords[None, :] + math.sin(phi) * coords[:, None]
    )
    x = x * gain.astype(np.float32) * shade[..., None]
    x = 255.0 * (np.clip(x, 0.0, 255.0) / 255.0) ** rng.uniform(0.8, 1.25)
    noise = rng.uniform(2.0, 10.0)
    x = x + rng.normal(0.0, noise, size=x.shape).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _image_rng(seed: int, split: str, class_id: int, index: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEY[split], class_id, index))
    )


def make_synthetic_signs(
    n_train_per_class: int,
    n_test_per_class: int,
    seed: int,
    image_size: int = 32,
    classes: Sequence[int] | None = None,
) -> ImageDataset:
    """Generate a balanced traffic-sign dataset.

    Parameters
    ----------
    n_train_per_class : int
        Training images per class (at least 1).
    n_test_per_class : int
        Test images per class (0 or more).
    seed : int
        Non-negative seed; the same arguments give bit-identical arrays.
    image_size : int, default 32
        Height and width of the square images (at least 16).
    classes : sequence of int, optional
        Class ids to generate (default: all of :data:`CLASS_NAMES`). Labels keep
        their ids, and an image does not depend on which other classes are chosen.

    Returns
    -------
    ImageDataset
        ``x_train`` (n, H, W, 3) uint8 in a deterministic shuffled order,
        ``y_train`` int64, ``x_test``/``y_test`` ordered by class,
        ``class_names`` naming all classes and ``meta`` describing the call.

    Raises
    ------
    ValueError
        For a bad count, seed, image size or class id.
    """
    if isinstance(n_train_per_class, bool) or not isinstance(n_train_per_class, int | np.integer):
        raise ValueError(f"n_train_per_class must be an integer, got {n_train_per_class!r}")
    if n_train_per_class < 1:
        raise ValueError(f"n_train_per_class must be at least 1, got {n_train_per_class}")
    if isinstance(n_test_per_class, bool) or not isinstance(n_test_per_class, int | np.integer):
        raise ValueError(f"n_test_per_class must be an integer, got {n_test_per_class!r}")
    if n_test_per_class < 0:
        raise ValueError(f"n_test_per_class must be at least 0, got {n_test_per_class}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    size = _check_image_size(image_size)
    ids = (
        list(range(len(CLASS_NAMES))) if classes is None else [_check_class_id(c) for c in classes]
    )
    if not ids:
        raise ValueError("classes must name at least one class id, got an empty sequence")
    dupes = sorted({c for c in ids if ids.count(c) > 1})
    if dupes:
        raise ValueError(f"classes contains repeated class ids {dupes}")
    seed, n_train, n_test = int(seed), int(n_train_per_class), int(n_test_per_class)

    def split(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.empty((n * len(ids), size, size, 3), dtype=np.uint8)
        y = np.repeat(np.asarray(ids, dtype=np.int64), n)
        k = 0
        for cid in ids:
            for i in range(n):
                x[k] = render_sign(cid, _image_rng(seed, name, cid, i), size)
                k += 1
        return x, y

    x_train, y_train = split("train", n_train)
    x_test, y_test = split("test", n_test)
    order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SHUFFLE_KEY,)))
    perm = order.permutation(len(y_train))
    return ImageDataset(
        x_train=x_train[perm],
        y_train=y_train[perm],
        x_test=x_test,
        y_test=y_test,
        class_names=list(CLASS_NAMES),
        meta={
            "generator": "synthetic_signs",
            "seed": seed,
            "n_train_per_class": n_train,
            "n_test_per_class": n_test,
            "image_size": size,
            "classes": ids,
        },
    )


def save_montage(dataset: ImageDataset, path: str | os.PathLike[str], per_class: int = 8) -> None:
    """Save a PNG grid of training images: one row per class present, class names as labels.

    Parameters
    ----------
    dataset : ImageDataset
        Images to show (the first ``per_class`` training images of each class).
    path : str or path-like
        Output PNG file; written atomically.
    per_class : int, default 8
        Images per row (at least 1).

    Raises
    ------
    ValueError
        If ``per_class`` is smaller than 1 or the training set is empty.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    present = [int(c) for c in np.unique(dataset.y_train)]
    if not present:
        raise ValueError("the dataset has no training images to show")
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    rows = len(present)
    fig = Figure(figsize=(1.0 + 0.8 * per_class, 0.8 * rows), dpi=100)
    axes = fig.subplots(rows, per_class, squeeze=False)
    for r, cid in enumerate(present):
        idx = np.flatnonzero(dataset.y_train == cid)[:per_class]
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(idx):
                ax.imshow(dataset.x_train[idx[c]], interpolation="nearest")
        name = dataset.class_names[cid] if cid < len(dataset.class_names) else "?"
        axes[r, 0].set_ylabel(f"{cid}: {name}", rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.2, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.08)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
