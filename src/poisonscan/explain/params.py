"""The ``explain`` config section as a validated, immutable parameter object."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from poisonscan.parameters import check_keys, field_names

__all__ = ["ExplainParams", "resolve_classes"]

# Names of the registries' entries, repeated here (without importing torch) so that
# parameters can be checked early; tests/test_explain.py checks that they agree.
METHOD_NAMES = ("lrp", "saliency", "smoothgrad", "integrated_gradients", "guided_backprop",
                "deconvnet", "gradcam")  # fmt: skip
COMPOSITE_NAMES = ("epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1",
                   "epsilon_alpha2_beta1_flat", "epsilon_gamma_box")  # fmt: skip
REDUCTION_NAMES = ("sum", "positive", "abs")
NORMALIZATION_NAMES = ("minmax_mass", "positive_mass", "none")
RELEVANCE_OF = ("label", "prediction")
BASELINES = ("black", "mean")


def _choice(key: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown explain.{key} {value!r}; allowed values: {list(allowed)}")


@dataclass(frozen=True)
class ExplainParams:
    """Parameters of an explanation run (the ``explain`` config section).

    Attributes
    ----------
    method : str
        Entry of :data:`poisonscan.explain.METHODS`.
    composite : str
        LRP composite (entry of :data:`poisonscan.explain.COMPOSITES`); ``lrp`` only.
    epsilon : float
        Stabiliser of the LRP epsilon rule (and of the rule on unmerged norm layers).
    classes : "all", "target" or tuple of int
        Classes to explain; the scenario's target class is always included.
    relevance_of : {"label", "prediction"}
        Output whose relevance is explained. Images are grouped by label either way.
    reduction : {"sum", "positive", "abs"}
        Channel reduction of the attribution: sum, sum of the positive parts, sum of
        absolute values.
    normalization : {"minmax_mass", "positive_mass", "none"}
        Per-heatmap normalisation after the channel reduction.
    pool : int
        Sum-pool the heatmaps by this factor (1 = keep the input resolution).
    activation_layer : str
        Module whose output is stored as ``activations``; ``penultimate`` is the
        model's :attr:`penultimate` module.
    gradcam_layer : str
        Module Grad-CAM explains; ``auto`` is the last convolution.
    n_iter : int
        Samples of SmoothGrad and steps of Integrated Gradients.
    noise_level : float
        SmoothGrad noise standard deviation relative to each image's value range.
    baseline : {"black", "mean"}
        Integrated Gradients baseline: the all-black image or the mean image (zero).
    batch_size : int
        Images per batch, and the chunk length of every array in the store.
    seed : int
        Seed of the SmoothGrad noise.
    """

    method: str = "lrp"
    composite: str = "epsilon_alpha2_beta1"
    epsilon: float = 1e-6
    classes: str | tuple[int, ...] = "all"
    relevance_of: str = "label"
    reduction: str = "sum"
    normalization: str = "positive_mass"
    pool: int = 1
    activation_layer: str = "penultimate"
    gradcam_layer: str = "auto"
    n_iter: int = 20
    noise_level: float = 0.1
    baseline: str = "black"
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("method", self.method, METHOD_NAMES)
        _choice("composite", self.composite, COMPOSITE_NAMES)
        _choice("relevance_of", self.relevance_of, RELEVANCE_OF)
        _choice("reduction", self.reduction, REDUCTION_NAMES)
        _choice("normalization", self.normalization, NORMALIZATION_NAMES)
        _choice("baseline", self.baseline, BASELINES)
        if isinstance(self.classes, str):
            _choice("classes", self.classes, ("all", "target"))
        elif any(int(c) < 0 for c in self.classes):
            raise ValueError(f"explain.classes must be non-negative ids, got {self.classes}")
        for key in ("pool", "n_iter", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"explain.{key} must be >= 1, got {getattr(self, key)!r}")
        if not self.epsilon > 0:
            raise ValueError(f"explain.epsilon must be > 0, got {self.epsilon!r}")
        if self.noise_level < 0:
            raise ValueError(f"explain.noise_level must be >= 0, got {self.noise_level!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ExplainParams | None) -> ExplainParams:
        """Build from the config section; missing keys take the defaults.

        Raises
        ------
        ValueError
            If ``config`` has a key that is not a parameter, or a value is invalid.
        """
        if isinstance(config, ExplainParams):
            return config
        config = dict(config or {})
        check_keys("explain", config, field_names(cls))
        if "classes" in config and not isinstance(config["classes"], str):
            config["classes"] = tuple(int(c) for c in config["classes"])
        for key in ("epsilon", "noise_level"):
            if key in config:
                config[key] = float(config[key])
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``classes`` as a list when it is one)."""
        d = dataclasses.asdict(self)
        if not isinstance(self.classes, str):
            d["classes"] = list(self.classes)
        return d


def resolve_classes(
    classes: str | Sequence[int], n_classes: int, target: int | None = None
) -> list[int]:
    """The sorted class ids to explain: ``all``, ``target`` or a list, plus ``target``.

    Raises
    ------
    ValueError
        If an id is outside ``0 .. n_classes - 1``, or ``classes`` is ``target``
        without a target class.
    """
    if isinstance(classes, str):
        _choice("classes", classes, ("all", "target"))
        if classes == "all":
            chosen = set(range(n_classes))
        elif target is None:
            raise ValueError("explain.classes is 'target' but no target class was given")
        else:
            chosen = set()
    else:
        chosen = {int(c) for c in classes}
    if target is not None:
        chosen.add(int(target))
    bad = sorted(c for c in chosen if not 0 <= c < n_classes)
    if bad:
        raise ValueError(f"class ids {bad} are not in 0..{n_classes - 1}")
    return sorted(chosen)
