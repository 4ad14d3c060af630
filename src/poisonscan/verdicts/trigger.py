"""Trigger recovery from a suspicious group's heatmaps, the causal paste test, and trigger scores.

A backdoor trigger is where the explanations of the poisoned images concentrate:

1. :func:`recover_trigger`: for every image of the group, the square window (side
   ``s`` from ``sizes``) that holds the most relevance; ``s`` is the smallest side
   that captures nearly as much relevance as the largest one (the knee). The trigger
   is the pixel-wise median of the images inside their windows, with the windows'
   positions and the share of relevance they hold.
2. :func:`paste` puts a pattern onto images at positions drawn from the recovered ones.
   The causal test (:func:`flip_rates`) pastes the trigger onto clean test images of
   the *other* classes and counts how often the model's prediction flips to the
   analysed class, against the same paste of a *control* patch of the same size cut
   from the group's own images away from the trigger window. A real trigger flips
   far more often than the control; the relevance peak of a clean class (a digit,
   a border) does not.
3. :func:`trigger_scores` scores every image by how closely its pixels around the
   recovered positions match the trigger pattern, so that poisoned images whose
   heatmaps were diffuse (the model learned the trigger only partly) are found too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

__all__ = [
    "FlipTest",
    "Trigger",
    "flip_rates",
    "paste",
    "recover_trigger",
    "trigger_scores",
    "window_mass",
]


@dataclass(frozen=True)
class Trigger:
    """A recovered trigger.

    Attributes
    ----------
    size : int
        Side of the square window, in pixels of the images.
    pattern : ndarray of shape (size, size, 3), float64
        Pixel-wise median of the group's images inside their windows (0..255).
    positions : ndarray of shape (m, 2), int64
        Top-left (row, col) of each group image's window.
    relevance_share : float
        Median share of an image's relevance inside its window.
    spread : float
        Median absolute deviation of the windowed pixels from ``pattern`` (0..255):
        small when the group's windows show the same thing.
    delta : ndarray of shape (size, size, 3), float64
        The additive part: the pixel-wise median of the windows minus each window's own
        mean colour. A pasted trigger (a sticker) shows in ``pattern``; a trigger added to
        the image (a checkerboard of +-amplitude, label-consistent attacks) in ``delta``.
    """

    size: int
    pattern: np.ndarray
    positions: np.ndarray
    relevance_share: float
    spread: float
    delta: np.ndarray

    @property
    def region(self) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)``: the smallest box holding every window."""
        top, left = self.positions.min(axis=0)
        bottom, right = self.positions.max(axis=0) + self.size
        return int(top), int(left), int(bottom), int(right)


def window_mass(heatmaps: np.ndarray, size: int) -> np.ndarray:
    """Relevance inside every ``size`` x ``size`` window.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, H, W)

    Returns
    -------
    ndarray of shape (n, H - size + 1, W - size + 1): entry (i, r, c) is the sum of
    heatmap i over rows r..r+size-1 and columns c..c+size-1.
    """
    h = np.asarray(heatmaps, dtype=np.float64)
    c = np.pad(h.cumsum(axis=1).cumsum(axis=2), ((0, 0), (1, 0), (1, 0)))
    return c[:, size:, size:] - c[:, :-size, size:] - c[:, size:, :-size] + c[:, :-size, :-size]


