"""Rule cluster_activations: the Activation Clustering baseline (ART's options)."""

from poisonscan import steps
from poisonscan.steps import cluster

steps.setup_logging(snakemake.log[0])
cluster.cluster_activations(
    snakemake.params.group, snakemake.output.clusters, snakemake.params.clustering
)
