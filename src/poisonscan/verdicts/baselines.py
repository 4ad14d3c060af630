"""The baselines as verdicts on every class: one registry, one interface.

:data:`VERDICT_BASELINES` maps every baseline that gives a verdict beside poisonscan's
(rule ``verdict_baselines``, ``python -m poisonscan.bench verdicts``) to a
:class:`VerdictBaseline`: the function, the config section it takes and whether it must be
told the attacked class and the poison count (an oracle a defender does not have; such a
baseline is skipped where there is no attacked class). A baseline is a function::

    @register_baseline("name", section="baselines.name", summary="...")
    def name(data: ClassFeatures, params: Mapping) -> tuple[flagged, score]

returning, over the whole training set, which images it flags and a score (NaN where it
scores nothing); a class counts as flagged when any of its images is. Adding one is a
function here (or in a module imported below), its section in ``config/schema.yaml`` and a
test; the rule, its parameters and the bench read the registry.

===============  ================================================================
``scan_tang``    SCAn (Tang et al. 2021): a class verdict by its robust z over classes
``spectre``      SPECTRE (Hayase et al. 2021), told the attacked class and the poison count
``ac``           Activation Clustering (ART's options) on every class
``ss``           Spectral Signatures on every class
===============  ================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "VERDICT_BASELINES",
    "ClassFeatures",
    "VerdictBaseline",
    "baseline_names",
    "register_baseline",
    "run_baseline",
]

Flags = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ClassFeatures:
    """The penultimate activations of every class with at least two images.

    Attributes
    ----------
    classes : list of int
        The class ids, in the order of ``features`` and ``index``.
    features : list of ndarray of shape (n_c, d)
    index : list of ndarray of shape (n_c,)
        Each class's positions in the training set.
    n_train : int
        Images in the training set.
    """

    classes: list[int]
    features: list[np.ndarray]
    index: list[np.ndarray]
    n_train: int

    @classmethod
    def from_classes(
        cls, per_class: Mapping[int, Mapping[str, np.ndarray]], n_train: int
    ) -> ClassFeatures:
        """From ``{class: {"activations": ..., "index": ...}}``; classes of one image are left
        out (no baseline analyses them)."""
        usable = [c for c in sorted(per_class) if len(per_class[c]["index"]) >= 2]
        return cls(
            usable,
            [np.asarray(per_class[c]["activations"]) for c in usable],
            [np.asarray(per_class[c]["index"]) for c in usable],
            n_train,
        )

    def empty(self) -> Flags:
        """Nothing flagged, nothing scored."""
        return np.zeros(self.n_train, dtype=bool), np.full(self.n_train, np.nan)


@dataclass(frozen=True)
class VerdictBaseline:
    """One baseline with a verdict on every class.

    Attributes
    ----------
    function : callable
        ``(data, params) -> (flagged, score)``; with ``told``, also ``target`` (the position
        of the attacked class in ``data.classes``) and ``poison_count``.
    section : str
        The dotted config section passed as ``params``.
    summary : str
    told : bool
        True if it is told the attacked class and the poison count.
    """

    function: Callable[..., Flags]
    section: str
    summary: str
    told: bool = False


VERDICT_BASELINES: dict[str, VerdictBaseline] = {}


def register_baseline(
    name: str, section: str, summary: str, told: bool = False
) -> Callable[[Callable[..., Flags]], Callable[..., Flags]]:
    """Decorator adding a baseline to :data:`VERDICT_BASELINES` under ``name``."""

    def wrap(function: Callable[..., Flags]) -> Callable[..., Flags]:
        if name in VERDICT_BASELINES:
            raise ValueError(f"verdict baseline {name!r} is registered twice")
        VERDICT_BASELINES[name] = VerdictBaseline(function, section, summary, told)
        return function

    return wrap


def run_baseline(
    name: str,
    data: ClassFeatures,
    params: Mapping[str, Any],
    target: int | None = None,
    poison: np.ndarray | None = None,
) -> Flags | None:
    """Run the baseline ``name``; None for a told baseline without an attacked class.

    Parameters
    ----------
    target : int, optional
        The attacked class id (told baselines only).
    poison : ndarray of shape (n_train,), bool, optional
        The true poison mask, for the poison count a told baseline is given.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if name not in VERDICT_BASELINES:
        raise ValueError(
            f"unknown verdict baseline {name!r}; available: {sorted(VERDICT_BASELINES)}"
        )
    entry = VERDICT_BASELINES[name]
    if not entry.told:
        return entry.function(data, params)
    if target is None or target not in data.classes:
        return None
    t = data.classes.index(target)
    mask = np.zeros(data.n_train, dtype=bool) if poison is None else np.asarray(poison, bool)
    return entry.function(
        data, params, target=t, poison_count=max(1, int(mask[data.index[t]].sum()))
    )


def _per_class(data: ClassFeatures, make: Callable[[], Any]) -> Flags:
    flagged, score = data.empty()
    for features, index in zip(data.features, data.index, strict=True):
        est = make().fit(features)
        flagged[index], score[index] = est.flagged_, est.score_
    return flagged, score


@register_baseline("scan_tang", "baselines.scan_tang", "SCAn: robust z of the two-identity test")
def scan_tang(data: ClassFeatures, params: Mapping[str, Any]) -> Flags:
    from poisonscan.baselines import SCAn
    from poisonscan.clustering import estimator_params

    est = SCAn(**estimator_params(params)).fit(data.features)
    flagged, score = data.empty()
    index = np.concatenate(data.index)
    flagged[index], score[index] = est.flagged_, est.score_
    return flagged, score


@register_baseline(
    "spectre", "baselines.spectre",
    "SPECTRE, told the attacked class and the true poison count as its bound", told=True,
)  # fmt: skip
def spectre(
    data: ClassFeatures, params: Mapping[str, Any], target: int, poison_count: int
) -> Flags:
    from poisonscan.baselines import SPECTRE

    est = SPECTRE(target_class=target, eps=poison_count, **dict(params)).fit(data.features)
    flagged, score = data.empty()
    flagged[data.index[target]] = est.flagged_[est.in_target_]
    score[data.index[target]] = est.score_[est.in_target_]
    return flagged, score


@register_baseline("ac", "activation_clustering", "Activation Clustering on every class")
def activation_clustering(data: ClassFeatures, params: Mapping[str, Any]) -> Flags:
    from poisonscan.baselines import ActivationClustering
    from poisonscan.clustering import estimator_params

    return _per_class(data, lambda: ActivationClustering(**estimator_params(params)))


@register_baseline("ss", "baselines.ss", "Spectral Signatures on every class")
def spectral_signatures(data: ClassFeatures, params: Mapping[str, Any]) -> Flags:
    from poisonscan.baselines import SpectralSignatures

    return _per_class(data, lambda: SpectralSignatures(**dict(params)))


def baseline_names(names: Sequence[str] | None = None) -> list[str]:
    """``names`` checked against the registry (all of them when None)."""
    names = list(VERDICT_BASELINES) if names is None else list(names)
    unknown = sorted(set(names) - set(VERDICT_BASELINES))
    if unknown:
        raise ValueError(
            f"unknown verdict baselines {unknown}; available: {sorted(VERDICT_BASELINES)}"
        )
    return names
