"""Rule aggregate: mean and sd over the repetitions of the experiment matrix."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.aggregate_summary(
    snakemake.input.summary,
    snakemake.output.table,
    snakemake.output.markdown,
    snakemake.params.methods,
)
