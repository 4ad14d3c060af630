"""Rule summary: one CSV row per dataset x scenario x method."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.evaluate import summarize

with rule_log(snakemake.log[0], snakemake.input):
    summarize(snakemake.input.evaluations, snakemake.output.summary)
