rule make_dataset:
    output:
        dataset="results/{dataset}/dataset.h5",
        montage=report(
            "results/{dataset}/dataset_montage.png",
            caption="../workflow/report/dataset.rst",
            category="Data",
        ),
    params:
        dataset=config["dataset"],
        code=code_version("data", "gtsrb", "storage", "steps.data", "steps.common"),
    log:
        "results/logs/make_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/make_dataset/{dataset}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/make_dataset.py"


rule poison:
    input:
        dataset="results/{dataset}/dataset.h5",
    output:
        dataset="results/{dataset}/{scenario}/poisoned.h5",
    params:
        scenario=scenario_params,
        code=code_version("attacks", "storage", "steps.data", "steps.common"),
    log:
        "results/logs/poison/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/poison/{dataset}/{scenario}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/poison.py"
