"""Rule poison: apply one scenario's attack to the clean dataset; draw its montage."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.data import poison_dataset

with rule_log(snakemake.log[0], snakemake.input):
    poison_dataset(
        snakemake.input.dataset,
        snakemake.output.dataset,
        snakemake.params.scenario,
        montage=snakemake.output.montage,
        proxy=snakemake.input.get("proxy") or None,
        threads=snakemake.threads,
    )
