"""Where and how torch runs: the device, the thread count, the seeds."""

from __future__ import annotations

import random

import torch

__all__ = ["seed_everything", "select_device", "set_threads"]


def select_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int) -> None:
    """Torch threads of this process (at least 1)."""
    torch.set_num_threads(max(1, int(threads)))


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (torch: every device).

    numpy code here takes explicit Generators; torchvision's transforms draw from torch.
    """
    random.seed(seed)
    torch.manual_seed(seed)
