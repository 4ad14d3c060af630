# Detection methods: one clusters/<method>.npz per method of clustering.methods.
#   hc_<d>, agglo_<d>, hdbscan_<d>   rule cluster_distances (SpRAy / agglomerative / HDBSCAN on <d>)
#   gw_kmeans                        rule cluster_gw_kmeans
#   ac, ss, raw                      rules cluster_activations, spectral_signatures, cluster_raw

CLUSTERER_OF = {"hc": "spectral", "agglo": "agglomerative", "hdbscan": "hdbscan"}
SPRAY_KEYS = ("affinity", "n_neighbors", "bandwidth", "n_clusters", "k_max", "n_eigenvalues",
              "dense_max", "n_init", "single_group_no_flag", "seed")  # fmt: skip
DECISION_KEYS = ("decision_rule", "size_threshold", "silhouette_threshold")
CLUSTERING_CODE = ("clustering", "baselines", "explain.store", "explain.params", "steps.cluster",
                   "steps.common", "storage")  # fmt: skip


SPRAY = {k: config["clustering"][k] for k in SPRAY_KEYS}
DECISION = {k: config["clustering"][k] for k in DECISION_KEYS}


rule cluster_distances:
    input:
        store="results/{dataset}/{scenario}/distances/{distance}.zarr",
    output:
        clusters="results/{dataset}/{scenario}/clusters/{clusterer}_{distance}.npz",
    wildcard_constraints:
        clusterer="|".join(CLUSTERER_OF),
    params:
        clusterer=lambda w: CLUSTERER_OF[w.clusterer],
        clustering=lambda w: (
            SPRAY if w.clusterer == "hc" else config["clustering"][CLUSTERER_OF[w.clusterer]]
        ),
        decision=DECISION,
        code=code_version(*CLUSTERING_CODE, "distances"),
    log:
        "results/logs/cluster_distances/{dataset}/{scenario}/{clusterer}_{distance}.log",
    benchmark:
        "results/benchmarks/cluster_distances/{dataset}/{scenario}/{clusterer}_{distance}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/cluster_distances.py"


rule cluster_gw_kmeans:
    input:
        store="results/{dataset}/{scenario}/distances/gw.zarr",
        explanations="results/{dataset}/{scenario}/explain.zarr",
    output:
        clusters="results/{dataset}/{scenario}/clusters/gw_kmeans.npz",
    params:
        group=target_group,
        gw_kmeans=config["clustering"]["gw_kmeans"],
        gw=config["distances"]["gw"],
        decision=DECISION,
        code=code_version(*CLUSTERING_CODE, "distances"),
    log:
        "results/logs/cluster_gw_kmeans/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/cluster_gw_kmeans/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/cluster_gw_kmeans.py"


rule cluster_activations:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
    output:
        clusters="results/{dataset}/{scenario}/clusters/ac.npz",
    params:
        group=target_group,
        clustering=config["activation_clustering"],
        code=code_version(*CLUSTERING_CODE),
    log:
        "results/logs/cluster_activations/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/cluster_activations/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/cluster_activations.py"


rule spectral_signatures:
    input:
        store="results/{dataset}/{scenario}/explain.zarr",
    output:
        clusters="results/{dataset}/{scenario}/clusters/ss.npz",
    params:
        group=target_group,
        ss=config["baselines"]["ss"],
        code=code_version(*CLUSTERING_CODE),
    log:
        "results/logs/spectral_signatures/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/spectral_signatures/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/spectral_signatures.py"


rule cluster_raw:
    input:
        dataset="results/{dataset}/{scenario}/poisoned.h5",
        store="results/{dataset}/{scenario}/explain.zarr",
    output:
        clusters="results/{dataset}/{scenario}/clusters/raw.npz",
    params:
        group=target_group,
        raw=config["baselines"]["raw"],
        decision=DECISION,
        code=code_version(*CLUSTERING_CODE),
    log:
        "results/logs/cluster_raw/{dataset}/{scenario}.log",
    benchmark:
        "results/benchmarks/cluster_raw/{dataset}/{scenario}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/cluster_raw.py"
