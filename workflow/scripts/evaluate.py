"""Rule evaluate: detection metrics of every method for one scenario (+ ART's JSON shape)."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.evaluate import evaluate_scenario

with rule_log(snakemake.log[0], snakemake.input):
    evaluate_scenario(
        snakemake.params.group,
        snakemake.input.metrics,
        dict(zip(snakemake.params.methods, snakemake.input.detections, strict=True)),
        snakemake.output.evaluation,
        snakemake.params.context,
        art_out=snakemake.output.art,
        dataset=snakemake.input.dataset,
    )
