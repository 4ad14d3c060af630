"""Rule clean_list: the training images the verdicts did not flag, as a list and a dataset."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.verdicts import clean_list

with rule_log(snakemake.log[0], snakemake.input):
    clean_list(
        snakemake.input.samples,
        snakemake.input.dataset,
        snakemake.output.clean_list,
        snakemake.output.filtered,
    )
