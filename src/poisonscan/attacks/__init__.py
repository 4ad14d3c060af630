"""Backdoor poisoning attacks on an :class:`~poisonscan.storage.ImageDataset`.

An attack is a frozen, keyword-only dataclass built from a plain config dict;
:data:`ATTACKS` maps the config's ``attack`` string to it:

====================  ==========================================================
``clean``             no attack, the control scenario (:class:`CleanAttack`)
``sticker``           dirty-label sticker, the reference study's standard attack
                      (:class:`StickerAttack`)
``clever_hans``       a sticker on a share of one class, labels kept
                      (:class:`CleverHansAttack`)
``blended``           a pattern alpha-blended into source images, relabelled
                      (Chen et al. 2017; :class:`BlendedAttack`)
``label_consistent``  PGD on a clean proxy model plus a trigger, labels kept
                      (Turner, Tsipras, Madry 2019; :class:`LabelConsistentAttack`)
====================  ==========================================================

``attack.poison(clean)`` (``attack.poison(clean, proxy)`` for the
label-consistent attack) returns a new dataset that keeps the ground truth
(poison mask, original labels, trigger positions, triggered test images) and
the full attack parameters; see :mod:`poisonscan.attacks.base`. The same seed
gives bit-identical results. Bad parameters raise
:class:`AttackParameterError` (a ValueError naming the parameter and the
allowed values).

Modules: :mod:`~poisonscan.attacks.base` (interface, ground truth, clean
control), :mod:`~poisonscan.attacks.triggers` (sticker, checkerboard, blend),
:mod:`~poisonscan.attacks.stamp` (sticker, Clever Hans, blended),
:mod:`~poisonscan.attacks.label_consistent` (PGD), and
:mod:`~poisonscan.attacks.montage` (the picture of an attack).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan.attacks.base import Attack, AttackParameterError, CleanAttack, n_poison_for
from poisonscan.attacks.label_consistent import (
    LabelConsistentAttack,
    Proxy,
    perturbation_norms,
    pgd_perturb,
)
from poisonscan.attacks.montage import save_attack_montage
from poisonscan.attacks.stamp import BlendedAttack, CleverHansAttack, StickerAttack
from poisonscan.attacks.triggers import (
    Checkerboard,
    Sticker,
    apply_sticker,
    boxes_to_mask,
    checkerboard_pattern,
    make_blend_pattern,
    parse_color,
)

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackParameterError",
    "BlendedAttack",
    "Checkerboard",
    "CleanAttack",
    "CleverHansAttack",
    "LabelConsistentAttack",
    "Proxy",
    "Sticker",
    "StickerAttack",
    "apply_sticker",
    "attack_from_config",
    "attack_from_meta",
    "checkerboard_pattern",
    "make_blend_pattern",
    "n_poison_for",
    "parse_color",
    "perturbation_norms",
    "pgd_perturb",
    "save_attack_montage",
    "trigger_footprint",
]

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (CleanAttack, StickerAttack, CleverHansAttack, BlendedAttack, LabelConsistentAttack)
}

_TUPLES = ("window", "position")


def attack_from_config(spec: Mapping[str, Any]) -> Attack:
    """Build the attack named by ``spec["attack"]`` from the rest of ``spec``.

    Raises
    ------
    ValueError
        For an unknown attack name or parameters the attack does not take.
        Parameter values are checked by ``attack.check`` / ``attack.poison``.
    """
    params = dict(spec)
    name = params.pop("attack", None)
    if name not in ATTACKS:
        raise AttackParameterError(
            "attack", f"unknown attack {name!r}; available: {sorted(ATTACKS)}"
        )
    cls = ATTACKS[name]
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(
            f"attack {name!r} does not take the parameters {unknown}; allowed: {sorted(fields)}"
        )
    missing = sorted(
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name not in params
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"attack {name!r} needs the parameters {missing}")
    for key in _TUPLES:
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    return cls(**params)


def attack_from_meta(meta: Mapping[str, Any]) -> Attack:
    """Rebuild the attack recorded in a poisoned dataset's ``meta``."""
    spec = dict(meta["attack"])
    return attack_from_config({"attack": spec.pop("name"), **spec})


def trigger_footprint(
    meta: Mapping[str, Any], position: np.ndarray, image_size: tuple[int, int]
) -> np.ndarray:
    """Boolean (H, W) mask of the pixels a trigger recorded at ``position`` may change.

    ``meta`` is a poisoned dataset's meta; all False for ``position`` (-1, -1).
    """
    if np.any(np.asarray(position) < 0):
        return np.zeros(image_size, dtype=bool)
    boxes = attack_from_meta(meta).trigger_boxes(np.asarray(position), image_size)
    return boxes_to_mask(boxes, image_size)
