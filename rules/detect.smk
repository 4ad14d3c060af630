# Detection: one result clusters/<method>.npz per method of clustering.methods. What a
# method reads and which config sections it takes come from its entry in
# poisonscan.detectors.DETECTORS.


rule detect:
    input:
        unpack(detector_inputs),
    output:
        detection="results/{dataset}/{scenario}/clusters/{method}.npz",
    params:
        group=target_group,
        sections=detector_sections,
        code=detector_code,
    resources:
        **performance_resources(config, "distances.gw"),  # gw_kmeans' solver
    log:
        "results/logs/detect/{dataset}/{scenario}/{method}.log",
    benchmark:
        "results/benchmarks/detect/{dataset}/{scenario}/{method}.tsv"
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow/scripts/detect.py"
