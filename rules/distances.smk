rule distances_l2:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
        sidecar=sidecar,
    output:
        store=directory("results/{dataset}/{scenario}/distances/l2.zarr"),
    params:
        group=target_group,
        code=code("distances"),
    log:
        "results/logs/distances_l2/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/distances_l2/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/distances_l2.py"


rule distances_gw:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
        sidecar=sidecar,
    output:
        store=directory("results/{dataset}/{scenario}/distances/gw.zarr"),
    params:
        group=target_group,
        gw=cfg("distances.gw"),
        code=code("distances"),
    resources:
        # performance knobs (tile, batch_mb, knn.pairs_per_task) and the Dask cluster (read
        # from the config by the script) are not params: changing them reruns nothing
        **performance_resources(config, "distances.gw"),
    log:
        log="results/logs/distances_gw/{dataset}/{scenario}.log",
        dask_report="results/logs/distances_gw/{dataset}/{scenario}.dask-report.html",
    benchmark:
        "results/benchmarks/distances_gw/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/distances_gw.py"


rule distances_gw_classes:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
        sidecar=sidecar,
    output:
        store=directory("results/{dataset}/{scenario}/distances/gw_classes.zarr"),
    params:
        gw=cfg("distances.gw"),
        code=code("distances"),
    resources:
        **performance_resources(config, "distances.gw"),
    log:
        log="results/logs/distances_gw_classes/{dataset}/{scenario}.log",
        dask_report="results/logs/distances_gw_classes/{dataset}/{scenario}.dask-report.html",
    benchmark:
        "results/benchmarks/distances_gw_classes/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/distances_gw.py"
