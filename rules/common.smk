import csv
import json
import re
from collections.abc import Mapping
from pathlib import Path

from poisonscan.attacks import ATTACKS
from poisonscan.codehash import code_hash
from poisonscan.config import check_devices, load_schema, section, validate_config
from poisonscan.datasets import DATASETS
from poisonscan.datasets.content import content_fingerprint
from poisonscan.detectors import DETECTORS
from poisonscan.evaluate import format_table
from poisonscan.verdicts.baselines import VERDICT_BASELINES
from poisonscan.experiments import expand_matrix
from poisonscan.parameters import performance_resources, without_performance

# Validate once, fill schema defaults in place; errors name the bad key.
_validated = validate_config(
    config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml")
)
config.clear()
config.update(_validated)


def cfg(path):
    """The one way rules read the config: the value at the dotted ``path`` of the validated
    config (schema defaults filled); a section comes without its performance knobs (they
    reach the rules as resources), keys sorted, so that it can be a rule's params."""
    value = section(config, path)
    return without_performance(value, path) if isinstance(value, Mapping) else value


# A CUDA device must exist where it is used: on this machine, unless the profile gives the
# job a GPU (set-resources: gpu / gres).
check_devices(
    config,
    [
        name
        for name, res in (workflow.resource_settings.overwrite_resources or {}).items()
        if {"gpu", "gres"} & set(res)
    ],
)

DATASET = cfg("dataset.name")
# A user's dataset (folder, npz) is named by its path only: the digest of its files is a
# parameter of make_dataset, so that any edit of them reruns the audit (and nothing else
# does). The built-in datasets have none (their runs keep their recorded parameters).
DATASET_CONTENT = (
    {"content": content_fingerprint(cfg("dataset"))}
    if DATASETS[DATASET].user_data
    else {}
)
# An audit of a user's dataset: one scenario ("audit") without attack or ground truth.
AUDIT = cfg("audit")
SCENARIOS = sorted(cfg("scenarios"))
# An audit gates its verdicts on the model's test accuracy (poisonscan.verdicts.gate); the
# experiments, scored against their ground truth, do not.
AUDIT_METRICS = {"metrics": "results/{dataset}/{scenario}/metrics.json"} if AUDIT else {}
# An audit also judges the held-out test images (poisonscan.verdicts.heldout): every file.
AUDIT_QUALITY = {"quality": cfg("model_quality"), "judge_test": True} if AUDIT else {}
AUDIT_CONFLICTS = (
    {"conflicts": "results/{dataset}/{scenario}/verdicts/label_conflicts.csv"} if AUDIT else {}
)
# Where each scenario of the experiment matrix sits in it (for the aggregated tables).
MATRIX = {sc.name: sc for sc in expand_matrix(cfg("matrix"))}
DISTANCES = cfg("distances.methods")
# Detection methods (clusters/<method>.npz each; poisonscan.detectors.DETECTORS).
METHODS = cfg("clustering.methods")
REMOVAL_METHODS = cfg("removal.methods")
# The whole-dataset scan also ranks the classes by GW (the GW kNN graphs of every class).
SCAN_GW = cfg("scan.gw")
# The verdicts compare every class with the others: they run when every class is explained.
VERDICTS = cfg("explain.classes") == "all"
# The clean model the label-consistent attack runs PGD against (made by train_proxy), trained
# once per dataset, shared by every scenario that needs it ("proxy" is a reserved name).
PROXY = "results/{dataset}/proxy/model.safetensors"
PROXY_SCENARIOS = {
    name for name, sc in cfg("scenarios").items() if ATTACKS[sc["attack"]].needs_proxy
}


wildcard_constraints:
    dataset=re.escape(DATASET),
    scenario="|".join(re.escape(s) for s in SCENARIOS),
    distance="|".join(DISTANCES),
    method="|".join(re.escape(m) for m in METHODS),


def code(step):
    """Hash of the code that rules/<step>.smk runs (poisonscan.steps.<step>, its imports)."""
    return code_hash(f"poisonscan.steps.{step}")


def scenario_dir(wildcards):
    return f"results/{wildcards.dataset}/{wildcards.scenario}"


def scenario_params(wildcards):
    return cfg(f"scenarios.{wildcards.scenario}")


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
    outs += ["verdicts/evaluation.json", "verdicts/clean_list.txt"] if VERDICTS else []
    outs += [f"figures/{m}_{fig}.png" for m in METHODS for fig in ("analysis", "clusters")]
    return expand(
        "results/{dataset}/{scenario}/{out}", dataset=DATASET, scenario=SCENARIOS, out=outs
    )


def scenario_context(wildcards):
    """Descriptive columns of the summary rows of one scenario."""
    name = wildcards.scenario
    sc = cfg(f"scenarios.{name}")
    return {
        "dataset": wildcards.dataset,
        "scenario": wildcards.scenario,
        "attack": sc["attack"],
        "poison_rate": sc.get("poison_rate", 0.0),  # the clean control has none
        "sticker_size": sc.get("sticker_size", ""),  # blended and clean have no sticker
        "model": cfg("model.name"),
        "matrix_block": MATRIX[name].block if name in MATRIX else "",
        "grid_point": MATRIX[name].point_label if name in MATRIX else "",
        "repetition": MATRIX[name].repetition if name in MATRIX else "",
    }


def sidecar(wildcards):
    """The sidecar of the scenario's checkpoint: readers of the explanation store compare its
    weights_sha256 with the store's model_sha256."""
    return f"results/{wildcards.dataset}/{wildcards.scenario}/model.safetensors.json"


