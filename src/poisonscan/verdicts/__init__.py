"""Verdicts a user can act on: which classes are poisoned, which images, and the trigger.

Modules: :mod:`.concentration` (the class test: relevance concentrated in a small
window more often than in the other classes, counted per near-duplicate group),
:mod:`.trigger` (trigger recovery, the causal paste test, trigger scores),
:mod:`.labels` (label disagreement), :mod:`.audit` (the whole verdict) and
:mod:`._stats` (robust z, tail p-values, Benjamini-Hochberg).
"""

from __future__ import annotations

from poisonscan.verdicts._stats import benjamini_hochberg, robust_z, upper_tail_p
from poisonscan.verdicts.audit import AuditResult, ClassData, VerdictParams, audit, verdict_table
from poisonscan.verdicts.concentration import ClassTest, class_test, empirical_p, peak_shares
from poisonscan.verdicts.labels import LabelDisagreement, label_disagreement
from poisonscan.verdicts.trigger import (
    FlipTest,
    Trigger,
    flip_rates,
    paste,
    recover_trigger,
    trigger_scores,
    window_mass,
)

__all__ = [
    "AuditResult",
    "ClassData",
    "ClassTest",
    "FlipTest",
    "LabelDisagreement",
    "Trigger",
    "VerdictParams",
    "audit",
    "benjamini_hochberg",
    "class_test",
    "empirical_p",
    "flip_rates",
    "label_disagreement",
    "paste",
    "peak_shares",
    "recover_trigger",
    "robust_z",
    "trigger_scores",
    "upper_tail_p",
    "verdict_table",
    "window_mass",
]
