"""Rule poison: apply one scenario's attack to the clean dataset; draw its montage."""

from poisonscan import steps

steps.setup_logging(snakemake.log[0])
steps.poison_dataset(
    snakemake.input.dataset,
    snakemake.output.dataset,
    snakemake.params.scenario,
    montage=snakemake.output.montage,
    proxy=snakemake.input.get("proxy") or None,
    threads=snakemake.threads,
)
