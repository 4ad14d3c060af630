"""Rule evaluate: detection metrics of every method for one scenario."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.evaluate_scenario(
    snakemake.input.store,
    snakemake.input.metrics,
    dict(zip(snakemake.params.methods, snakemake.input.clusters, strict=True)),
    snakemake.output.evaluation,
    snakemake.params.context,
)
