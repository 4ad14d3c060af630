"""One function per workflow rule: paths and plain config dicts in, files out.

The Snakemake scripts in ``workflow/scripts/`` only unpack ``snakemake.*`` and
call these, so every step can also run (and be tested) without Snakemake. One
module per stage, so that a rule's code hash (``code_version("steps.train")``)
changes only when its own stage changes.
"""

from __future__ import annotations

from poisonscan.steps.cluster import (
    cluster_activations,
    cluster_distances,
    evaluate_scenario,
    summarize,
)
from poisonscan.steps.common import setup_logging
from poisonscan.steps.data import make_dataset, poison_dataset
from poisonscan.steps.distances import distances_euclidean, distances_gw
from poisonscan.steps.explain import explain_target
from poisonscan.steps.report import aggregate_summary
from poisonscan.steps.train import train

__all__ = [
    "aggregate_summary",
    "cluster_activations",
    "cluster_distances",
    "distances_euclidean",
    "distances_gw",
    "evaluate_scenario",
    "explain_target",
    "make_dataset",
    "poison_dataset",
    "setup_logging",
    "summarize",
    "train",
]
