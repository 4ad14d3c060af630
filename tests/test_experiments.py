from __future__ import annotations

import math

import pytest

from poisonscan.experiments import aggregate, expand_matrix, markdown_tables, scenario_name


def test_grid_and_repetitions_cross_in_order_with_seeds() -> None:
    spec = {
        "standard": {
            "attack": "sticker", "source": 2, "target": 5, "seed": 10,
            "grid": {"poison_rate": [0.33, 0.05], "sticker_size": [1, 3]},
            "repetitions": 2,
        },
        "clean": {"attack": "clean"},
    }  # fmt: skip
    out = expand_matrix(spec)
    assert [s.name for s in out] == [
        "standard_p33_s1_r0", "standard_p33_s1_r1", "standard_p33_s3_r0", "standard_p33_s3_r1",
        "standard_p5_s1_r0", "standard_p5_s1_r1", "standard_p5_s3_r0", "standard_p5_s3_r1",
        "clean",
    ]  # fmt: skip
    first, second = out[0], out[1]
    assert first.config == {
        "attack": "sticker", "source": 2, "target": 5, "seed": 10,
        "poison_rate": 0.33, "sticker_size": 1,
    }  # fmt: skip
    assert second.config["seed"] == 11 and second.repetition == 1
    assert first.point_label == "poison_rate=0.33 sticker_size=1"
    assert out[-1].config == {"attack": "clean"} and out[-1].point == {}


