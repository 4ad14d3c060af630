# poisonscan: detect backdoor-poisoned training images by Heatmap Clustering.
# Run: snakemake --cores 2   (profiles/default is picked up automatically)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/explain.smk"
include: "rules/distances.smk"
include: "rules/detect.smk"
include: "rules/evaluate.smk"
include: "rules/scan.smk"
include: "rules/removal.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        "results/summary.csv",
        "results/tables.md",
        final_outputs,


onsuccess:
    print_summary("results/summary.csv")
