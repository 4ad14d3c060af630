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
        code=code("train"),
    log:
        "results/logs/train_proxy/{dataset}.log",
    benchmark:
        "results/benchmarks/train_proxy/{dataset}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/train_proxy.py"


rule train:
    input:
        dataset="results/{dataset}/{scenario}/poisoned.h5",
    output:
        checkpoint="results/{dataset}/{scenario}/model.safetensors",
        sidecar="results/{dataset}/{scenario}/model.safetensors.json",
        metrics="results/{dataset}/{scenario}/metrics.json",
        curve_csv="results/{dataset}/{scenario}/training_curve.csv",
        curve_png=report(
            "results/{dataset}/{scenario}/training_curve.png",
            caption="../workflow/report/training.rst",
            category="Training",
            subcategory="{scenario}",
        ),
    params:
        model=config["model"],
        training=config["training"],
        code=code("train"),
    log:
        "results/logs/train/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{scenario}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/train.py"
