"""Rule train: train the CNN on the poisoned dataset; checkpoint, metrics, training curve."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.train import train

with rule_log(snakemake.log[0], snakemake.input):
    train(
        snakemake.input.dataset,
        snakemake.output.checkpoint,
        snakemake.output.metrics,
        snakemake.params.model,
        snakemake.params.training,
        threads=snakemake.threads,
        curve_csv=snakemake.output.curve_csv,
        curve_png=snakemake.output.curve_png,
    )
