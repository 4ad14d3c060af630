"""Rule distances_l2: Euclidean distances between the heatmaps of the target class group."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.distances import distances_euclidean

with rule_log(snakemake.log[0], snakemake.input):
    distances_euclidean(
        snakemake.params.group, snakemake.output.store, sidecar=snakemake.input.sidecar
    )
