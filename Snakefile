# poisonscan: detect backdoor-poisoned training images by Heatmap Clustering.
# Run: snakemake --cores 2   (profiles/default is picked up automatically)
from pathlib import Path

from snakemake.utils import min_version

from poisonscan.config import check_yaml

min_version("9.0")


# A YAML error in the default config names its file and line (poisonscan.config.check_yaml);
# Snakemake itself reports one in a --configfile without them (run with --verbose to see).
if Path("config/config.yaml").is_file():
    check_yaml("config/config.yaml")


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
include: "rules/verdicts.smk"
include: "rules/report.smk"


# On a cluster these run beside snakemake instead of as batch jobs: seconds of work on tables
# and plots, where a job would spend its time queueing and parsing the workflow (twice).
localrules:
    evaluate,
    figures,
    summary,
    aggregate,
    overview,
    evaluate_verdicts,
    verdict_summary,
    clean_list,


rule all:
    default_target: True
    input:
        targets,


onsuccess:
    if AUDIT:
        print_audit(f"results/{DATASET}/audit/verdicts/verdicts.csv")
    else:
        print_summary("results/summary.csv")
        print_verdicts("results/verdicts.csv")
