"""Rule retrain_filtered: retrain without one method's flags (or without the true poison)."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.removal import retrain_filtered

perfect = snakemake.wildcards.filter == "perfect"
with rule_log(snakemake.log[0], snakemake.input):
    retrain_filtered(
        snakemake.input.dataset,
        snakemake.output.retrained,
        snakemake.params.model,
        snakemake.params.training,
        detection=None if perfect else snakemake.input.extra[0],
        explanations=None if perfect else snakemake.params.group,
        name=snakemake.wildcards.filter,
        threads=snakemake.threads,
    )
