"""Shared helpers of the step modules: logging, JSON output, thread count."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from poisonscan.storage import atomic_path

__all__ = ["PathLike", "log", "set_threads", "setup_logging", "write_json"]

log = logging.getLogger("poisonscan")

PathLike = str | os.PathLike[str]


def setup_logging(path: PathLike | None = None, level: int = logging.INFO) -> None:
    """Send poisonscan's log and Python warnings to ``path`` (and stderr when no path)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(path, mode="w")]
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)


def write_json(path: PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def set_threads(threads: int) -> None:
    torch.set_num_threads(max(1, int(threads)))
