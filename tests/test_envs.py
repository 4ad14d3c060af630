"""The conda environments, the Makefile and pyproject.toml must agree on versions."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
REQUIRED = {
    Requirement(r).name.lower(): Requirement(r) for r in PYPROJECT["project"]["dependencies"]
}
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def pip_pins(path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pins: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep.get("pip", []):
                if "==" in line:
                    name, version = line.split("==")
                    pins[name.strip().lower()] = version.strip()
    return pins


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_satisfy_pyproject(path) -> None:
    pins = pip_pins(path)
    assert pins, f"{path.name} pins nothing"
    for name, version in pins.items():
        if name in REQUIRED:
            assert REQUIRED[name].specifier.contains(version), (
                f"{path.name}: {name}=={version} violates pyproject's {REQUIRED[name]}"
            )
    env = yaml.safe_load(path.read_text())
    assert any("-e .." in str(d) for d in env["dependencies"]), "the package itself is missing"


def test_torch_pins_agree_with_makefile() -> None:
    make_pins = dict(re.findall(r"(torch|torchvision)==([\w.]+)", (REPO / "Makefile").read_text()))
    torch_env = pip_pins(REPO / "envs" / "torch.yaml")
    for name, version in make_pins.items():
        assert torch_env[name] == version, f"envs/torch.yaml {name} != Makefile {version}"


def test_every_rule_uses_an_existing_env() -> None:
    for smk in (REPO / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[\w.]+)"', smk.read_text()):
            assert (REPO / env).is_file(), f"{smk.name} refers to missing {env}"
