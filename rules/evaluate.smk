rule evaluate:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
        metrics="results/{dataset}/{scenario}/metrics.json",
        dataset="results/{dataset}/{scenario}/poisoned.h5",
        detections=expand(
            "results/{{dataset}}/{{scenario}}/clusters/{method}.npz", method=METHODS
        ),
    output:
        evaluation="results/{dataset}/{scenario}/evaluation.json",
        art="results/{dataset}/{scenario}/evaluation_art.json",
    params:
        group=target_group,
        methods=METHODS,
        context=scenario_context,
        code=code("evaluate"),
    log:
        "results/logs/evaluate/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/evaluate.py"


rule summary:
    input:
        evaluations=evaluation_files,
    output:
        summary=report(
            "results/summary.csv",
            caption="../workflow/report/summary.rst",
            category="Detection",
        ),
    params:
        code=code("evaluate"),
    log:
        "results/logs/summary.log",
    benchmark:
        "results/benchmarks/summary.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/summary.py"
