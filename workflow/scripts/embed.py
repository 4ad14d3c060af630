"""Rule embed: 2-D t-SNE of the analysed class's heatmaps, shared by the method figures."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.report import embed_class

with rule_log(snakemake.log[0], snakemake.input):
    embed_class(
        snakemake.params.group,
        snakemake.output.tsne,
        seed=snakemake.params.seed,
        sidecar=snakemake.input.sidecar,
    )
