rule cluster_distances:
    input:
        store="results/{dataset}/{scenario}/distances/{distance}.zarr",
    output:
        clusters="results/{dataset}/{scenario}/clusters/hc_{distance}.npz",
    params:
        clustering=config["clustering"],
        code=code_version("clustering", "distances", "steps.cluster", "steps.common"),
    log:
        "results/logs/cluster_distances/{dataset}/{scenario}/{distance}.log",
    benchmark:
        "results/benchmarks/cluster_distances/{dataset}/{scenario}/{distance}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/cluster_distances.py"


rule cluster_activations:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
    output:
        clusters="results/{dataset}/{scenario}/clusters/ac.npz",
    params:
        clustering=config["activation_clustering"],
        code=code_version("clustering", "steps.cluster", "steps.common"),
    log:
        "results/logs/cluster_activations/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/cluster_activations/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/cluster_activations.py"
