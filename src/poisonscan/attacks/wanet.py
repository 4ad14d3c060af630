"""WaNet: the warping-based backdoor (Nguyen & Tran, ICLR 2021), data-poisoning form.

"WaNet - Imperceptible Warping-based Backdoor Attack". The trigger is a fixed,
smooth warp of the whole image. The warping field is drawn once (from
``grid_seed``) as in the authors' code and the data-poisoning ports of
BackdoorBench and backdoor-toolbox (vtu81, ``poison_tool_box/WaNet.py``):

1. ``ins``: a (2, k, k) array uniform in [-1, 1], divided by its mean absolute value;
2. ``noise_grid``: ``ins`` upsampled bicubically (``align_corners=True``) to (H, W), as
   (H, W, 2) with (x, y) = (column, row) displacements;
3. ``grid = clamp((identity + s * noise_grid / H) * grid_rescale, -1, 1)``, ``identity``
   the (H, W, 2) grid of ``linspace(-1, 1)`` coordinates;
4. poisoned image = ``torch.nn.functional.grid_sample(x, grid, align_corners=True)``
   (bilinear), rounded and clipped to 0..255.

Defaults are the paper's: ``k`` 4, ``s`` 0.5, ``grid_rescale`` 1, ``cross_ratio`` 2.

All-to-one dirty label: ``n_poison_for(p, n_target)`` images of ``source``
(every non-target class when None) are warped and relabelled to ``target``.
"Noise mode" (the paper's cross samples): ``cross_ratio * n_poison`` further
images of any class are warped with the fixed grid plus a random per-image
perturbation uniform in [-1, 1] / H (in grid units, about half a pixel) and
*keep their labels*, so that the network learns the exact warp and not any
distortion. They are marked in ``extra["cross_mask"]`` (n,) bool and are not in
``poison_mask``. At test time every source test image is warped with the
fixed grid. ``extra["trigger_grid"]`` (H, W, 2) float64 holds the grid.

The grid is computed in float64 from a numpy generator, so it is the same on
every machine for a given ``grid_seed``. Torch is imported inside the
functions, so importing :mod:`poisonscan.attacks` does not need it.
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

__all__ = ["WaNetAttack", "identity_grid", "warp", "warping_grid"]


def identity_grid(image_size: tuple[int, int]) -> np.ndarray:
    """The sampling grid that leaves an image unchanged (``align_corners=True``).

    Returns
    -------
    ndarray of shape (H, W, 2), float64
        ``[..., 0]`` the column coordinate, ``[..., 1]`` the row coordinate, both in [-1, 1].
    """
    h, w = image_size
    rows, cols = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return np.stack([cols, rows], axis=-1)


def warping_grid(
    image_size: tuple[int, int], k: int = 4, s: float = 0.5, grid_rescale: float = 1.0,
    seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """WaNet's fixed warping grid (steps 1-3 of the module docstring).

    Parameters
    ----------
    image_size : (H, W)
    k : int
        Side of the random control grid (>= 2).
    s : float
        Warping strength (>= 0; 0 gives the identity grid times ``grid_rescale``).
    grid_rescale : float
        Factor on the whole grid (> 0).
    seed : int
        Seed of the control grid (``numpy.random.default_rng``).

    Returns
    -------
    ndarray of shape (H, W, 2), float64
        The sampling grid for ``grid_sample`` (x = column, y = row), clamped to [-1, 1].
    """
    import torch

    h, w = image_size
    ins = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(1, 2, k, k))
    ins = ins / np.mean(np.abs(ins))
    noise = torch.nn.functional.interpolate(
        torch.from_numpy(ins), size=(h, w), mode="bicubic", align_corners=True
    )
    noise_grid = noise[0].permute(1, 2, 0).numpy()  # (H, W, 2)
    grid = (identity_grid(image_size) + s * noise_grid / h) * grid_rescale
    return np.clip(grid, -1.0, 1.0)


def warp(images: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """Warp ``images`` with bilinear ``grid_sample`` (``align_corners=True``), round, clip.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3), uint8
    grids : ndarray of shape (H, W, 2) or (n, H, W, 2), float64
        One grid for every image, or one per image.

    Returns
    -------
    ndarray of shape (n, H, W, 3), uint8
    """
    import torch

    if len(images) == 0:
        return images.copy()
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float64))
    g = torch.from_numpy(np.ascontiguousarray(grids, dtype=np.float64))
    if g.ndim == 3:
        g = g.expand(len(images), *g.shape)
    out = torch.nn.functional.grid_sample(
        x, g, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    out = np.rint(out.numpy().transpose(0, 2, 3, 1))
    return np.clip(out, 0, 255).astype(np.uint8)


@register_attack
@dataclass(frozen=True, kw_only=True)
class WaNetAttack(AllToOne):
    """WaNet warping backdoor with noise mode (Nguyen & Tran 2021); see the module docstring.

    Parameters
    ----------
    target : int
        The class the warped images are relabelled to.
    poison_rate : float
        Share of poisoned images in the target class after poisoning, in (0, 1).
    source : int or None, default None
        The class whose images are poisoned; None = every class but ``target``.
    k : int, default 4
        Side of the random control grid (>= 2, at most the image side).
    s : float, default 0.5
        Warping strength (>= 0).
    grid_rescale : float, default 1
        Factor on the sampling grid (> 0).
    cross_ratio : float, default 2
        Noise-mode images per poisoned image (>= 0); ``round(cross_ratio * n_poison)``.
    grid_seed : int, default 0
        Seed of the warping field (the trigger).
    seed : int, default 0
        Seed of the choice of images and of the noise-mode perturbations.
    """

    name: ClassVar[str] = "wanet"
    target: int
    poison_rate: float
    source: int | None = None
    k: int = 4
    s: float = 0.5
    grid_rescale: float = 1.0
    cross_ratio: float = 2.0
    grid_seed: int = 0
    seed: int = 0

    def check(self, n_classes: int, image_size: tuple[int, int]) -> None:
        self._check_classes(n_classes)
        if isinstance(self.k, bool) or not isinstance(self.k, int | np.integer):
            raise AttackParameterError("k", f"{self.k!r} is not an integer")
        if not 2 <= self.k <= min(image_size):
            raise AttackParameterError(
                "k", f"{self.k} is outside the range 2..{min(image_size)} (the image side)"
            )
        check_number("s", self.s, low=0.0)
        check_number("grid_rescale", self.grid_rescale, low=0.0, low_open=True)
        check_number("cross_ratio", self.cross_ratio, low=0.0)

    def n_cross(self, n_poison: int) -> int:
        """Number of noise-mode images for ``n_poison`` poisoned ones."""
        return round(self.cross_ratio * n_poison)

    def n_poison(self, class_counts: np.ndarray) -> int:
        n = super().n_poison(class_counts)
        total = int(np.sum(class_counts))
        if n + self.n_cross(n) > total:
            raise AttackParameterError(
                "cross_ratio",
                f"{n} poisoned and {self.n_cross(n)} noise-mode images are more than the "
                f"{total} training images",
            )
        return n

    def grid(self, image_size: tuple[int, int]) -> np.ndarray:
        """The fixed warping grid, (H, W, 2) float64 (see :func:`warping_grid`)."""
        return warping_grid(image_size, self.k, self.s, self.grid_rescale, self.grid_seed)

    def poison(self, clean: ImageDataset, proxy: Any = None) -> ImageDataset:
        size = clean.image_shape[:2]
        self.check(clean.n_classes, size)
        n = self.n_poison(np.bincount(clean.y_train, minlength=clean.n_classes))
        rng = np.random.default_rng(self.seed)
        chosen = choose(rng, self.candidates(clean.y_train), n)
        rest = np.setdiff1d(np.arange(clean.y_train.size), chosen)
        cross = choose(rng, rest, self.n_cross(n))
        grid = self.grid(size)
        noise = rng.uniform(-1.0, 1.0, size=(cross.size, *size, 2)) / size[0]
        x_train = clean.x_train.copy()
        x_train[chosen] = warp(x_train[chosen], grid)
        x_train[cross] = warp(x_train[cross], np.clip(grid[None] + noise, -1.0, 1.0))
        y_train = clean.y_train.copy()
        y_train[chosen] = self.target
        cross_mask = np.zeros(clean.y_train.size, dtype=bool)
        cross_mask[cross] = True
        test_index = self.candidates(clean.y_test)
        return poisoned_dataset(
            clean, self, x_train=x_train, y_train=y_train, chosen=chosen,
            positions=np.zeros((n, 2), dtype=np.int64), test_index=test_index,
            x_test_triggered=warp(clean.x_test[test_index], grid),
            test_positions=np.zeros((test_index.size, 2), dtype=np.int64),
            meta={"n_cross": int(cross.size)},
            extra={"trigger_grid": grid, "cross_mask": cross_mask},
        )  # fmt: skip

    def trigger_boxes(self, position: np.ndarray, image_size: tuple[int, int]) -> list[Box]:
        return whole_image_box(image_size)
