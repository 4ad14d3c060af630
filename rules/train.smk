rule train:
    input:
        dataset="results/{dataset}/{scenario}/poisoned.h5",
    output:
        checkpoint="results/{dataset}/{scenario}/model.safetensors",
        sidecar="results/{dataset}/{scenario}/model.safetensors.json",
        metrics="results/{dataset}/{scenario}/metrics.json",
    params:
        model=config["model"],
        training=config["training"],
        code=code_version("models", "training", "storage", "steps.train", "steps.common"),
    log:
        "results/logs/train/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{scenario}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/train.py"
