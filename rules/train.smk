from poisonscan.modelfile import model_format


rule train_proxy:
    input:
        dataset="results/{dataset}/dataset.h5",
    output:
        checkpoint=PROXY,
        sidecar=f"{PROXY}.json",
        metrics="results/{dataset}/proxy/metrics.json",
    params:
        model=cfg("model"),
        training=cfg("training"),
        code=code("train"),
    log:
        "results/logs/train_proxy/{dataset}.log",
    benchmark:
        "results/benchmarks/train_proxy/{dataset}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/train_proxy.py"


# model.file: the user's model replaces training (rule import_model writes what train writes).
USER_MODEL = cfg("model.file")
USER_MODEL_FORMAT = model_format(USER_MODEL) if USER_MODEL else None


if USER_MODEL:

    rule import_model:
        input:
            dataset="results/{dataset}/{scenario}/poisoned.h5",
            model=USER_MODEL,
        output:
            checkpoint="results/{dataset}/{scenario}/model.safetensors",
            sidecar="results/{dataset}/{scenario}/model.safetensors.json",
            metrics="results/{dataset}/{scenario}/metrics.json",
            # a TorchScript model: the program beside its weights (loading the checkpoint reads it)
            program=(
                ["results/{dataset}/{scenario}/model.torchscript.pt"]
                if USER_MODEL_FORMAT == "torchscript"
                else []
            ),
        params:
            model=cfg("model"),
            code=code("train"),
        log:
            "results/logs/import_model/{dataset}/{scenario}.log",
        benchmark:
            "results/benchmarks/import_model/{dataset}/{scenario}.tsv"
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow/scripts/import_model.py"

else:

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
            model=cfg("model"),
            training=cfg("training"),
            code=code("train"),
        log:
            "results/logs/train/{dataset}/{scenario}.log",
        benchmark:
            "results/benchmarks/train/{dataset}/{scenario}.tsv"
        conda:
            "../envs/torch.yaml"
        script:
            "../workflow/scripts/train.py"
