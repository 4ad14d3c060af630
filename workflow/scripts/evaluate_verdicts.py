"""Rule evaluate_verdicts: the verdicts of poisonscan and the baselines against the truth."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.verdicts import evaluate_verdicts

with rule_log(snakemake.log[0], snakemake.input):
    evaluate_verdicts(
        snakemake.input.table,
        snakemake.input.samples,
        snakemake.input.baselines,
        snakemake.input.dataset,
        snakemake.output.evaluation,
        snakemake.params.context,
        snakemake.params.target,
    )
