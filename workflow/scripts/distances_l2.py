"""Rule distances_l2: Euclidean distances between heatmaps."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.distances_euclidean(snakemake.input.store, snakemake.output.store)
