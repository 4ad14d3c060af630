"""A picture of an attack: clean vs poisoned samples, trigger visible.

The montage is drawn as one uint8 canvas enlarged by an integer factor with
nearest-neighbour repetition and shown at exactly one canvas pixel per screen
pixel, so every image pixel appears as a crisp ``scale`` x ``scale`` block.
"""

from __future__ import annotations

import os

import numpy as np

from poisonscan.storage import ImageDataset, atomic_path

__all__ = ["attack_title", "save_attack_montage"]

_GAP = 2  # pixels between images (before enlarging)
_BLOCK_GAP = 6  # pixels between the training and the test block


def attack_title(meta: dict) -> str:
    """One line describing the attack stored in a poisoned dataset's ``meta``."""
    a = meta.get("attack", {})
    name = a.get("name", "?")
    if name == "clean":
        return f"clean control (no attack), class {a.get('target')} analysed"
    parts = [name]
    if "source" in a:
        source = "every other class" if a["source"] is None else a["source"]
        parts.append(f"{source} -> {a['target']}")
    else:
        parts.append(f"class {a.get('target')}")
    if "poison_rate" in a:
        parts.append(f"p = {a['poison_rate']:g}, {meta.get('n_poison', '?')} images")
    if name == "label_consistent":
        parts.append(f"PGD {a['norm']} eps {a['eps']:g}, {a['trigger']}")
        if a["trigger"] == "checkerboard":
            where = "four corners" if a["corners"] == "all" else "bottom right"
            parts.append(f"amplitude {a['amplitude']} ({where}, d = {a['distance']})")
    if name == "blended":
        parts.append(f"{a['pattern']} alpha {a['alpha']:g}")
    if name == "sig":  # whole-image triggers
        test = "" if a["test_delta"] is None else f" (test {a['test_delta']:g})"
        parts.append(f"sinusoid delta {a['delta']:g}{test}, f {a['frequency']:g}, labels kept")
    if name == "wanet":
        parts.append(
            f"warp k {a['k']}, s {a['s']:g}, rescale {a['grid_rescale']:g}, "
            f"{meta.get('n_cross', '?')} noise-mode images (cross ratio {a['cross_ratio']:g})"
        )
    if name == "ftrojan":
        pos = " ".join(f"({r},{c})" for r, c in a["positions"])
        parts.append(f"DCT {pos} of UV += {a['magnitude']:g}, window {a['window_size']}")
    if name in ("badnets", "all_to_all", "tact"):  # patch triggers
        parts.append(f"{a['trigger_size']} px {a['pattern']} patch, {a['placement']}")
    if name == "all_to_all":
        parts.append("y -> y + 1 (mod C)")
    if name == "tact":
        parts.append(f"cover classes {a['cover_classes']} x {a['cover_ratio']:g}")
    if name == "multi_target":
        parts.append(f"targets {[a['target'], *a['other_targets']]}, {a['trigger_size']} px each")
    if name == "adaptive_blend":
        parts.append(
            f"{a['pattern']} alpha {a['alpha']:g} (test {a['test_alpha']:g}), "
            f"{a['pieces']} pieces, {a['mask_rate']:g} masked, covers x {a['cover_ratio']:g}"
        )
    if name == "adaptive_patch":
        parts.append(
            f"4 patches alpha {a['train_alphas']}, test {a['test_triggers']} at 1, "
            f"covers x {a['cover_ratio']:g}"
        )
    return ", ".join(parts)


def _difference(clean: np.ndarray, poisoned: np.ndarray) -> np.ndarray:
    """|poisoned - clean| (max over channels) as grey RGB, 255 * sqrt(d / max d) per image.

    The square root keeps small PGD perturbations visible next to a full-amplitude trigger.
    """
    d = np.abs(poisoned.astype(np.int16) - clean.astype(np.int16)).max(axis=-1).astype(np.float64)
    top = d.reshape(len(d), -1).max(axis=1, initial=0.0)
    d = 255.0 * np.sqrt(d / np.maximum(top, 1.0)[:, None, None])
    return np.repeat(d.astype(np.uint8)[..., None], 3, axis=-1)


