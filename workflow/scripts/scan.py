"""Rule scan: SpRAy on every class of the explanation store; rank the classes by suspicion."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.scan import scan_classes

with rule_log(snakemake.log[0], snakemake.input):
    scan_classes(
        snakemake.input.store,
        snakemake.output.csv,
        snakemake.output.png,
        snakemake.params.spray,
        snakemake.params.decision,
        target=snakemake.params.target,
        sidecar=snakemake.input.sidecar,
        gw=snakemake.input.get("gw") or None,  # the branch leaves "" or nothing when off
    )
