"""Rule cluster_distances: SpRAy / agglomerative / HDBSCAN on a heatmap distance matrix."""

from poisonscan import steps
from poisonscan.steps import cluster

steps.setup_logging(snakemake.log[0])
cluster.cluster_distances(
    snakemake.input.store,
    snakemake.output.clusters,
    snakemake.params.clusterer,
    snakemake.params.clustering,
    snakemake.params.decision,
    method=f"{snakemake.wildcards.clusterer}_{snakemake.wildcards.distance}",
)
