rule aggregate:
    input:
        summary="results/summary.csv",
    output:
        table="results/aggregate.csv",
        markdown=report(
            "results/tables.md",
            caption="../workflow/report/tables.rst",
            category="Detection",
        ),
    params:
        methods=METHODS,
        code=code_version("experiments", "steps.report", "steps.common"),
    log:
        "results/logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/aggregate.py"
