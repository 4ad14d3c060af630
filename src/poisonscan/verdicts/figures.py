"""Figures of the verdicts: every class's test statistic, and per poisoned class its trigger,
the causal check and the most suspicious images with their heatmaps."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from poisonscan.storage import ImageDataset, atomic_path
from poisonscan.verdicts.audit import AuditResult

__all__ = ["save_class_montage", "save_verdict_figure"]

PathLike = str | os.PathLike[str]

_COLOURS = {"poisoned": "tab:red", "clean": "tab:blue", "too_small": "lightgrey",
            "inconclusive": "darkgrey"}  # fmt: skip


def save_verdict_figure(
    result: AuditResult, ds: ImageDataset, path: PathLike, names: Mapping[int, str]
) -> None:
    """Bar chart of the class test's robust z per class (the threshold as a line; red:
    poisoned; orange: a candidate the causal check turned down), and the recovered trigger
    of every poisoned class with its flip rates."""
    from matplotlib.figure import Figure

    t = result.test
    poisoned = result.poisoned_classes
    fig = Figure(figsize=(10, 3.6 + 2.4 * len(poisoned)), layout="constrained")
    grid = fig.add_gridspec(1 + len(poisoned), 3, height_ratios=[3.6] + [2.4] * len(poisoned))
    ax = fig.add_subplot(grid[0, :])
    colours = []
    for c, cand in zip(t.classes, t.poisoned, strict=True):
        verdict = result.verdict[int(c)]
        colours.append("tab:orange" if cand and verdict == "clean" else _COLOURS[verdict])
    z = np.nan_to_num(t.z, nan=0.0)
    ax.bar([str(int(c)) for c in t.classes], z, color=colours)
    ax.axhline(result.params.z_threshold, color="black", linestyle=":", linewidth=1,
               label=f"z threshold {result.params.z_threshold:.2f}")  # fmt: skip
    ax.set_xlabel("class")
    ax.set_ylabel("robust z of the class test")
    ax.tick_params(axis="x", labelsize=7)
    title = (
        "poisoned: " + ", ".join(f"{c} ({names[c]})" for c in poisoned)
        if poisoned
        else ("no class is poisoned")
    )
    ax.set_title(f"Verdicts per class ({title}; red: poisoned, orange: turned down by the "
                 "causal check, grey: too small)", fontsize=9)  # fmt: skip
    ax.legend(fontsize=8, loc="upper right")
    for row, c in enumerate(poisoned, start=1):
        trig = result.triggers.get(c)
        ax_t = fig.add_subplot(grid[row, 0])
        if trig is not None:
            ax_t.imshow(np.clip(trig.pattern / 255.0, 0, 1), interpolation="nearest")
            ax_t.set_title(f"class {c}: recovered trigger {trig.size}x{trig.size}\n"
                           f"rows {trig.region[0]}-{trig.region[2] - 1}, cols "
                           f"{trig.region[1]}-{trig.region[3] - 1}", fontsize=8)  # fmt: skip
        ax_t.axis("off")
        ax_f = fig.add_subplot(grid[row, 1:])
        flip = result.flips.get(c)
        if flip is not None and flip.n:
            x = np.arange(len(flip.classes))
            ax_f.bar(x - 0.2, flip.trigger_rates, 0.4, label="trigger pasted", color="tab:red")
            ax_f.bar(x + 0.2, flip.control_rates, 0.4, label="control patch", color="tab:grey")
            ax_f.set_xticks(x, [str(int(k)) for k in flip.classes], fontsize=6)
            ax_f.set_ylabel(f"share predicted {c}")
            ax_f.set_xlabel("class of the clean test images")
            ax_f.set_title(
                f"causal check: median {flip.trigger_rate:.2f} vs control "
                f"{flip.control_rate:.2f} (p {flip.p_value:.1g})",
                fontsize=8,
            )
            ax_f.legend(fontsize=7)  # fmt: skip
        else:
            ax_f.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def save_class_montage(
    result: AuditResult,
    ds: ImageDataset,
    heatmaps: np.ndarray,
    index: np.ndarray,
    cls: int,
    path: PathLike,
    per_row: int = 8,
) -> None:
    """The most suspicious images of class ``cls`` with their heatmaps, and the trigger.

    Parameters
    ----------
    heatmaps : ndarray of shape (n_c, H, W)
        The class's heatmaps, aligned with ``index`` (its positions in the training set).
    """
    from matplotlib.figure import Figure

    inside = np.flatnonzero(result.flagged[index])
    order = inside[np.argsort(-result.score[index][inside], kind="stable")][:per_row]
    fig = Figure(figsize=(1.3 * (per_row + 1), 3.0), layout="constrained")
    axes = np.asarray(fig.subplots(2, per_row + 1, squeeze=False))
    trig = result.triggers.get(cls)
    if trig is not None:
        axes[0, 0].imshow(np.clip(trig.pattern / 255.0, 0, 1), interpolation="nearest")
        axes[0, 0].set_title("trigger", fontsize=8)
    if len(order):
        axes[1, 0].imshow(heatmaps[order].mean(axis=0), cmap="hot")
        axes[1, 0].set_title("mean heatmap", fontsize=8)
    for j, k in enumerate(order, start=1):
        i = int(index[k])
        axes[0, j].imshow(ds.x_train[i])
        axes[0, j].set_title(f"#{i} q {result.q[i]:.1g}", fontsize=6)
        axes[1, j].imshow(heatmaps[k], cmap="hot")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"class {cls}: {int(result.flagged[index].sum())} images flagged "
                 "(most suspicious first; images above, heatmaps below)", fontsize=9)  # fmt: skip
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
