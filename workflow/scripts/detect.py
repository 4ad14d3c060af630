"""Rule detect: one detection method on the analysed class (poisonscan.detectors)."""

from poisonscan.parameters import performance_values
from poisonscan.rulelog import rule_log
from poisonscan.steps.detect import detect

with rule_log(snakemake.log[0], snakemake.input):
    detect(
        snakemake.wildcards.method,
        snakemake.params.group,
        snakemake.output.detection,
        snakemake.params.sections,
        distance_store=snakemake.input.get("distances"),
        dataset=snakemake.input.get("dataset"),
        sidecar=snakemake.input.sidecar,
        performance=performance_values(snakemake.resources),
    )
