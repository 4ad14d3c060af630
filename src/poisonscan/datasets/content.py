"""The content of a user's dataset, as a workflow parameter: a change to it reruns its rules.

Snakemake reruns a job when its parameters change, but the ``dataset`` section of an audit
names only the folder (or ``.npz`` file): rotating an image, adding images or adding a class
leaves the section unchanged, and a second ``poisonscan scan`` would keep the old verdicts.
:func:`content_fingerprint` is a digest of what the loader reads (every visible entry of the
folder and of its class folders, with its size and modification time; an ``.npz`` file's size
and modification time), which rule ``make_dataset`` takes as a parameter; every other rule of
the audit reads its output, so they rerun after it, and nothing reruns when nothing changed.

Sizes and modification times, not hashes of the bytes: the fingerprint is computed each time
Snakemake reads the workflow (every ``poisonscan scan``, every cluster job), and hashing would
read the whole dataset each time; an edit by any ordinary tool changes the modification time.
Copying the folder without keeping the times (``cp -r``) reruns the audit once, which costs
time, never a stale result. Hidden entries (``.DS_Store``, ``.thumbnails/``) are left out as
the loader leaves them out (:mod:`poisonscan.datasets.folder`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CONTENT_KEYS", "content_fingerprint", "content_listing"]

# The keys of the dataset section that name the user's files.
CONTENT_KEYS = ("path", "test_path")


def _entry(entry: os.DirEntry[str], rel: str) -> tuple[str, str, int, int]:
    if entry.is_dir():  # by name only: its time changes with hidden files too
        return (rel, "dir", 0, 0)
    st = entry.stat()  # follows symbolic links, as reading the image does
    return (rel, "file", st.st_size, st.st_mtime_ns)


def _visible(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def content_listing(path: str | os.PathLike[str]) -> list[tuple[str, str, int, int]]:
    """What the loader of ``path`` reads: (relative name, kind, size, mtime in ns) per entry.

    Folders are listed by name (size and time 0): a folder's time changes when a hidden
    file is written into it, and a visible file added or removed has its own row.

    Parameters
    ----------
    path : str or path-like
        A file (``.npz``): one row, named ``""``. A folder: its visible entries and, for each
        visible sub-folder (a class folder), its visible entries; deeper levels are not read
        by the loader and are left out (a nested folder appears by its own row).

    Returns
    -------
    list of tuple
        Sorted rows; empty if ``path`` does not exist (the config validation reports that).
    """
    root = Path(path)
    try:
        if not root.is_dir():
            if not root.exists():
                return []
            st = root.stat()
            return [("", "file", st.st_size, st.st_mtime_ns)]
        rows = []
        for top in _visible(root):
            rows.append(_entry(top, top.name))
            if top.is_dir():
                rows += [_entry(e, f"{top.name}/{e.name}") for e in _visible(root / top.name)]
    except OSError:
        return []  # unreadable: the config validation names the path
    return rows


def content_fingerprint(section: Mapping[str, Any]) -> str:
    """The digest of the files the dataset of ``section`` is read from.

    Parameters
    ----------
    section : mapping
        The ``dataset`` config section; its ``path`` and ``test_path`` (where set) are listed
        (:func:`content_listing`).

    Returns
    -------
    str
        ``sha256:<hex>`` of the listings; it changes when a file is added, removed, renamed,
        resized or rewritten, and stays the same otherwise.
    """
    digest = hashlib.sha256()
    for key in CONTENT_KEYS:
        value = section.get(key)
        if not value:
            continue
        digest.update(f"{key}\0".encode())
        for rel, kind, size, mtime in content_listing(value):
            digest.update(f"{rel}\0{kind}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return f"sha256:{digest.hexdigest()}"
