"""Rule detect (rules/detect.smk): one detection method on the analysed class."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from poisonscan.detectors import DETECTORS, DetectorInputs
from poisonscan.explain.store import check_model
from poisonscan.parameters import merge_performance

__all__ = ["detect"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def detect(
    method: str,
    explanations: PathLike,
    out: PathLike,
    sections: Mapping[str, Mapping[str, Any]],
    distance_store: PathLike | None = None,
    dataset: PathLike | None = None,
    *,
    sidecar: PathLike | None = None,
    performance: Mapping[str, Any] | None = None,
) -> None:
    """Run the detector ``method`` and write its result (:class:`~poisonscan.detectors.Detection`).

    Parameters
    ----------
    method : str
        A key of :data:`poisonscan.detectors.DETECTORS`.
    explanations : path
        The class group of the explanation store (``explain.zarr/<class id>``).
    out : path
        The ``.npz`` result (:func:`~poisonscan.detectors.read_detection`).
    sections : mapping
        The detector's keyword arguments: the config sections its registry entry names.
    distance_store, dataset : path, optional
        The class's distance store and the training set, for detectors that read them.
    sidecar : path, optional
        The checkpoint's sidecar, checked against the store's ``model_sha256``.
    performance : mapping, optional
        Performance knobs by dotted config key (passed as resources), put back into
        the sections they belong to.
    """
    if method not in DETECTORS:
        raise ValueError(f"unknown detection method {method!r}; available: {sorted(DETECTORS)}")
    if sidecar is not None:
        check_model(explanations, sidecar)
    paths = DETECTORS[method].sections
    sections = {arg: merge_performance(sections[arg], paths[arg], performance) for arg in sections}
    inputs = DetectorInputs(explanations, distance_store=distance_store, dataset=dataset)
    DETECTORS[method].load()(inputs, **sections).save(out, method)
