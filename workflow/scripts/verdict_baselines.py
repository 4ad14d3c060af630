"""Rule verdict_baselines: SCAn, SPECTRE, Activation Clustering and Spectral Signatures on
every class, with the verdicts' interface."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.verdicts import baseline_verdicts

with rule_log(snakemake.log[0], snakemake.input):
    baseline_verdicts(
        snakemake.input.store,
        snakemake.input.dataset,
        snakemake.output.flags,
        snakemake.params.sections,
        target=snakemake.params.target,
    )
