"""poisonscan: find backdoor-poisoned training images by clustering their explanations.

Modules, one concept each:

- :mod:`poisonscan.data`        procedural traffic-sign dataset (the embedded default)
- :mod:`poisonscan.attacks`     backdoor poisoning of a dataset
- :mod:`poisonscan.models`      CNN architectures (registry)
- :mod:`poisonscan.training`    training, checkpoints, clean accuracy and attack success rate
- :mod:`poisonscan.explain`     LRP heatmaps and activations (zennit)
- :mod:`poisonscan.distances`   Euclidean and Gromov-Wasserstein distance matrices
- :mod:`poisonscan.parallel`    Dask cluster selection
- :mod:`poisonscan.clustering`  SpRAy spectral clustering and Activation Clustering
- :mod:`poisonscan.evaluate`    detection metrics and the summary table
- :mod:`poisonscan.storage`     HDF5 / zarr formats, atomic writes
- :mod:`poisonscan.config`      configuration schema validation
- :mod:`poisonscan.steps`       one function per workflow rule, one module per stage
"""

from __future__ import annotations

__version__ = "0.1.0"


def code_version(*modules: str) -> str:
    """Hash of the package version and the source of the named ``poisonscan`` modules.

    Names are dotted below the package: ``"training"``, ``"steps.train"``; a
    subpackage (``"attacks"``) stands for all of its modules.

    Rules pass it through ``params:`` so that Snakemake reruns a step when the
    code it runs changes (Snakemake does not track imported modules itself).
    """
    import hashlib
    from pathlib import Path

    here = Path(__file__).parent
    h = hashlib.sha256(__version__.encode())
    for name in sorted(modules):
        base = here.joinpath(*name.split("."))
        # a module file, or a package: every module in it
        files = [base.with_suffix(".py")] if base.with_suffix(".py").is_file() else []
        if not files and base.is_dir():
            files = sorted(base.rglob("*.py"))
        if not files:
            raise ValueError(f"no module or package poisonscan.{name} at {base}")
        for path in files:
            h.update(str(path.relative_to(here)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]
