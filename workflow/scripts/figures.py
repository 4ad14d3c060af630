"""Rule figures: the analysis and per-cluster figures of one detection method."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.report import method_figures

with rule_log(snakemake.log[0], snakemake.input):
    method_figures(
        snakemake.input.detection,
        snakemake.params.group,
        snakemake.input.dataset,
        snakemake.input.tsne,
        snakemake.output.analysis,
        snakemake.output.clusters,
        snakemake.params.title,
    )
