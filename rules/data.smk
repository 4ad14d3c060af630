from poisonscan.attacks import ATTACKS



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


PROXY = "results/{dataset}/proxy/model.safetensors"
PROXY_SCENARIOS = {
    name for name, sc in config["scenarios"].items() if ATTACKS[sc["attack"]].needs_proxy
}


# The clean model the label-consistent attack runs PGD against: trained once per
# dataset, shared by every scenario that needs it (the scenario name "proxy" is reserved).
rule train_proxy:
    input:
        dataset="results/{dataset}/dataset.h5",
    output:
        checkpoint=PROXY,
        sidecar=f"{PROXY}.json",
        metrics="results/{dataset}/proxy/metrics.json",
    params:
        model=config["model"],
        training=config["training"],
        code=code_version("models", "training", "storage", "steps.data", "steps.common"),
    log:
        "results/logs/train_proxy/{dataset}.log",
    benchmark:
        "results/benchmarks/train_proxy/{dataset}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/train_proxy.py"


rule poison:
    input:
        dataset="results/{dataset}/dataset.h5",
        # the proxy model only for attacks that need one (label-consistent)
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
        code=code_version("attacks", "storage", "steps.data", "steps.common"),
    log:
        "results/logs/poison/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/poison/{dataset}/{scenario}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/poison.py"
