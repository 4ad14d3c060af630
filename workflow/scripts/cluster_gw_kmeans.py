"""Rule cluster_gw_kmeans: k-means with GW barycentres (the reference study's clustering)."""

from poisonscan import steps
from poisonscan.steps import cluster

steps.setup_logging(snakemake.log[0])
cluster.cluster_gw_kmeans(
    snakemake.input.store,
    snakemake.params.group,
    snakemake.output.clusters,
    snakemake.params.gw_kmeans,
    snakemake.params.gw,
    snakemake.params.decision,
)