def _best_windows(heatmaps: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Share of positive relevance in each heatmap's best window, and its top-left corner."""
    h = np.clip(np.asarray(heatmaps, dtype=np.float64), 0.0, None)
    total = h.reshape(len(h), -1).sum(axis=1)
    mass = window_mass(h, size).reshape(len(h), -1)
    best = mass.argmax(axis=1)
    width = h.shape[2] - size + 1
    positions = np.stack([best // width, best % width], axis=1).astype(np.int64)
    share = mass[np.arange(len(h)), best] / np.where(total > 0, total, 1.0)
    return share, positions


def recover_trigger(
    heatmaps: np.ndarray,
    images: np.ndarray,
    sizes: Sequence[int] = (1, 2, 3, 4, 5, 6),
    knee: float = 0.8,
) -> Trigger:
    """The trigger a group of images shares, from where their relevance concentrates.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, H, W)
        The group's heatmaps at the images' resolution.
    images : ndarray of shape (n, H, W, 3), uint8
    sizes : sequence of int
        Window sides to try.
    knee : float, default 0.8
        The side chosen is the smallest whose median captured share reaches ``knee``
        times that of the largest side: a trigger's relevance stops growing with the
        window once the window covers it, a diffuse heatmap's grows with the area. (On
        real GTSRB with a 3x3 sticker at p = 5 %, the extreme group's heatmaps gave side
        3 and the sticker's exact colour; RESULTS.md.)

    Returns
    -------
    Trigger
    """
    h = np.asarray(heatmaps, dtype=np.float64)
    x = np.asarray(images)
    if h.ndim != 3 or x.shape[:3] != h.shape or x.shape[-1] != 3:
        raise ValueError(
            f"need heatmaps (n, H, W) and images (n, H, W, 3) of the same n, H, W; got "
            f"{h.shape} and {x.shape}"
        )
    if len(h) == 0:
        raise ValueError("recover_trigger needs at least one image")
    sizes = sorted(int(s) for s in sizes if 1 <= int(s) <= min(h.shape[1:]))
    shares = {s: _best_windows(h, s) for s in sizes}
    medians = {s: float(np.median(shares[s][0])) for s in sizes}
    size = next(s for s in sizes if medians[s] >= knee * medians[sizes[-1]])
    share, positions = shares[size]
    patches = np.stack([x[i, r : r + size, c : c + size] for i, (r, c) in enumerate(positions)])
    patches = patches.astype(np.float64)
    pattern = np.median(patches, axis=0)
    spread = float(np.median(np.abs(patches - pattern)))
    delta = np.median(patches - patches.mean(axis=(1, 2), keepdims=True), axis=0)
    return Trigger(size, pattern, positions, float(np.median(share)), spread, delta)


def paste(
    images: np.ndarray,
    pattern: np.ndarray,
    positions: np.ndarray,
    rng: np.random.Generator,
    additive: bool = False,
) -> np.ndarray:
    """Copies of ``images`` with ``pattern`` put at a position drawn from ``positions``.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3), uint8
    pattern : ndarray of shape (s, s, 3)
    positions : ndarray of shape (m, 2)
        Top-left corners to draw from (uniformly, one per image).
    rng : numpy Generator
    additive : bool, default False
        Add ``pattern`` to the pixels (clipped to 0..255) instead of replacing them.

    Returns
    -------
    ndarray of shape (n, H, W, 3), uint8
    """
    out = np.array(images, copy=True)
    s = pattern.shape[0]
    picks = np.asarray(positions)[rng.integers(0, len(positions), size=len(out))]
    patch = np.clip(np.rint(pattern), 0, 255).astype(out.dtype)
    for img, (r, c) in zip(out, picks, strict=True):
        if additive:
            window = img[r : r + s, c : c + s].astype(np.float64) + pattern
            img[r : r + s, c : c + s] = np.clip(np.rint(window), 0, 255).astype(out.dtype)
        else:
            img[r : r + s, c : c + s] = patch
    return out


@dataclass(frozen=True)
class FlipTest:
    """Outcome of the causal paste test on clean test images of the other classes.

    Attributes
    ----------
    n : int
        Images pasted on (clean test images of other classes, correctly classified).
    classes : ndarray of shape (m,)
        The other classes with such images.
    trigger_rates, control_rates : ndarray of shape (m,)
        Per other class: share of its images whose prediction flips to the analysed class
        with the trigger pasted, and with the control patch pasted.
    trigger_rate, control_rate : float
        The median over the other classes of those shares. A trigger flips images of
        classes that have nothing to do with the analysed class; a feature of the class
        itself (a digit, a silhouette) flips only its look-alikes, so its median is ~0.
    p_value : float
        One-sided exact McNemar test that the trigger flips more of the images than the
        control does (a binomial test on the images only one of them flips,
        ``scipy.stats.binomtest``), times the number of probes tried (Bonferroni), at most 1.
    probe : str
        The probe reported (the one with the largest median): ``replace`` (the pattern
        pasted over the pixels) or ``add x<k>`` (the additive part added, k times).
    """

    n: int
    classes: np.ndarray
    trigger_rates: np.ndarray
    control_rates: np.ndarray
    trigger_rate: float
    control_rate: float
    p_value: float
    probe: str = "replace"


# Probes of the causal check: the pattern pasted, and its additive part added at 1, 2 and 4
# times its strength (a trigger added with a small amplitude at training time, as the
# label-consistent attack does, may need more at test time; measured in RESULTS.md).
PROBES: tuple[tuple[str, float], ...] = (("replace", 1.0), ("add", 1.0), ("add", 2.0),
                                          ("add", 4.0))  # fmt: skip


def flip_rates(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    target: int,
    trigger: Trigger,
    group_images: np.ndarray,
    rng: np.random.Generator,
    max_images: int = 2000,
) -> FlipTest:
    """Paste the trigger and a control patch onto other classes' images; count flips.

    Parameters
    ----------
    predict : callable
        uint8 images (n, H, W, 3) -> predicted class ids (n,).
    images, labels : ndarray
        Clean reference images (the test split) and their labels.
    target : int
        The analysed class.
    trigger : Trigger
    group_images : ndarray of shape (m, H, W, 3)
        The group the trigger was recovered from; the control patch is cut from these,
        at a random position whose window does not overlap the trigger's region.
    rng : numpy Generator
    max_images : int, default 2000
        Images of other classes used at most (a random sample).

    Returns
    -------
    FlipTest
    """
    labels = np.asarray(labels)
    others = np.flatnonzero(labels != target)
    if others.size > max_images:
        others = np.sort(rng.choice(others, max_images, replace=False))
    base = np.asarray(images)[others]
    keep = np.asarray(predict(base)) == labels[others] if len(base) else np.zeros(0, bool)
    base, base_labels = base[keep], labels[others][keep]  # flips only from a correct prediction
    if len(base) == 0:
        empty = np.zeros(0)
        return FlipTest(0, empty.astype(int), empty, empty, math.nan, math.nan, math.nan)
    s = trigger.size
    h, w = base.shape[1:3]
    top, left, bottom, right = trigger.region
    # control: a patch of the same size from the group's own images, away from the trigger
    candidates = [(r, c) for r in range(h - s + 1) for c in range(w - s + 1)
                  if r + s <= top or r >= bottom or c + s <= left or c >= right]  # fmt: skip
    if not candidates:
        candidates = [(0, 0)]
    src = group_images[rng.integers(0, len(group_images))]
    r, c = candidates[rng.integers(0, len(candidates))]
    control = src[r : r + s, c : c + s].astype(np.float64)
    control_delta = control - control.mean(axis=(0, 1), keepdims=True)
    classes = np.unique(base_labels)

    def flips(pattern: np.ndarray, additive: bool) -> np.ndarray:
        pasted = paste(base, pattern, trigger.positions, rng, additive=additive)
        return np.asarray(predict(pasted)) == target

    def per_class(flipped: np.ndarray) -> np.ndarray:
        return np.array([flipped[base_labels == k].mean() for k in classes])

    best: FlipTest | None = None
    for kind, strength in PROBES:
        additive = kind == "add"
        trig = flips(trigger.delta * strength if additive else trigger.pattern, additive)
        ctrl = flips(control_delta * strength if additive else control, additive)
        only_trig, only_ctrl = int(np.sum(trig & ~ctrl)), int(np.sum(ctrl & ~trig))
        discordant = only_trig + only_ctrl
        p = (
            binomtest(only_trig, discordant, 0.5, alternative="greater").pvalue
            if discordant
            else 1.0
        )
        name = kind if not additive else f"add x{strength:g}"
        t_rates, c_rates = per_class(trig), per_class(ctrl)
        test = FlipTest(len(base), classes, t_rates, c_rates, float(np.median(t_rates)),
                        float(np.median(c_rates)), min(1.0, float(p) * len(PROBES)),
                        name)  # fmt: skip
        if best is None or test.trigger_rate > best.trigger_rate:
            best = test
    assert best is not None
    return best


def trigger_scores(
    images: np.ndarray, trigger: Trigger, margin: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """How closely each image carries the trigger, pasted and added: higher = closer.

    Over every window position in the trigger's region (widened by ``margin`` pixels):

    * ``pasted``: minus the smallest mean absolute difference (0..255) between the window
      and the trigger's pattern;
    * ``added``: the largest correlation between the window minus its mean colour and the
      trigger's additive part (:attr:`Trigger.delta`); 0 where either is flat.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3)
    trigger : Trigger
    margin : int, default 1

    Returns
    -------
    pasted : ndarray of shape (n,), in [-255, 0]
    added : ndarray of shape (n,), in [-1, 1]
    """
    x = np.asarray(images, dtype=np.float64)
    s = trigger.size
    h, w = x.shape[1:3]
    top, left, bottom, right = trigger.region
    rows = range(max(0, top - margin), min(h - s, bottom - s + margin) + 1)
    cols = range(max(0, left - margin), min(w - s, right - s + margin) + 1)
    d = trigger.delta.ravel()
    d_norm = float(np.linalg.norm(d))
    pasted = np.full(len(x), np.inf)
    added = np.full(len(x), -1.0)
    for r in rows:
        for c in cols:
            window = x[:, r : r + s, c : c + s]
            pasted = np.minimum(pasted, np.abs(window - trigger.pattern).mean(axis=(1, 2, 3)))
            centred = (window - window.mean(axis=(1, 2), keepdims=True)).reshape(len(x), -1)
            norm = np.linalg.norm(centred, axis=1) * d_norm
            corr = np.divide(centred @ d, norm, out=np.zeros(len(x)), where=norm > 0)
            added = np.maximum(added, corr)
    return -pasted, added
