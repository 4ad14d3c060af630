"""Rule aggregate: mean and sd over the repetitions of the experiment matrix."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.report import aggregate_summary

with rule_log(snakemake.log[0], snakemake.input):
    aggregate_summary(
        snakemake.input.summary,
        snakemake.output.table,
        snakemake.output.markdown,
        snakemake.params.methods,
    )
