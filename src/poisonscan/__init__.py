"""poisonscan: find backdoor-poisoned training images by clustering their explanations.

Modules, one concept each:

- :mod:`poisonscan.data`        procedural traffic-sign dataset (the embedded default)
- :mod:`poisonscan.attacks`     backdoor poisoning of a dataset
- :mod:`poisonscan.models`      CNN architectures (registry)
- :mod:`poisonscan.training`    training, checkpoints, clean accuracy and attack success rate
- :mod:`poisonscan.explain`     LRP heatmaps and activations (zennit)
- :mod:`poisonscan.distances`   Euclidean and Gromov-Wasserstein distance matrices
- :mod:`poisonscan.parallel`    Dask cluster selection
- :mod:`poisonscan.clustering`  SpRAy, GW k-means, decision rules, the class scan
- :mod:`poisonscan.baselines`   Activation Clustering, Spectral Signatures, raw pixels
- :mod:`poisonscan.detectors`   detection methods by name (registry), one result type
- :mod:`poisonscan.evaluate`    detection metrics and the summary table
- :mod:`poisonscan.storage`     HDF5 / zarr / npz / CSV / JSON formats, atomic writes
- :mod:`poisonscan.config`      configuration schema validation, checks across keys
- :mod:`poisonscan.parameters`  parameter objects from config sections
- :mod:`poisonscan.codehash`    code hashes of the workflow rules, from the imports
- :mod:`poisonscan.rulelog`     a workflow step's log file
- :mod:`poisonscan.steps`       one function per workflow rule, one module per rule file
- :mod:`poisonscan.cli`, :mod:`poisonscan.api`  the `poisonscan` command; `poisonscan.audit(...)`
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``poisonscan.audit``, ``poisonscan.load``, ``poisonscan.AuditResult``: the Python API
    (:mod:`poisonscan.api`), imported on first use so that ``import poisonscan`` stays light."""
    if name in ("audit", "load", "AuditResult", "AuditError"):
        from poisonscan import api

        return getattr(api, name)
    raise AttributeError(f"module 'poisonscan' has no attribute {name!r}")
