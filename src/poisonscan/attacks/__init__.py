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
``sig``               a horizontal sinusoid on target-class images, labels kept
                      (Barni, Kallas, Tondi 2019; :class:`SIGAttack`)
``wanet``             a fixed smooth warp, relabelled, plus noise-mode images
                      (Nguyen & Tran 2021; :class:`WaNetAttack`)
``ftrojan``           mid/high DCT coefficients of the chroma channels raised,
                      relabelled (Wang et al. 2022; :class:`FTrojanAttack`)
``label_consistent``  PGD on a clean proxy model plus a trigger, labels kept
                      (Turner, Tsipras, Madry 2019; :class:`LabelConsistentAttack`)
``badnets``           a patch of any size, pattern and place, all-to-one
                      (Gu et al. 2017, BackdoorBench's defaults; :class:`BadNetsAttack`)
``all_to_all``        the BadNets patch, class y relabelled (y + 1) mod C
                      (:class:`AllToAllAttack`)
``tact``              source-specific: only the source class is relabelled, cover
                      classes carry the trigger with their labels (Tang et al. 2021;
                      :class:`TaCTAttack`)
``multi_target``      two or three targets, each with its own patch
                      (:class:`MultiTargetAttack`)
``adaptive_blend``    partitioned blend trigger plus cover images (Qi et al. 2023;
                      :class:`AdaptiveBlendAttack`)
``adaptive_patch``    four weak patch triggers plus cover images (Qi et al. 2023;
                      :class:`AdaptivePatchAttack`)
====================  ==========================================================

Left out: the sample-specific invisible trigger of ISSBA (Li et al., ICCV 2021). Its
trigger is a StegaStamp encoder's residual (a U-Net encoder and decoder trained
jointly on an image set, 140k steps at 400x400 in the reference code, hours on a GPU);
a faithful encoder does not train on 2 CPU cores in 30 minutes, and a much smaller,
briefly trained one would give a different, weaker trigger under the attack's name. It
needs a GPU training of the encoder (or trained encoder weights shipped with the
package, which nothing here may download) and then one encoder pass per poisoned image.

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
:mod:`~poisonscan.attacks.label_consistent` (PGD), :mod:`~poisonscan.attacks.sig`,
:mod:`~poisonscan.attacks.wanet` and :mod:`~poisonscan.attacks.ftrojan` (whole-image
triggers), :mod:`~poisonscan.attacks.badnets` (BadNets all-to-one and all-to-all),
:mod:`~poisonscan.attacks.source_specific` (TaCT, several targets),
:mod:`~poisonscan.attacks.adaptive` (Adaptive-Blend, Adaptive-Patch) and
:mod:`~poisonscan.attacks.montage` (the picture of an attack).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonscan.attacks.adaptive import AdaptiveBlendAttack, AdaptivePatchAttack
from poisonscan.attacks.badnets import AllToAllAttack, BadNetsAttack
from poisonscan.attacks.base import (
    ATTACKS,
    Attack,
    AttackParameterError,
    CleanAttack,
    n_poison_for,
    register_attack,
)
from poisonscan.attacks.ftrojan import FTrojanAttack
from poisonscan.attacks.label_consistent import (
    LabelConsistentAttack,
    Proxy,
    perturbation_norms,
    pgd_perturb,
)
from poisonscan.attacks.montage import save_attack_montage
from poisonscan.attacks.sig import SIGAttack
from poisonscan.attacks.source_specific import MultiTargetAttack, TaCTAttack
from poisonscan.attacks.stamp import BlendedAttack, CleverHansAttack, StickerAttack
from poisonscan.attacks.triggers import (
    Checkerboard,
    Patch,
    Sticker,
    apply_sticker,
    boxes_to_mask,
    checkerboard_pattern,
    make_blend_pattern,
    parse_color,
    patch_pixels,
)
from poisonscan.attacks.wanet import WaNetAttack

__all__ = [
    "ATTACKS",
    "AdaptiveBlendAttack",
    "AdaptivePatchAttack",
    "AllToAllAttack",
    "Attack",
    "AttackParameterError",
    "BadNetsAttack",
    "BlendedAttack",
    "Checkerboard",
    "CleanAttack",
    "CleverHansAttack",
    "FTrojanAttack",
    "LabelConsistentAttack",
    "MultiTargetAttack",
    "Patch",
    "Proxy",
    "SIGAttack",
    "Sticker",
    "StickerAttack",
    "TaCTAttack",
    "WaNetAttack",
    "apply_sticker",
    "attack_from_config",
    "attack_from_meta",
    "checkerboard_pattern",
    "make_blend_pattern",
    "n_poison_for",
    "parse_color",
    "patch_pixels",
    "perturbation_norms",
    "pgd_perturb",
    "register_attack",
    "save_attack_montage",
    "trigger_footprint",
]


_TUPLES = ("window", "position", "cover_classes", "other_targets", "train_alphas", "test_triggers")


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
