"""Rule evaluate: detection metrics of every method for one scenario (+ ART's JSON shape)."""

from poisonscan import steps
from poisonscan.steps import cluster

steps.setup_logging(snakemake.log[0])
cluster.evaluate_scenario(
    snakemake.params.group,
    snakemake.input.metrics,
    dict(zip(snakemake.params.methods, snakemake.input.clusters, strict=True)),
    snakemake.output.evaluation,
    snakemake.params.context,
    art_out=snakemake.output.art,
)
