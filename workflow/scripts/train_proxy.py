"""Rule train_proxy: the clean proxy model of the label-consistent attack."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.data.train_proxy(
    snakemake.input.dataset,
    snakemake.output.checkpoint,
    snakemake.output.metrics,
    snakemake.params.model,
    snakemake.params.training,
    threads=snakemake.threads,
)
