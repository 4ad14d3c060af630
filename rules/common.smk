import csv
import re
from pathlib import Path

from poisonscan.attacks import ATTACKS
from poisonscan.codehash import code_hash
from poisonscan.config import load_schema, section, validate_config
from poisonscan.detectors import DETECTORS
from poisonscan.evaluate import format_table
from poisonscan.experiments import expand_matrix

# Validate once, fill schema defaults in place; errors name the bad key.
_validated = validate_config(
    config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml")
)
config.clear()
config.update(_validated)

DATASET = config["dataset"]["name"]
SCENARIOS = sorted(config["scenarios"])
# Where each scenario of the experiment matrix sits in it (for the aggregated tables).
MATRIX = {sc.name: sc for sc in expand_matrix(config["matrix"])}
DISTANCES = config["distances"]["methods"]
# Detection methods (clusters/<method>.npz each; poisonscan.detectors.DETECTORS).
METHODS = config["clustering"]["methods"]
REMOVAL_METHODS = config["removal"]["methods"]
# The clean model the label-consistent attack runs PGD against (rule train_proxy): trained
# once per dataset, shared by every scenario that needs it ("proxy" is a reserved name).
PROXY = "results/{dataset}/proxy/model.safetensors"
PROXY_SCENARIOS = {
    name for name, sc in config["scenarios"].items() if ATTACKS[sc["attack"]].needs_proxy
}


wildcard_constraints:
    dataset=re.escape(DATASET),
    scenario="|".join(re.escape(s) for s in SCENARIOS),
    distance="|".join(DISTANCES),
    method="|".join(re.escape(m) for m in METHODS),


def code(step):
    """Hash of the code rule file <step>.smk runs: poisonscan.steps.<step> and its imports."""
    return code_hash(f"poisonscan.steps.{step}")


def scenario_dir(wildcards):
    return f"results/{wildcards.dataset}/{wildcards.scenario}"


def scenario_params(wildcards):
    return config["scenarios"][wildcards.scenario]


def evaluation_files(wildcards=None):
    return expand(
        "results/{dataset}/{scenario}/evaluation.json",
        dataset=DATASET,
        scenario=SCENARIOS,
    )


def final_outputs(wildcards=None):
    """Per scenario: the whole-dataset scan, the figures of every method, and the removal
    table when removal.methods is set."""
    outs = ["scan.csv"] + (["removal.csv"] if REMOVAL_METHODS else [])
    outs += [f"figures/{m}_{fig}.png" for m in METHODS for fig in ("analysis", "clusters")]
    return expand(
        "results/{dataset}/{scenario}/{out}", dataset=DATASET, scenario=SCENARIOS, out=outs
    )


def scenario_context(wildcards):
    """Descriptive columns of the summary rows of one scenario."""
    name = wildcards.scenario
    sc = config["scenarios"][name]
    return {
        "dataset": wildcards.dataset,
        "scenario": wildcards.scenario,
        "attack": sc["attack"],
        "poison_rate": sc.get("poison_rate", 0.0),  # the clean control has none
        "sticker_size": sc.get("sticker_size", ""),  # blended and clean have no sticker
        "model": config["model"]["name"],
        "matrix_block": MATRIX[name].block if name in MATRIX else "",
        "grid_point": MATRIX[name].point_label if name in MATRIX else "",
        "repetition": MATRIX[name].repetition if name in MATRIX else "",
    }


def target_group(wildcards):
    """Zarr group of the scenario's analysed (target) class in its explanation store."""
    target = config["scenarios"][wildcards.scenario]["target"]
    return f"results/{wildcards.dataset}/{wildcards.scenario}/explain.zarr/{target}"


def detector_inputs(wildcards):
    """The files detector <method> reads: the explanations, and its distance store or the
    training set where its registry entry says so."""
    detector = DETECTORS[wildcards.method]
    base = scenario_dir(wildcards)
    inputs = {"explanations": f"{base}/explain.zarr"}
    if detector.distance:
        inputs["distances"] = f"{base}/distances/{detector.distance}.zarr"
    if detector.images:
        inputs["dataset"] = f"{base}/poisoned.h5"
    return inputs


def detector_sections(wildcards):
    """The config sections detector <method> takes, by keyword argument."""
    return {arg: section(config, path) for arg, path in DETECTORS[wildcards.method].sections.items()}


def detector_code(wildcards):
    return code_hash("poisonscan.steps.detect", DETECTORS[wildcards.method].module)


def print_summary(path):
    if Path(path).is_file():
        with open(path) as f:
            rows = list(csv.DictReader(f))
        cols = ["scenario", "method", "k_chosen", "n", "n_poison", "tn", "fp", "fn", "tp",
                "acc", "tpr", "tnr", "f1", "auroc", "clean_acc", "asr"]
        print(f"\nDetection summary ({path}):\n{format_table(rows, cols)}\n")
