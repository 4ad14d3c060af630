"""Rule overview: the report's first page (verdicts, suspicious images, detection tables)."""

from poisonscan.rulelog import rule_log
from poisonscan.steps.report import overview_page

with rule_log(snakemake.log[0], snakemake.input):
    n = len(snakemake.params.names)
    tables = snakemake.input.tables if n else []
    figures = snakemake.input.figures if n else []
    overview_page(
        snakemake.output.page,
        list(zip(snakemake.params.names, tables, figures, strict=True)),
        summary=snakemake.input.get("summary"),
        verdict_summary=snakemake.input.get("verdict_summary"),
        suspicious=snakemake.input.get("suspicious"),
        details=snakemake.input.get("details"),
    )
