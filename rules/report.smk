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
        code=code("report"),
    log:
        "results/logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/aggregate.py"


rule embed:
    input:
        explanations="results/{dataset}/{scenario}/explain.zarr",
        sidecar=sidecar,
    output:
        tsne="results/{dataset}/{scenario}/figures/tsne.npz",
    params:
        group=target_group,
        seed=cfg("clustering.spray.seed"),
        code=code("report"),
    log:
        "results/logs/embed/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/embed/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/embed.py"


rule figures:
    input:
        detection="results/{dataset}/{scenario}/clusters/{method}.npz",
        explanations="results/{dataset}/{scenario}/explain.zarr",
        dataset="results/{dataset}/{scenario}/poisoned.h5",
        tsne="results/{dataset}/{scenario}/figures/tsne.npz",
    output:
        analysis=report(
            "results/{dataset}/{scenario}/figures/{method}_analysis.png",
            caption="../workflow/report/figures.rst",
            category="Detection",
            subcategory="{scenario}",
            labels={"scenario": "{scenario}", "method": "{method}", "figure": "analysis"},
        ),
        clusters=report(
            "results/{dataset}/{scenario}/figures/{method}_clusters.png",
            caption="../workflow/report/figures.rst",
            category="Detection",
            subcategory="{scenario}",
            labels={"scenario": "{scenario}", "method": "{method}", "figure": "clusters"},
        ),
    params:
        group=target_group,
        title=lambda w: f"{w.scenario}: {w.method}",
        code=code("report"),
    log:
        "results/logs/figures/{dataset}/{scenario}/{method}.log",
    benchmark:
        "results/benchmarks/figures/{dataset}/{scenario}/{method}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/figures.py"


rule overview:
    input:
        unpack(overview_inputs),
    output:
        page=report(
            directory("results/overview"),
            htmlindex="index.html",
            caption="../workflow/report/overview.rst",
            category="1 Overview",
        ),
    params:
        names=[name for name, _ in verdict_pages()],
        code=code("report"),
    log:
        "results/logs/overview.log",
    benchmark:
        "results/benchmarks/overview.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/overview.py"
