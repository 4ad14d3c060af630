"""Rule verdict_summary: every scenario's verdict evaluation in one CSV."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.verdicts import summarize_verdicts

with rule_log(snakemake.log[0], snakemake.input):
    summarize_verdicts(snakemake.input.evaluations, snakemake.output.summary)