def save_attack_montage(
    clean: ImageDataset,
    poisoned: ImageDataset,
    path: str | os.PathLike[str],
    n: int = 8,
    scale: int = 4,
) -> None:
    """Save a PNG: the first ``n`` poisoned training images next to their clean originals.

    Rows: clean original, poisoned, changed pixels (|difference| scaled per
    image); then, where the attack has a triggered test set, its first ``n``
    test images without and with the test-time trigger. Recorded trigger boxes
    are outlined in red. For the clean control the first ``n`` images of the
    analysed class are shown.

    Parameters
    ----------
    clean, poisoned : ImageDataset
        The dataset before and after :meth:`Attack.poison`.
    path : str or path-like
        Output PNG file; written atomically.
    n : int, default 8
        Samples per row (at least 1).
    scale : int, default 4
        Nearest-neighbour enlargement factor (at least 1).

    Raises
    ------
    ValueError
        If ``n`` or ``scale`` is smaller than 1.
    """
    if n < 1 or scale < 1:
        raise ValueError(f"n and scale must be at least 1, got n={n}, scale={scale}")
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state
    from matplotlib.patches import Rectangle

    from poisonscan.attacks import attack_from_meta

    attack = attack_from_meta(poisoned.meta)
    size = clean.image_shape[:2]
    mask = poisoned.extra["poison_mask"]
    chosen = np.flatnonzero(mask)[:n]
    rows: list[tuple[str, np.ndarray, np.ndarray | None]] = []  # label, images, positions
    if chosen.size:
        pos = poisoned.extra["trigger_position"][chosen]
        rows += [
            ("clean", clean.x_train[chosen], None),
            ("poisoned", poisoned.x_train[chosen], pos),
            ("changed", _difference(clean.x_train[chosen], poisoned.x_train[chosen]), pos),
        ]
    elif attack.target is not None:
        idx = np.flatnonzero(clean.y_train == attack.target)[:n]
        rows.append((f"class {attack.target}", clean.x_train[idx], None))
    else:  # an audit: no attack and no target class, a few images of every class
        idx = np.concatenate(
            [np.flatnonzero(clean.y_train == c)[:1] for c in range(clean.n_classes)]
        )
        rows.append(("one per class", clean.x_train[idx[:n]], None))
    block_break = len(rows)
    if "x_test_triggered" in poisoned.extra and len(poisoned.extra["x_test_triggered"]):
        t_idx = poisoned.extra["test_triggered_index"][:n]
        t_pos = poisoned.extra["trigger_position_test"][:n]
        rows += [
            ("test clean", clean.x_test[t_idx], None),
            ("test triggered", poisoned.extra["x_test_triggered"][:n], t_pos),
        ]

    h, w = size
    cols = max(len(images) for _, images, _ in rows)
    tops = []
    y = 0
    for r in range(len(rows)):
        if r == block_break and r > 0:
            y += _BLOCK_GAP - _GAP
        tops.append(y)
        y += h + _GAP
    canvas = np.full((y - _GAP, cols * (w + _GAP) - _GAP, 3), 255, dtype=np.uint8)
    for top, (_, images, _) in zip(tops, rows, strict=True):
        for c, img in enumerate(images):
            canvas[top : top + h, c * (w + _GAP) : c * (w + _GAP) + w] = img
    big = np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)

    dpi = 100
    left_px, top_px, pad_px = 110, 24, 4
    fig_w = (left_px + big.shape[1] + pad_px) / dpi
    fig_h = (top_px + big.shape[0] + pad_px) / dpi
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes(
        (left_px / dpi / fig_w, pad_px / dpi / fig_h, big.shape[1] / dpi / fig_w,
         big.shape[0] / dpi / fig_h)
    )  # fmt: skip
    ax.imshow(big, interpolation="nearest")
    ax.set_axis_off()
    for top, (label, images, positions) in zip(tops, rows, strict=True):
        ax.text(-8, (top + h / 2) * scale, label, ha="right", va="center", fontsize=8)
        if positions is None:
            continue
        for c, p in enumerate(positions[: len(images)]):
            for bt, bl, bh, bw in attack.trigger_boxes(p, size):
                if (bh, bw) == (h, w):
                    continue  # a whole-image trigger (blend) needs no outline
                ax.add_patch(
                    Rectangle(
                        ((c * (w + _GAP) + bl) * scale - 0.5, (top + bt) * scale - 0.5),
                        bw * scale, bh * scale, fill=False, edgecolor="red", linewidth=0.8,
                    )
                )  # fmt: skip
    fig.text(0.01, 1 - 4 / dpi / fig_h, attack_title(poisoned.meta), va="top", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
