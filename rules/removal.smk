# Removal and retraining (part of `all` when removal.methods is set): retrain without each
# method's flags and without the true poison (the perfect filter).


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
        model=cfg("model"),
        training=cfg("training"),
        code=code("removal"),
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
        code=code("removal"),
    log:
        "results/logs/removal/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/removal/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/removal.py"
