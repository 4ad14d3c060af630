"""Rule spectral_signatures: the Spectral Signatures baseline."""

from poisonscan import steps
from poisonscan.steps import cluster

steps.setup_logging(snakemake.log[0])
cluster.spectral_signatures(snakemake.params.group, snakemake.output.clusters, snakemake.params.ss)
