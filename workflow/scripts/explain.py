"""Rule explain: heatmaps and activations of the explained classes into zarr, and a montage."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.explain import explain_target

with rule_log(snakemake.log[0]):
    explain_target(
        snakemake.input.dataset,
        snakemake.input.checkpoint,
        snakemake.output.store,
        snakemake.params.scenario,
        snakemake.params.explain,
        threads=snakemake.threads,
        montage=snakemake.output.montage,
    )
