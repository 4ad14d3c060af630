"""Rule distances_l2: Euclidean distances between the heatmaps of the target class group."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.distances_euclidean(snakemake.params.group, snakemake.output.store)
