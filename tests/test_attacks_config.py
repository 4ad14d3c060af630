"""Config validation of the scenario keys of every attack (schema + attack checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from poisonscan.attacks import attack_from_config
from poisonscan.config import ConfigError, load_schema, validate_config

SCHEMA = load_schema(REPO / "config" / "schema.yaml")

SCENARIOS: dict[str, dict[str, Any]] = {
    "control": {"attack": "clean", "target": 5},
    "sticker": {"attack": "sticker", "source": 2, "target": 5, "poison_rate": 0.15},
    "fixed": {"attack": "sticker", "source": 2, "target": 5, "poison_rate": 0.15,
              "sticker_size": 5, "placement": "fixed", "position": [27, 27]},
    "hans": {"attack": "clever_hans", "target": 8, "poison_rate": 0.2, "placement": "uniform"},
    "blend": {"attack": "blended", "source": 1, "target": 3, "poison_rate": 0.1},
    "lc": {"attack": "label_consistent", "target": 5, "poison_rate": 0.33},
    "lc_inf": {"attack": "label_consistent", "target": 5, "poison_rate": 0.33, "norm": "linf",
               "eps": 8, "trigger": "sticker", "placement": "window"},
}  # fmt: skip


def config(**scenarios: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": {"name": "synthetic", "n_train_per_class": 40}, "scenarios": scenarios}


def test_every_attack_validates_and_gets_its_defaults() -> None:
    cfg = validate_config(config(**SCENARIOS), SCHEMA)
    sc = cfg["scenarios"]
    assert sc["control"] == {"attack": "clean", "target": 5}  # no sticker keys filled in
    assert sc["sticker"]["placement"] == "window" and sc["sticker"]["position"] is None
    assert sc["sticker"]["window"] == [16, 16, 22, 20] and sc["sticker"]["seed"] == 0
    assert sc["hans"]["sticker_size"] == 3 and "source" not in sc["hans"]
    assert sc["blend"]["alpha"] == 0.2 and sc["blend"]["pattern"] == "noise"
    assert "sticker_size" not in sc["blend"]
    lc = sc["lc"]
    assert (lc["norm"], lc["eps"], lc["step_size"], lc["steps"]) == ("l2", None, None, 10)
    assert (lc["trigger"], lc["amplitude"], lc["distance"], lc["corners"]) == (
        "checkerboard", 255, 10, "bottom_right",
    )  # fmt: skip
    for spec in sc.values():  # every validated scenario builds its attack
        assert attack_from_config(spec).target == spec["target"]


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("control", {"poison_rate": 0.1},
         r"scenarios.control': Additional properties .*'poison_rate'.*known keys: attack, target"),
        ("control", {"attack": "poison"},
         r"scenarios.control.attack': 'poison' is not allowed; allowed values: 'adaptive_blend'"),
        ("control", {"target": 12}, r"scenarios.control.target': class 12 does not exist"),
        ("sticker", {"placement": "random"},
         r"sticker.placement': 'random' is not allowed; allowed values: 'window', 'fixed'"),
        ("sticker", {"placement": "fixed"}, r"scenarios.sticker.position': is required"),
        ("sticker", {"placement": "fixed", "position": [30, 0]},
         r"sticker.position': \[30, 0\]: the 3x3 sticker would leave the 32x32 image"),
        ("sticker", {"position": [1]}, r"sticker.position': \[1\] is too short"),
        ("sticker", {"sticker_size": 0}, r"sticker.sticker_size': 0 is less than the minimum of 1"),
        ("sticker", {"amplitude": 10}, r"'amplitude' was unexpected"),
        ("sticker", {"poison_rate": 0.8}, r"sticker.poison_rate': needs 160 source-class"),
        ("sticker", {"poison_rate": 0.001}, r"sticker.poison_rate': gives 0 poisoned images"),
        ("hans", {"source": 1}, r"'source' was unexpected"),
        ("hans", {"poison_rate": 1.0}, r"hans.poison_rate': 1.0 is greater than or equal to"),
        ("hans", {"poison_rate": 0.01}, r"hans.poison_rate': gives 0 poisoned images"),
        ("blend", {"alpha": 0}, r"blend.alpha': 0 is less than or equal to the minimum of 0"),
        ("blend", {"alpha": 1.2}, r"blend.alpha': 1.2 is greater than the maximum of 1"),
        ("blend", {"pattern": "kitty"}, r"blend.pattern': 'kitty' is not allowed"),
        ("blend", {"target": 1}, r"scenarios.blend': source and target are both class 1"),
        ("lc", {"eps": 0}, r"lc.eps': 0 is less than or equal to the minimum of 0"),
        ("lc", {"step_size": -1}, r"lc.step_size': -1 is less than or equal to the minimum of 0"),
        ("lc", {"steps": 0}, r"lc.steps': 0 is less than the minimum of 1"),
        ("lc", {"norm": "l1"}, r"lc.norm': 'l1' is not allowed; allowed values: 'l2', 'linf'"),
        ("lc", {"amplitude": 300}, r"lc.amplitude': 300 is greater than the maximum of 255"),
        ("lc", {"trigger": "star"}, r"lc.trigger': 'star' is not allowed"),
        ("lc", {"corners": "top"}, r"lc.corners': 'top' is not allowed"),
        ("lc", {"distance": 30}, r"lc.distance': a 3x3 trigger at distance 30 .* outside"),
        ("lc", {"distance": 14, "corners": "all"}, r"lc.distance': the four 3x3 corner .* overlap"),
        ("lc", {"sticker_size": 40}, r"lc.sticker_size': 40 is larger than the 32x32 image"),
        ("lc", {"source": 2}, r"'source' was unexpected"),
        ("lc", {"target": 43}, r"lc.target': class 43 does not exist in dataset 'synthetic'"),
        ("lc", {"poison_rate": 0.01}, r"lc.poison_rate': gives 0 poisoned images"),
    ],
)  # fmt: skip
def test_bad_scenario_values_name_the_key(name: str, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(config(**{name: {**SCENARIOS[name], **change}}), SCHEMA)


def test_missing_keys_and_reserved_name() -> None:
    with pytest.raises(ConfigError, match=r"scenarios.x': 'target' is a required property"):
        validate_config(config(x={"attack": "clean"}), SCHEMA)
    with pytest.raises(ConfigError, match=r"scenarios.x': 'poison_rate' is a required property"):
        validate_config(config(x={"attack": "label_consistent", "target": 1}), SCHEMA)
    with pytest.raises(ConfigError, match=r"scenarios.x': 'source' is a required property"):
        validate_config(config(x={"attack": "blended", "target": 1, "poison_rate": 0.1}), SCHEMA)
    with pytest.raises(
        ConfigError, match=r"scenarios.proxy': the scenario name 'proxy' is reserved"
    ):
        validate_config(config(proxy=SCENARIOS["control"]), SCHEMA)


def test_class_sizes_are_checked_only_when_known(tmp_path: Any) -> None:
    # real GTSRB: class sizes are read in the poison step, so a tiny rate passes here
    (tmp_path / "gtsrb.npz").write_bytes(b"")
    lc = {**SCENARIOS["lc"], "poison_rate": 0.001, "target": 42}
    cfg = {
        "dataset": {"name": "gtsrb", "path": str(tmp_path / "gtsrb.npz")},
        "scenarios": {"lc": lc},
    }
    assert validate_config(cfg, SCHEMA)["scenarios"]["lc"]["target"] == 42


def test_poison_counts_are_checked_where_the_class_sizes_are_known(tmp_path: Path) -> None:
    """With the labels readable before any work (a CIFAR-10 npz here), an attack that needs
    more images than a class holds stops at validation, naming the key."""
    import numpy as np

    names = np.array([f"class {c}" for c in range(10)])
    np.savez(tmp_path / "c.npz", y_train=np.repeat(np.arange(10), 300), names=names)
    cfg = {"dataset": {"name": "cifar10", "path": str(tmp_path / "c.npz")},
           "scenarios": {"x": {"attack": "tact", "source": 1, "target": 0, "poison_rate": 0.6,
                               "cover_classes": [5]}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"scenarios.x.poison_rate': needs 450 source-class"):
        validate_config(cfg, SCHEMA)
