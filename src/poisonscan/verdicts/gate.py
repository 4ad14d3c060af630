"""The model-quality gate of an audit: no ``clean`` verdict from a model that learned little.

The verdicts read the model's explanations. A model that did not learn the classes (a
random-weights file, a scan trained on too few images) explains nothing in particular, so its
class test finds no concentrated relevance and every class would come out ``clean``: a verdict
without evidence. Below the gate, every ``clean`` verdict becomes ``inconclusive``;
``poisoned`` verdicts stay (each rests on a causal check: the recovered trigger, pasted on
other classes' test images, changes the model's predictions) and so does ``too_small`` (fewer
near-duplicate groups than ``verdicts.min_groups``: too few images to judge the class).

Where the threshold comes from: the chance-corrected accuracy (Cohen's kappa against a
uniform guess over the ``C`` classes)

    kappa = (accuracy - 1/C) / (1 - 1/C)

is 0 for a model that guesses and 1 for a perfect one; it compares models across class
counts, where a fixed accuracy would not (0.5 is chance for 2 classes, excellent for 43). The
gate asks for ``model_quality.min_kappa`` (default 0.5: the model gets at least half of the
images right that a guess gets wrong; the middle of "moderate" agreement on Landis & Koch's
scale, Biometrics 1977), i.e. an accuracy of at least ``1/C + min_kappa (1 - 1/C)``: 0.75
for 2 classes, 0.625 for 4, 0.55 for 10, 0.51 for 43. It is set without looking at any attack
or its detection rates. The accuracy is the model's on the held-out (or given) test split,
as ``metrics.json`` of rule ``train`` / ``import_model`` records it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["INCONCLUSIVE", "MIN_KAPPA", "ModelQuality", "gate_verdicts", "min_accuracy"]

INCONCLUSIVE = "inconclusive"
# The schema's default of model_quality.min_kappa (see the module docstring).
MIN_KAPPA = 0.5


def min_accuracy(n_classes: int, min_kappa: float = MIN_KAPPA) -> float:
    """The smallest clean accuracy with a chance-corrected accuracy of ``min_kappa``.

    Parameters
    ----------
    n_classes : int
        The number of classes ``C`` (at least 2).
    min_kappa : float
        In [0, 1]: 0 asks for chance level, 1 for a perfect model.

    Returns
    -------
    float
        ``1/C + min_kappa * (1 - 1/C)``.
    """
    if n_classes < 2:
        raise ValueError(f"a classifier has at least 2 classes, got {n_classes}")
    if not 0.0 <= min_kappa <= 1.0:
        raise ValueError(f"min_kappa must lie in [0, 1], got {min_kappa}")
    chance = 1.0 / n_classes
    return chance + min_kappa * (1.0 - chance)


@dataclass(frozen=True)
class ModelQuality:
    """The model's accuracy against the gate, and what was judged.

    Attributes
    ----------
    clean_acc : float
        Accuracy on the test split (NaN if it has no image).
    n_test : int
        Images of the test split the accuracy was measured on.
    n_classes : int
    min_kappa : float
    min_acc : float
        :func:`min_accuracy` of ``n_classes`` and ``min_kappa``.
    kappa : float
        The chance-corrected accuracy of ``clean_acc``.
    n_judged : int
        Images the verdicts judged (an audit: the training and the test split).
    passed : bool
        ``clean_acc >= min_acc`` (False for a NaN accuracy: nothing shows the model learned).
    """

    clean_acc: float
    n_test: int
    n_classes: int
    min_kappa: float
    min_acc: float
    kappa: float
    n_judged: int
    passed: bool

    @classmethod
    def measure(
        cls, clean_acc: float, n_test: int, n_classes: int, n_judged: int,
        min_kappa: float = MIN_KAPPA,
    ) -> ModelQuality:  # fmt: skip
        """The gate applied to an accuracy (see the attributes)."""
        acc = float(clean_acc)
        low = min_accuracy(n_classes, min_kappa)
        chance = 1.0 / n_classes
        kappa = (acc - chance) / (1.0 - chance) if math.isfinite(acc) else math.nan
        return cls(acc, int(n_test), int(n_classes), float(min_kappa), low, kappa,
                   int(n_judged), bool(math.isfinite(acc) and acc >= low))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN as None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}  # fmt: skip

    def describe(self) -> str:
        """One sentence for the console and the overview page."""
        acc = "unknown (no test image)" if not math.isfinite(self.clean_acc) else (
            f"{self.clean_acc:.3f} on {self.n_test} test images")  # fmt: skip
        gate = (f"{self.min_acc:.3f} needed for {self.n_classes} classes: chance-corrected "
                f"{self.min_kappa:g}, model_quality.min_kappa")  # fmt: skip
        if self.passed:
            return f"model accuracy {acc} (at least {gate}); {self.n_judged} images judged"
        return (f"model accuracy {acc}, below the {gate}; the model learned too little for its "
                f"explanations to clear a class, so no class is called clean (inconclusive); "
                f"{self.n_judged} images judged")  # fmt: skip


def gate_verdicts(verdicts: Mapping[int, str], quality: ModelQuality) -> dict[int, str]:
    """The class verdicts after the gate: ``clean`` becomes ``inconclusive`` below it.

    Parameters
    ----------
    verdicts : mapping of int to str
        Class -> ``poisoned``, ``clean`` or ``too_small``.
    quality : ModelQuality

    Returns
    -------
    dict of int to str
        A copy; unchanged when the gate is passed.
    """
    if quality.passed:
        return dict(verdicts)
    return {c: INCONCLUSIVE if v == "clean" else v for c, v in verdicts.items()}