def attacked_class(wildcards):
    """The class the scenario's attack poisons; None for the clean control."""
    sc = cfg(f"scenarios.{wildcards.scenario}")
    return None if sc["attack"] == "clean" else sc["target"]


def target_group(wildcards):
    """Zarr group of the scenario's analysed (target) class in its explanation store."""
    target = cfg(f"scenarios.{wildcards.scenario}.target")
    return f"results/{wildcards.dataset}/{wildcards.scenario}/explain.zarr/{target}"


def detector_inputs(wildcards):
    """The files detector <method> reads: the explanations, and its distance store or the
    training set where its registry entry says so."""
    detector = DETECTORS[wildcards.method]
    base = scenario_dir(wildcards)
    inputs = {"explanations": f"{base}/explain.zarr", "sidecar": sidecar(wildcards)}
    if detector.distance:
        inputs["distances"] = f"{base}/distances/{detector.distance}.zarr"
    if detector.images:
        inputs["dataset"] = f"{base}/poisoned.h5"
    return inputs


def detector_sections(wildcards):
    """The config sections detector <method> takes, by keyword argument, without their
    performance knobs (passed as resources)."""
    return {
        arg: cfg(path)
        for arg, path in DETECTORS[wildcards.method].sections.items()
    }


def verdict_baseline_sections():
    """Baseline name -> its config section, for every entry of VERDICT_BASELINES."""
    return {name: cfg(b.section) for name, b in VERDICT_BASELINES.items()}


def detector_code(wildcards):
    return code_hash("poisonscan.steps.detect", DETECTORS[wildcards.method].module)


def verdict_outputs(wildcards=None):
    return ["results/verdicts.csv"] if VERDICTS else []


def verdict_pages():
    """(name, base folder) of every verdict shown on the overview page."""
    if AUDIT:
        return [("audit", f"results/{DATASET}/audit/verdicts")]
    if not VERDICTS:
        return []
    return [(sc, f"results/{DATASET}/{sc}/verdicts") for sc in SCENARIOS]


def overview_inputs(wildcards=None):
    """The files the overview page shows."""
    pages = verdict_pages()
    inputs = {"tables": [f"{base}/verdicts.csv" for _, base in pages],
              "figures": [f"{base}/verdicts.png" for _, base in pages]}  # fmt: skip
    if AUDIT:
        inputs["suspicious"] = f"{pages[0][1]}/suspicious.csv"
        inputs["details"] = f"{pages[0][1]}/verdicts.json"  # the model-quality gate
    else:
        inputs["summary"] = "results/summary.csv"
        if VERDICTS:
            inputs["verdict_summary"] = "results/verdicts.csv"
    return inputs


def targets(wildcards=None):
    """What `all` builds: an audit's verdicts, suspicious images and clean list; or every
    scenario's evaluation, figures, scan and verdicts with the summaries."""
    if AUDIT:
        base = f"results/{DATASET}/audit/verdicts"
        return [f"{base}/{name}" for name in ("verdicts.csv", "suspicious.csv", "verdicts.png",
                "clean_list.txt", "filtered.h5", "baselines.npz")] + ["results/overview"]  # fmt: skip
    return ["results/summary.csv", "results/tables.md", "results/overview", *verdict_outputs(),
            *final_outputs()]  # fmt: skip


def print_verdicts(path):
    """The verdicts of every scenario and method, as a table, at the end of the run."""
    if Path(path).is_file():
        with open(path) as f:
            rows = list(csv.DictReader(f))
        cols = ["scenario", "method", "classes_flagged", "target_flagged",
                "n_clean_classes_flagged", "set_fp", "tp", "fn", "tpr", "tnr"]
        print(f"\nVerdicts ({path}):\n{format_table(rows, cols)}\n")


def print_audit(path):
    """An audit's verdict per class, at the end of the run."""
    if Path(path).is_file():
        with open(path) as f:
            rows = list(csv.DictReader(f))
        poisoned = [r for r in rows if r["verdict"] == "poisoned"]
        cols = ["class", "name", "verdict", "n", "z", "q", "n_flagged", "trigger", "flip_rate"]
        head = (f"{len(poisoned)} of {len(rows)} classes poisoned" if poisoned else
                f"no class of {len(rows)} is poisoned")  # fmt: skip
        if not poisoned and any(r["verdict"] == "inconclusive" for r in rows):
            head = f"inconclusive: no class of {len(rows)} can be called clean"
        shown = poisoned or sorted(rows, key=lambda r: -float(r["z"] or 0))[:5]
        details = Path(path).with_name("verdicts.json")
        quality = json.loads(details.read_text()).get("model_quality") if details.is_file() else None
        note = f"{quality['summary']}.\n" if quality else ""
        conflicts = json.loads(details.read_text()).get("label_conflicts") if quality else None
        if conflicts:
            note += (f"{conflicts} pairs of (near-)identical images under different labels "
                     f"(a label-flip signal): {Path(path).with_name('label_conflicts.csv')}\n")
        print(f"\nAudit: {head} ({path}):\n{format_table(shown, cols)}\n{note}")


def print_summary(path):
    if Path(path).is_file():
        with open(path) as f:
            rows = list(csv.DictReader(f))
        cols = ["scenario", "method", "k_chosen", "n", "n_poison", "tn", "fp", "fn", "tp",
                "acc", "tpr", "tnr", "f1", "auroc", "clean_acc", "asr"]
        print(f"\nDetection summary ({path}):\n{format_table(rows, cols)}\n")
