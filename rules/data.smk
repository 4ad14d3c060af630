rule make_dataset:
    output:
        dataset="results/{dataset}/dataset.h5",
        montage=report(
            "results/{dataset}/dataset_montage.png",
            caption="../workflow/report/dataset.rst",
            category="Data",
        ),
        # the bad files and classes of a user's dataset that were left out (on_bad_input: skip)
        bad_input="results/{dataset}/bad_input.csv",
    params:
        dataset=cfg("dataset"),
        code=code("data"),
        # a user's dataset: the digest of its files, so that editing them reruns the audit
        **DATASET_CONTENT,
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
        # the clean proxy model (rule train_proxy) only for attacks that need one
        proxy=lambda w: PROXY.format(dataset=w.dataset) if w.scenario in PROXY_SCENARIOS else [],
        proxy_sidecar=lambda w: (
            f"{PROXY.format(dataset=w.dataset)}.json" if w.scenario in PROXY_SCENARIOS else []
        ),
    output:
        dataset="results/{dataset}/{scenario}/poisoned.h5",
        montage=report(
            "results/{dataset}/{scenario}/attack_montage.png",
            caption="../workflow/report/attack.rst",
            category="Attacks",
            subcategory="{scenario}",
        ),
    params:
        scenario=scenario_params,
        # the model code PGD runs is covered by the proxy checkpoint, an input of LC scenarios
        code=code("data"),
    log:
        "results/logs/poison/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/poison/{dataset}/{scenario}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/poison.py"
