"""Detection methods by name: what each reads, where its parameters live, one result type.

:data:`DETECTORS` maps every name allowed in ``clustering.methods`` to a
:class:`Detector`. The config schema's list of methods, the workflow's rule
``detect`` (its inputs, parameters and code hash), the list of final outputs
and the tests all read this registry. A detector is a function::

    def my_detector(inputs: DetectorInputs, params: Mapping, ...) -> Detection

whose keyword arguments are the config sections named in its entry. Adding one
is a module in this package, a line below and a test; docs/architecture.md
walks through an example.

Modules: :mod:`._base` (:class:`Detection`, :class:`DetectorInputs`),
:mod:`.distance_clustering` (SpRAy, agglomerative, HDBSCAN on a distance
matrix), :mod:`.gw_kmeans`, :mod:`.activations` (Activation Clustering,
Spectral Signatures), :mod:`.raw_pixels`. Only the module of a detector that
runs is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from poisonscan.detectors._base import Detection, DetectorInputs, read_detection

__all__ = [
    "DETECTORS",
    "DISTANCES",
    "Detection",
    "Detector",
    "DetectorInputs",
    "read_detection",
]

# Heatmap distances the workflow computes (rules distances_<name>).
DISTANCES = ("l2", "gw")


@dataclass(frozen=True)
class Detector:
    """One detection method.

    Attributes
    ----------
    function : str
        ``"module:function"`` of the detector (imported when it runs).
    summary : str
        One line for the documentation.
    sections : mapping of str to str
        Keyword argument of the function -> dotted config section passed to it.
    distance : str or None
        The heatmap distance (a :data:`DISTANCES` entry) whose matrix it reads.
    images : bool
        True if it reads the training images (the dataset file).
    """

    function: str
    summary: str
    sections: Mapping[str, str] = field(default_factory=dict)
    distance: str | None = None
    images: bool = False

    @property
    def module(self) -> str:
        return self.function.partition(":")[0]

    def load(self) -> Callable[..., Detection]:
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


_HERE = __name__
_DECISION = {"decision": "clustering.decision"}


def _per_distance(prefix: str, function: str, section: str, summary: str) -> dict[str, Detector]:
    return {
        f"{prefix}_{d}": Detector(
            function=f"{_HERE}.distance_clustering:{function}",
            summary=f"{summary} on the {d} heatmap distances",
            sections={"params": section, **_DECISION},
            distance=d,
        )
        for d in DISTANCES
    }


DETECTORS: dict[str, Detector] = {
    **_per_distance("hc", "spray", "clustering.spray", "Heatmap Clustering: SpRAy"),
    **_per_distance("agglo", "agglomerative", "clustering.agglomerative", "agglomerative"),
    **_per_distance("hdbscan", "hdbscan", "clustering.hdbscan", "HDBSCAN"),
    "gw_kmeans": Detector(
        function=f"{_HERE}.gw_kmeans:gw_kmeans",
        summary="k-means with GW barycentres (the reference study's)",
        sections={"params": "clustering.gw_kmeans", "gw": "distances.gw", **_DECISION},
        distance="gw",
    ),
    "ac": Detector(
        function=f"{_HERE}.activations:activation_clustering",
        summary="Activation Clustering with ART's options",
        sections={"params": "activation_clustering"},
    ),
    "ss": Detector(
        function=f"{_HERE}.activations:spectral_signatures",
        summary="Spectral Signatures",
        sections={"params": "baselines.ss"},
    ),
    "raw": Detector(
        function=f"{_HERE}.raw_pixels:raw_pixels",
        summary="raw-pixel clustering (the reference study's control)",
        sections={"params": "baselines.raw", **_DECISION},
        images=True,
    ),
}
