"""Near-duplicate groups and the held-out test split of a dataset that comes without one.

Near duplicates (the ~30 frames of one physical sign in a GTSRB track, the same photo saved
twice, a re-encoded copy) on both sides of a train/test split make the test accuracy an
accuracy on images the model has seen. :func:`duplicate_groups` finds them as connected
components of two relations: byte-identical pixels (anywhere in the dataset) and, within a
class, a difference hash (dHash, :func:`dhash`) at most ``max_distance`` bits apart (chained:
consecutive frames of a track link the whole track). :func:`holdout_split` then moves whole
groups to the test split, class by class; :func:`group_split` holds out whole groups for
validation while training.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

__all__ = ["dhash", "duplicate_groups", "group_split", "holdout_split"]

log = logging.getLogger(__name__)

# Pairs of hashes compared per block (memory: 8 bytes each).
_BLOCK = 1 << 22


def _box(size: int, cells: int) -> np.ndarray:
    """Area-averaging (box filter) matrix from ``size`` pixels to ``cells`` cells, (cells, size)."""
    edges = np.linspace(0.0, size, cells + 1)
    lo = np.maximum(edges[:-1, None], np.arange(size)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(1, size + 1)[None, :])
    return (np.clip(hi - lo, 0.0, None) * cells / size).astype(np.float32)


def dhash(images: np.ndarray) -> np.ndarray:
    """64-bit difference hash of each image (Krawetz, "Kind of like that", 2013).

    The grayscale image is shrunk to 9 x 8 (box filter) and each bit says whether a cell is
    brighter than its left neighbour; near-identical images differ in a few bits.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3), uint8

    Returns
    -------
    ndarray of shape (n,), uint64
    """
    n, h, w = np.shape(images)[:3]
    rows, cols = _box(h, 8), _box(w, 9).T
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma
    gray = np.empty((n, 8, 9), dtype=np.float32)
    for lo in range(0, n, 4096):  # bounded memory: 4096 float32 images at a time
        luma = np.asarray(images[lo : lo + 4096], dtype=np.float32) @ weights
        gray[lo : lo + 4096] = rows @ luma @ cols
    bits = gray[:, :, 1:] > gray[:, :, :-1]  # (n, 8, 8)
    packed = np.packbits(bits.reshape(n, 64), axis=1)  # (n, 8) uint8, big-endian bit order
    return packed.view(">u8").reshape(n).astype(np.uint64)


def duplicate_groups(images: np.ndarray, labels: np.ndarray, max_distance: int) -> np.ndarray:
    """Group id of each image: connected components of exact and near duplicates.

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3), uint8
    labels : ndarray of shape (n,), int
        Near duplicates are looked for within each class only (pairs within a class: the
        cost stays quadratic in the largest class, not in n); exact duplicates anywhere.
    max_distance : int
        Largest Hamming distance of two dHashes that still counts as a near duplicate;
        negative: exact duplicates only.

    Returns
    -------
    ndarray of shape (n,), int64
        Group ids 0, 1, ... numbered in order of each group's first image.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(images)
    labels = np.asarray(labels)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    first: dict[bytes, int] = {}
    exact = np.arange(n)
    for i, image in enumerate(images):
        key = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
        exact[i] = first.setdefault(key, i)
    rows.append(np.arange(n))
    cols.append(exact)
    if max_distance >= 0 and n:
        hashes = dhash(images)
        for cls in np.unique(labels):
            idx = np.flatnonzero(labels == cls)
            h = hashes[idx]
            step = max(1, _BLOCK // max(len(idx), 1))
            for lo in range(0, len(idx), step):
                dist = np.bitwise_count(h[lo : lo + step, None] ^ h[None, :])
                a, b = np.nonzero(dist <= max_distance)
                keep = lo + a < b  # each pair once, no self pairs
                rows.append(idx[lo + a[keep]])
                cols.append(idx[b[keep]])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # renumber in order of first appearance, so the ids do not depend on scipy's numbering
    _, first_index, inverse = np.unique(comp, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_index))
    return order[inverse].astype(np.int64)


def holdout_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which images go to the test split: stratified by class, whole groups only.

    Class by class (in label order), the class's groups not yet placed are shuffled
    (``numpy.random.default_rng(seed)``) and the prefix whose image count brings the
    class's test part closest to ``fraction`` of its images goes to the test split; at
    least one group goes there and, unless every group of the class is already placed,
    at least one stays in training. A group spanning several classes is placed once, by
    the first class that has it. A class that is a single group stays in training whole
    (it gets no test images; a warning names it).

    Parameters
    ----------
    labels, groups : ndarray of shape (n,), int
    fraction : float
        Wanted share of each class in the test split, in (0, 1).
    seed : int

    Returns
    -------
    ndarray of shape (n,), bool
        True = test image.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"test fraction must lie in (0, 1), got {fraction}")
    labels, groups = np.asarray(labels), np.asarray(groups)
    if labels.shape != groups.shape:
        raise ValueError(f"{groups.shape} group ids for labels of shape {labels.shape}")
    rng = np.random.default_rng(seed)
    placed: dict[int, bool] = {}
    for cls in np.unique(labels):
        in_class = labels == cls
        ids, sizes = np.unique(groups[in_class], return_counts=True)
        in_test = sum(int(s) for g, s in zip(ids, sizes, strict=True) if placed.get(int(g)))
        free = [(int(g), int(s)) for g, s in zip(ids, sizes, strict=True) if int(g) not in placed]
        if len(ids) < 2:
            log.warning(
                "class %s is one group of near duplicates (%d images): it gets no test images",
                cls, int(in_class.sum()),
            )  # fmt: skip
        order = rng.permutation(len(free))
        free = [free[i] for i in order]
        # prefix lengths allowed: >= 1 unless the class already has test images, and leave
        # one group in training unless one already is
        has_train = any(placed.get(int(g)) is False for g in ids)
        lo = 0 if in_test else 1
        hi = len(free) if has_train else len(free) - 1
        target = fraction * in_class.sum()
        if len(ids) >= 2 and lo <= hi:
            totals = in_test + np.concatenate([[0], np.cumsum([s for _, s in free])])
            k = lo + int(np.argmin(np.abs(totals[lo : hi + 1] - target)))
        else:
            k = 0
        for j, (g, _) in enumerate(free):
            placed[g] = j < k
    return np.array([placed[int(g)] for g in groups], dtype=bool)


def group_split(
    groups: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split images into train and validation parts by whole near-duplicate groups.

    The unique group ids (GTSRB: its tracks) are shuffled with
    ``np.random.default_rng(seed)`` and taken in that order until the validation part
    holds about ``val_fraction`` of the images (the prefix whose image count is closest to
    the target, at least one group and, with two or more groups, at least one group left
    for training).

    Parameters
    ----------
    groups : ndarray of shape (n,)
        Group id per image (a dataset's ``extra["group_train"]``).
    val_fraction : float
        Wanted share of images in the validation part, in (0, 1).
    seed : int
        Seed of the shuffle; the same inputs always give the same split.

    Returns
    -------
    train, val : ndarray of shape (n,), bool
        Complementary masks; every group lies entirely in one of them.

    Raises
    ------
    ValueError
        If ``val_fraction`` is outside (0, 1) or ``groups`` is empty or not 1-D.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {groups.shape}")
    unique, counts = np.unique(groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(unique.size)
    cumulative = np.cumsum(counts[order])
    target = float(val_fraction) * groups.size
    n_max = max(1, unique.size - 1)
    n_val = int(np.argmin(np.abs(cumulative[:n_max] - target))) + 1
    val = np.isin(groups, unique[order[:n_val]])
    return ~val, val
