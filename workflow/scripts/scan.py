"""Rule scan: SpRAy on every class of the explanation store; rank the classes by suspicion."""

from poisonscan import steps
from poisonscan.steps import scan

steps.setup_logging(snakemake.log[0])
scan.scan_classes(
    snakemake.input.store,
    snakemake.output.csv,
    snakemake.output.png,
    snakemake.params.spray,
    target=snakemake.params.target,
    decision=snakemake.params.decision,
)
