"""Rule explain: heatmaps and activations of the explained classes into zarr, and a montage."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.explain_target(
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    snakemake.output.store,
    snakemake.params.scenario,
    snakemake.params.explain,
    threads=snakemake.threads,
    montage=snakemake.output.montage,
)
