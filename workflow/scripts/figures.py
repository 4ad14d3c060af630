"""Rule figures: the analysis and per-cluster figures of one detection method."""

from poisonscan import steps
from poisonscan.steps import figures

steps.setup_logging(snakemake.log[0])
figures.method_figures(
    snakemake.input.clusters,
    snakemake.params.group,
    snakemake.input.dataset,
    snakemake.input.tsne,
    snakemake.output.analysis,
    snakemake.output.clusters,
    snakemake.params.title,
)
