"""Rule cluster_distances: SpRAy spectral clustering of a heatmap distance matrix."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.cluster_distances(
    snakemake.input.store, snakemake.output.clusters, snakemake.params.clustering
)
