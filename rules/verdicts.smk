# Verdicts: every class poisoned or clean, the suspicious images and the trigger
# (poisonscan.verdicts); the baselines with the same interface; their scores against the
# ground truth of the scenario.


rule verdicts:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
        dataset="results/{dataset}/{scenario}/poisoned.h5",
        checkpoint="results/{dataset}/{scenario}/model.safetensors",
        sidecar="results/{dataset}/{scenario}/model.safetensors.json",
        # an audit: the model's test accuracy, for the model-quality gate
        **AUDIT_METRICS,
    output:
        table=report(
            "results/{dataset}/{scenario}/verdicts/verdicts.csv",
            caption="../workflow/report/verdicts.rst",
            category="Verdicts",
            subcategory="{scenario}",
        ),
        suspicious=report(
            "results/{dataset}/{scenario}/verdicts/suspicious.csv",
            caption="../workflow/report/suspicious.rst",
            category="Verdicts",
            subcategory="{scenario}",
        ),
        samples="results/{dataset}/{scenario}/verdicts/samples.npz",
        details="results/{dataset}/{scenario}/verdicts/verdicts.json",
        figure=report(
            "results/{dataset}/{scenario}/verdicts/verdicts.png",
            caption="../workflow/report/verdicts.rst",
            category="Verdicts",
            subcategory="{scenario}",
        ),
        classes=directory("results/{dataset}/{scenario}/verdicts/classes"),
        # an audit: (near-)identical images under different labels
        **AUDIT_CONFLICTS,
    params:
        verdicts=cfg("verdicts"),
        code=code("verdicts"),
        **AUDIT_QUALITY,
    log:
        "results/logs/verdicts/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/verdicts/{dataset}/{scenario}.tsv"
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow/scripts/verdicts.py"


rule verdict_baselines:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
        dataset="results/{dataset}/{scenario}/poisoned.h5",
    output:
        flags="results/{dataset}/{scenario}/verdicts/baselines.npz",
    params:
        # every verdict baseline's config section (poisonscan.verdicts.baselines)
        sections=verdict_baseline_sections(),
        target=attacked_class,
        code=code("verdicts"),
    log:
        "results/logs/verdict_baselines/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/verdict_baselines/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/verdict_baselines.py"


rule evaluate_verdicts:
    input:
        table="results/{dataset}/{scenario}/verdicts/verdicts.csv",
        samples="results/{dataset}/{scenario}/verdicts/samples.npz",
        baselines="results/{dataset}/{scenario}/verdicts/baselines.npz",
        dataset="results/{dataset}/{scenario}/poisoned.h5",
    output:
        evaluation="results/{dataset}/{scenario}/verdicts/evaluation.json",
    params:
        context=scenario_context,
        target=attacked_class,
        code=code("verdicts"),
    log:
        "results/logs/evaluate_verdicts/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/evaluate_verdicts/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/evaluate_verdicts.py"


rule verdict_summary:
    input:
        evaluations=expand(
            "results/{dataset}/{scenario}/verdicts/evaluation.json",
            dataset=DATASET,
            scenario=SCENARIOS,
        ),
    output:
        summary=report(
            "results/verdicts.csv",
            caption="../workflow/report/verdict_summary.rst",
            category="Verdicts",
        ),
    params:
        code=code("verdicts"),
    log:
        "results/logs/verdict_summary.log",
    benchmark:
        "results/benchmarks/verdict_summary.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/verdict_summary.py"


rule clean_list:
    input:
        samples="results/{dataset}/{scenario}/verdicts/samples.npz",
        dataset="results/{dataset}/{scenario}/poisoned.h5",
    output:
        clean_list="results/{dataset}/{scenario}/verdicts/clean_list.txt",
        filtered="results/{dataset}/{scenario}/verdicts/filtered.h5",
    params:
        code=code("verdicts"),
    log:
        "results/logs/clean_list/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/clean_list/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/clean_list.py"
