# Whole-dataset scan, and removal with retraining (both part of `all`; removal only when
# removal.methods is set).


rule scan:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
    output:
        csv="results/{dataset}/{scenario}/scan.csv",
        png=report(
            "results/{dataset}/{scenario}/scan.png",
            caption="../workflow/report/scan.rst",
            category="Scan",
            subcategory="{scenario}",
        ),
    params:
        spray=SPRAY,
        decision=DECISION,
        target=lambda w: config["scenarios"][w.scenario]["target"],
        code=code_version(*CLUSTERING_CODE, "steps.scan", "distances"),
    log:
        "results/logs/scan/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/scan/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/scan.py"


rule retrain_filtered:
    input:
        dataset="results/{dataset}/{scenario}/poisoned.h5",
        # the perfect filter needs only the dataset (its poison mask)
        extra=lambda w: (
            []
            if w.filter == "perfect"
            else [
                f"results/{w.dataset}/{w.scenario}/clusters/{w.filter}.npz",
                f"results/{w.dataset}/{w.scenario}/explain.zarr",
            ]
        ),
    output:
        retrained="results/{dataset}/{scenario}/retrain/{filter}.json",
    wildcard_constraints:
        filter="|".join(["perfect", *REMOVAL_METHODS]),
    params:
        group=target_group,
        model=config["model"],
        training=config["training"],
        code=code_version("models", "training", "gtsrb", "storage", "removal", "steps.train",
                          "steps.scan", "steps.cluster", "steps.common"),  # fmt: skip
    log:
        "results/logs/retrain_filtered/{dataset}/{scenario}/{filter}.log",
    benchmark:
        "results/benchmarks/retrain_filtered/{dataset}/{scenario}/{filter}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/retrain_filtered.py"


rule removal:
    input:
        dataset="results/{dataset}/{scenario}/poisoned.h5",
        metrics="results/{dataset}/{scenario}/metrics.json",
        retrained=expand(
            "results/{{dataset}}/{{scenario}}/retrain/{filter}.json",
            filter=[*REMOVAL_METHODS, "perfect"],
        ),
    output:
        table=report(
            "results/{dataset}/{scenario}/removal.csv",
            caption="../workflow/report/removal.rst",
            category="Removal",
            subcategory="{scenario}",
        ),
    params:
        filters=[*REMOVAL_METHODS, "perfect"],
        code=code_version("removal", "steps.scan", "steps.common", "storage"),
    log:
        "results/logs/removal/{dataset}/{scenario}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/removal.py"
