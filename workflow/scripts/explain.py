"""Rule explain: heatmaps and activations of the explained classes into zarr, and a montage."""

from poisonscan.parameters import performance_values
from poisonscan.rulelog import rule_log
from poisonscan.steps.explain import explain_target

with rule_log(snakemake.log[0], snakemake.input):
    explain_target(
        snakemake.input.dataset,
        snakemake.input.checkpoint,
        snakemake.output.store,
        snakemake.params.scenario,
        snakemake.params.explain,
        threads=snakemake.threads,
        montage=snakemake.output.montage,
        performance=performance_values(snakemake.resources),
    )
