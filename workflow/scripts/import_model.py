"""Rule import_model: the user's model (model.file) instead of training; what train writes."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.train import import_model

with rule_log(snakemake.log[0], snakemake.input):
    import_model(
        snakemake.input.dataset,
        snakemake.output.checkpoint,
        snakemake.output.metrics,
        snakemake.params.model,
        threads=snakemake.threads,
        program=snakemake.output.program[0] if snakemake.output.program else None,
    )
