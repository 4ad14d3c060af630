"""Identical or near-identical images under different labels: a label-flip signal.

A label-flipping attack (or a labelling mistake) puts the same picture into two classes. The
class test does not see it (the copy looks like any image of its class), so an audit lists
every pair of images of different classes whose difference hashes
(:func:`poisonscan.datasets.split.dhash`, the near-duplicate measure of the held-out split)
lie within ``max_distance`` bits, the training and the test split together.

``max_distance`` is ``dataset.duplicate_distance`` (default 4 of 64 bits: the distance the
split already treats as "the same picture"); a negative value lists exact duplicates only.
"""

from __future__ import annotations

import hashlib

import numpy as np

from poisonscan.datasets.split import dhash

__all__ = ["label_conflicts"]

# Rows of the pairwise distance block (memory: _BLOCK x n bytes).
_BLOCK = 1024


def label_conflicts(
    images: np.ndarray, labels: np.ndarray, max_distance: int
) -> list[tuple[int, int, int]]:
    """Pairs of images with different labels that are the same picture (or nearly).

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3), uint8
    labels : ndarray of shape (n,)
    max_distance : int
        Largest Hamming distance of the two dHashes; negative: identical pixels only.

    Returns
    -------
    list of (i, j, distance)
        ``i < j``, ``labels[i] != labels[j]``; distance 0 for identical pixels, else the
        dHash distance. Sorted by (distance, i, j).
    """
    labels = np.asarray(labels)
    n = len(images)
    pairs: set[tuple[int, int, int]] = set()
    seen: dict[bytes, list[int]] = {}
    for i, image in enumerate(images):
        key = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
        for j in seen.setdefault(key, []):
            if labels[j] != labels[i]:
                pairs.add((j, i, 0))
        seen[key].append(i)
    if max_distance >= 0 and n:
        hashes = dhash(images)
        for lo in range(0, n, _BLOCK):
            block = hashes[lo : lo + _BLOCK]
            dist = np.bitwise_count(block[:, None] ^ hashes[None, :])
            a, b = np.nonzero(dist <= max_distance)
            a = a + lo
            keep = (a < b) & (labels[a] != labels[b])
            for i, j in zip(a[keep], b[keep], strict=True):
                same = (int(i), int(j), 0) in pairs
                if not same:
                    pairs.add((int(i), int(j), int(dist[i - lo, j])))
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))
