"""Rule cluster_raw: the raw-pixel clustering control."""

from poisonscan import steps
from poisonscan.steps import cluster

steps.setup_logging(snakemake.log[0])
cluster.cluster_raw(
    snakemake.input.dataset,
    snakemake.params.group,
    snakemake.output.clusters,
    snakemake.params.raw,
    snakemake.params.decision,
)
