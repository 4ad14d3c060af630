"""Rule train_proxy: the clean proxy model of the label-consistent attack."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.train import train_proxy

with rule_log(snakemake.log[0], snakemake.input):
    train_proxy(
        snakemake.input.dataset,
        snakemake.output.checkpoint,
        snakemake.output.metrics,
        snakemake.params.model,
        snakemake.params.training,
        threads=snakemake.threads,
    )
