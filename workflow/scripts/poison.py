"""Rule poison: apply one scenario's attack to the clean dataset."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.poison_dataset(snakemake.input.dataset, snakemake.output.dataset, snakemake.params.scenario)
