"""Rule cluster_activations: the Activation Clustering baseline."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.cluster_activations(
    snakemake.input.store, snakemake.output.clusters, snakemake.params.clustering
)
