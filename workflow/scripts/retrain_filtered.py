"""Rule retrain_filtered: retrain without one method's flags (or without the true poison)."""

from poisonscan import steps
from poisonscan.steps import scan

steps.setup_logging(snakemake.log[0])
perfect = snakemake.wildcards.filter == "perfect"
scan.retrain_filtered(
    snakemake.input.dataset,
    snakemake.output.retrained,
    snakemake.params.model,
    snakemake.params.training,
    clusters=None if perfect else snakemake.input.extra[0],
    explanations=None if perfect else snakemake.params.group,
    name=snakemake.wildcards.filter,
    threads=snakemake.threads,
)
