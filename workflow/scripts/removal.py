"""Rule removal: undefended model, retrained filters and the perfect filter in one table."""

from poisonscan import steps
from poisonscan.steps import scan

steps.setup_logging(snakemake.log[0])
scan.removal_table(
    snakemake.input.metrics,
    snakemake.input.dataset,
    dict(zip(snakemake.params.filters, snakemake.input.retrained, strict=True)),
    snakemake.output.table,
)
