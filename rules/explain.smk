rule explain:
    input:
        dataset="results/{dataset}/{scenario}/poisoned.h5",
        checkpoint="results/{dataset}/{scenario}/model.safetensors",
        sidecar="results/{dataset}/{scenario}/model.safetensors.json",
    output:
        store=directory("results/{dataset}/{scenario}/explain.zarr"),
        montage=report(
            "results/{dataset}/{scenario}/explain_montage.png",
            caption="../workflow/report/explain.rst",
            category="Explanations",
            subcategory="{scenario}",
        ),
    params:
        scenario=scenario_params,
        explain=cfg("explain"),
        code=code("explain"),
    resources:
        # performance knobs (explain.batch_size): not params, so changing them reruns nothing
        **performance_resources(config, "explain"),
    log:
        "results/logs/explain/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/explain/{dataset}/{scenario}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/explain.py"
