"""Reading one image file of a user's dataset: check it, convert it to RGB, resize it.

Accepted formats (by what Pillow finds in the file, not by its name): PNG, JPEG, PPM/PGM/PBM,
BMP, WebP. Every mode is accepted and converted to 8-bit RGB as torchvision's ``ImageFolder``
loader does (``Image.convert("RGB")``: grayscale replicated, alpha dropped, palettes looked up),
so the model sees what a user's own PyTorch training saw; 16-bit grayscale (``I;16``, ``I``)
is scaled to 8 bits first (65535 -> 255: Pillow's own conversion would clip at 255 instead).
Images are resized to a square ``size`` x ``size`` with Pillow's bilinear filter
(antialiased when shrinking), aspect ratio not kept, like the GTSRB loader.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["EXTENSIONS", "FORMATS", "check_image", "read_image", "to_rgb"]

# Pillow's format names of the accepted files, and the file name extensions taken as images.
FORMATS = ("PNG", "JPEG", "PPM", "BMP", "WEBP")
EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".ppm", ".pgm", ".pbm", ".pnm", ".bmp", ".webp"}
)
# Modes holding more than 8 bits per pixel that Pillow's convert would clip, not scale.
_WIDE = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def check_image(path: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """Decode ``path`` completely; return its mode and what is wrong with it (or None).

    JPEGs are decoded at a reduced scale (every byte is still read, so a truncated file
    fails as it would at full scale).

    Returns
    -------
    mode : str or None
        Pillow's mode (``RGB``, ``L``, ``RGBA``, ``I;16`` ...); None if unreadable.
    problem : str or None
        ``"unreadable image (...)"``, ``"unsupported image format GIF ..."`` or None.
    """
    try:
        with Image.open(path) as img:
            fmt, mode = img.format, img.mode
            if fmt not in FORMATS:
                return mode, (f"unsupported image format {fmt} (supported: {', '.join(FORMATS)})")
            if fmt == "JPEG":
                img.draft(None, (64, 64))
            img.load()
    except Image.DecompressionBombError as err:
        return None, f"image too large to decode safely ({err})"
    except Exception as err:
        return None, f"unreadable or truncated image ({_reason(err)})"
    return mode, None


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB (see the module docstring)."""
    if img.mode in _WIDE:
        wide = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8), "L")
    return img if img.mode == "RGB" else img.convert("RGB")


def read_image(path: str | os.PathLike[str], size: int) -> tuple[np.ndarray, str]:
    """Read ``path`` as a (size, size, 3) uint8 RGB array; also return its original mode.

    Raises
    ------
    ValueError
        If the file cannot be decoded (the message names it).
    """
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":  # decode at the smallest DCT scale that is >= size
                img.draft(None, (size, size))
            img.load()
            mode = img.mode
            rgb = to_rgb(img)
    except Exception as err:
        raise ValueError(f"{Path(path)}: unreadable or truncated image ({_reason(err)})") from err
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8), mode
