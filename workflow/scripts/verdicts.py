"""Rule verdicts: every class poisoned or clean, the suspicious images, the triggers."""

from pathlib import Path

from poisonscan.rulelog import rule_log
from poisonscan.steps.verdicts import audit_scenario

with rule_log(snakemake.log[0], snakemake.input):
    audit_scenario(
        snakemake.input.store,
        snakemake.input.dataset,
        snakemake.input.checkpoint,
        Path(snakemake.output.table).parent,
        snakemake.params.verdicts,
        threads=snakemake.threads,
        metrics=snakemake.input.get("metrics"),
        quality=snakemake.params.get("quality"),
        judge_test=snakemake.params.get("judge_test", False),
    )
