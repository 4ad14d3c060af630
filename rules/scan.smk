# Whole-dataset scan: every class of the explanation store, ranked by suspicion.


rule scan:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
        sidecar=sidecar,
        gw=branch(SCAN_GW, "results/{dataset}/{scenario}/distances/gw_classes.zarr"),
    output:
        csv="results/{dataset}/{scenario}/scan.csv",
        png=report(
            "results/{dataset}/{scenario}/scan.png",
            caption="../workflow/report/scan.rst",
            category="Scan",
            subcategory="{scenario}",
        ),
    params:
        spray=cfg("clustering.spray"),
        decision=cfg("clustering.decision"),
        target=lambda w: cfg(f"scenarios.{w.scenario}.target"),
        code=code("scan"),
    log:
        "results/logs/scan/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/scan/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/scan.py"
