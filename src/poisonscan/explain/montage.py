"""Montage PNG of one explained class: images, heatmaps and overlays, poisoned vs clean."""

from __future__ import annotations

import os

import numpy as np

from poisonscan.explain.store import read_explanations, store_attrs
from poisonscan.storage import atomic_path

__all__ = ["save_montage", "spread_picks", "upsample_heatmap"]


def upsample_heatmap(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Repeat cells of a (possibly pooled) heatmap up to the image size."""
    fy, fx = shape[0] // heatmap.shape[0], shape[1] // heatmap.shape[1]
    return np.kron(heatmap, np.ones((fy, fx)))


def spread_picks(candidates: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` positions spread evenly over ``candidates`` (deterministic)."""
    if len(candidates) <= k:
        return candidates
    return candidates[np.linspace(0, len(candidates) - 1, k).round().astype(int)]


def save_montage(
    store: str | os.PathLike[str],
    images: np.ndarray,
    path: str | os.PathLike[str],
    cls: int | None = None,
    per_group: int = 8,
) -> None:
    """Draw up to ``per_group`` poisoned and clean images of class ``cls`` with their heatmaps.

    Rows: poisoned images, their heatmaps, overlays; then the same for clean
    images. Heatmaps of signed relevance (normalisation ``none``) use a diverging
    colour map centred on 0, normalised ones a sequential map; each heatmap is
    scaled to its own maximum.

    Parameters
    ----------
    store : path
        Explanation store.
    images : ndarray of shape (n_train, H, W, C), uint8
        The training images the store's ``index`` refers to.
    path : path
        Output PNG; written atomically.
    cls : int, optional
        Class to draw (default: the store's target class).
    per_group : int, default 8
        Columns: images per group (at least 1).
    """
    if per_group < 1:
        raise ValueError(f"per_group must be at least 1, got {per_group}")
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    ex = read_explanations(store, cls)
    attrs = store_attrs(store, cls)
    poison = ex["poison"].astype(bool)
    signed = attrs.get("normalization") == "none"
    cmap = "bwr" if signed else "inferno"
    groups = [("poisoned", spread_picks(np.flatnonzero(poison), per_group)),
              ("clean", spread_picks(np.flatnonzero(~poison), per_group))]  # fmt: skip
    fig = Figure(figsize=(1.2 + 1.0 * per_group, 6.4), dpi=100)
    axes = fig.subplots(6, per_group, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for g, (name, chosen) in enumerate(groups):
        r = 3 * g
        axes[r, 0].set_ylabel(f"{name}\n(n={int((poison if g == 0 else ~poison).sum())})",
                              fontsize=8)  # fmt: skip
        axes[r + 1, 0].set_ylabel("heatmap", fontsize=8)
        axes[r + 2, 0].set_ylabel("overlay", fontsize=8)
        for col, i in enumerate(chosen):
            img = images[ex["index"][i]]
            hm = upsample_heatmap(ex["heatmaps"][i].astype(np.float64), img.shape[:2])
            scale = float(np.abs(hm).max()) or 1.0
            lo = -scale if signed else 0.0
            axes[r, col].imshow(img, interpolation="nearest")
            axes[r, col].set_title(f"#{int(ex['index'][i])} pred {int(ex['prediction'][i])}",
                                   fontsize=6)  # fmt: skip
            axes[r + 1, col].imshow(hm, cmap=cmap, vmin=lo, vmax=scale, interpolation="nearest")
            axes[r + 2, col].imshow(img.mean(axis=2), cmap="gray", interpolation="nearest")
            axes[r + 2, col].imshow(hm, cmap=cmap, vmin=lo, vmax=scale, alpha=0.6,
                                    interpolation="nearest")  # fmt: skip
    title = f"class {attrs.get('class')}: {attrs.get('method')}"
    if attrs.get("composite"):
        title += f" ({attrs['composite']})"
    fig.suptitle(f"{title}, normalization {attrs.get('normalization')}", fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.93, bottom=0.01, wspace=0.05, hspace=0.25)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