def test_names_of_fractional_rates_and_other_keys() -> None:
    assert scenario_name("lc", {"poison_rate": 0.025, "amplitude": 64}, None) == "lc_p2_5_a64"
    assert scenario_name("b", {"trigger": "four_corners"}, 3) == "b_triggerfourcorners_r3"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"bad name": {"attack": "clean"}}, "block name 'bad name'"),
        ({"x": {"attack": "sticker", "grid": {"poison_rate": []}}}, "grid.poison_rate"),
        ({"x": {"attack": "sticker", "grid": {"poison_rate": 0.1}}}, "grid.poison_rate"),
        ({"x": {"poison_rate": 0.1, "grid": {"poison_rate": [0.2]}}}, "both fixed and in"),
        ({"x": {"attack": "clean", "repetitions": 0}}, "repetitions must be"),
        ({"x": {"attack": "clean", "repetitions": True}}, "repetitions must be"),
        ({"x": {"grid": {"poison_rate": [0.1, 0.1]}}}, "occurs twice"),
    ],
)
def test_bad_specs_name_the_key(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand_matrix(spec)


def test_aggregate_mean_and_population_std_skip_missing_values() -> None:
    rows = [
        {"matrix_block": "s", "grid_point": "p=0.1", "method": "hc", "tpr": "1.0", "acc": 0.5},
        {"matrix_block": "s", "grid_point": "p=0.1", "method": "hc", "tpr": "0.5", "acc": ""},
        {"matrix_block": "s", "grid_point": "p=0.1", "method": "ac", "tpr": "0.0", "acc": 1},
    ]
    out = {r["method"]: r for r in aggregate(rows, value_keys=("tpr", "acc"))}
    assert out["hc"]["n"] == 2
    assert out["hc"]["tpr_mean"] == 0.75 and out["hc"]["tpr_std"] == 0.25
    assert out["hc"]["acc_mean"] == 0.5 and out["hc"]["acc_std"] == 0.0
    assert out["ac"]["tpr_mean"] == 0.0
    missing = aggregate([{"method": "x"}], group_keys=("method",), value_keys=("auroc",))
    assert math.isnan(missing[0]["auroc_mean"])


def test_markdown_tables_one_per_block_with_mean_and_sd_in_percent() -> None:
    rows = [
        {"matrix_block": "std", "grid_point": "poison_rate=0.1", "method": m, "tpr": t,
         "acc": "1", "asr": "0.99", "clean_acc": "0.97"}
        for m, t in (("hc_l2", "1.0"), ("hc_l2", "0.5"), ("ac", "0.2"), ("ac", "0.2"))
    ]  # fmt: skip
    rows.append({"matrix_block": "clean", "grid_point": "", "method": "hc_l2", "acc": "0.9"})
    text = markdown_tables(aggregate(rows), ["hc_gw", "hc_l2", "ac"], metrics=("acc", "tpr"))
    std, clean = text.split("### ")[1:]
    assert std.splitlines()[2] == (
        "| grid point | n | ASR | clean acc | hc_l2 ACC | hc_l2 TPR | ac ACC | ac TPR |"
    )
    assert std.splitlines()[4] == (
        "| poison_rate=0.1 | 2 | 99.00 ± 0.00 | 97.00 ± 0.00 | 100.00 ± 0.00 | 75.00 ± 25.00 "
        "| 100.00 ± 0.00 | 20.00 ± 0.00 |"
    )
    assert "| – | 1 | – | – | 90.00 | – |" in clean


def test_markdown_rows_list_grid_points_like_the_reference_tables() -> None:
    rows = [
        {"matrix_block": "std", "grid_point": f"sticker_size={s} poison_rate={p}", "method": "ac",
         "acc": "1"}
        for s, p in ((3, 0.1), (3, 0.02), (3, 0.33), (1, 0.33), (3, 0.15))
    ]  # fmt: skip
    text = markdown_tables(aggregate(rows), ["ac"], metrics=("acc",))
    points = [line.split(" | ")[0][2:] for line in text.splitlines()[4:]]
    assert points == [
        "sticker_size=3 poison_rate=0.33", "sticker_size=3 poison_rate=0.15",
        "sticker_size=3 poison_rate=0.1", "sticker_size=3 poison_rate=0.02",
        "sticker_size=1 poison_rate=0.33",
    ]  # fmt: skip


def test_the_reference_matrix_expands_to_exactly_the_expected_scenarios() -> None:
    import yaml
    from conftest import REPO

    matrix = yaml.safe_load((REPO / "config" / "gtsrb-matrix.yaml").read_text())["matrix"]
    names = [sc.name for sc in expand_matrix(matrix)]
    rates = ("33", "15", "10", "5", "2")
    expected = [
        f"standard_s{s}_p{p}_r{r}" for s in (3, 2, 1) for p in rates for r in range(5)
    ] + [f"lc_sticker_p{p}" for p in rates] + [
        f"lc_checkerboard_a{a}" for a in (128, 64, 32)
    ] + ["clean"]  # fmt: skip
    assert names == expected and len(names) == 3 * 5 * 5 + 5 + 3 + 1


def test_every_matrix_scenario_passes_config_validation() -> None:
    import yaml
    from conftest import REPO

    from poisonscan.config import load_schema, validate_config

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["matrix"] = yaml.safe_load((REPO / "config" / "gtsrb-matrix.yaml").read_text())["matrix"]
    cfg = validate_config(config, load_schema(REPO / "config" / "schema.yaml"))
    assert len(cfg["scenarios"]) == 1 + 84
    assert cfg["scenarios"]["lc_checkerboard_a32"]["amplitude"] == 32
    assert cfg["scenarios"]["standard_s1_p2_r4"]["seed"] == 5
    config["scenarios"]["clean"] = {"attack": "clean", "target": 5}
    with pytest.raises(ValueError, match="scenario 'clean' is also in 'scenarios'"):
        validate_config(config, load_schema(REPO / "config" / "schema.yaml"))


def test_the_quick_gtsrb_config_expands_to_its_subset_and_validates(tmp_path) -> None:
    import yaml
    from conftest import REPO

    from poisonscan.config import load_schema, validate_config

    config = yaml.safe_load((REPO / "config" / "gtsrb-quick.yaml").read_text())
    names = [sc.name for sc in expand_matrix(config["matrix"])]
    assert names == ["standard_s3_p33", "standard_s3_p10", "standard_s3_p2"]  # one repetition
    assert list(config["scenarios"]) == ["control"]
    (tmp_path / "gtsrb32.npz").touch()  # the path must exist; the data is not read
    config["dataset"]["path"] = str(tmp_path / "gtsrb32.npz")
    cfg = validate_config(config, load_schema(REPO / "config" / "schema.yaml"))
    assert sorted(cfg["scenarios"]) == sorted(["control", *names])


def test_the_column_config_layers_all_five_poison_rates_on_the_quick_config(tmp_path) -> None:
    import yaml
    from conftest import REPO
    from snakemake.utils import update_config

    from poisonscan.config import load_schema, validate_config

    config = yaml.safe_load((REPO / "config" / "gtsrb-quick.yaml").read_text())
    # snakemake merges --configfile files in order, recursively
    update_config(config, yaml.safe_load((REPO / "config" / "gtsrb-quick-column.yaml").read_text()))
    names = [sc.name for sc in expand_matrix(config["matrix"])]
    assert names == [f"standard_s3_p{p}" for p in (33, 15, 10, 5, 2)]
    assert config["matrix"]["standard"]["source"] == 2 and config["training"]["epochs"] == 4
    (tmp_path / "gtsrb32.npz").touch()
    config["dataset"]["path"] = str(tmp_path / "gtsrb32.npz")
    cfg = validate_config(config, load_schema(REPO / "config" / "schema.yaml"))
    assert sorted(cfg["scenarios"]) == sorted(["control", *names])
