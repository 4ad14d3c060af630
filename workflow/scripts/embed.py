"""Rule embed: 2-D t-SNE of the analysed class's heatmaps, shared by the method figures."""

from poisonscan import steps
from poisonscan.steps import figures

steps.setup_logging(snakemake.log[0])
figures.embed_class(snakemake.params.group, snakemake.output.tsne, seed=snakemake.params.seed)
