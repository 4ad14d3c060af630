"""Rule removal: undefended model, retrained filters and the perfect filter in one table."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.removal import removal_table

with rule_log(snakemake.log[0], snakemake.input):
    removal_table(
        snakemake.input.metrics,
        snakemake.input.dataset,
        dict(zip(snakemake.params.filters, snakemake.input.retrained, strict=True)),
        snakemake.output.table,
    )
