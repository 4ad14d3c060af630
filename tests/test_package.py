"""Code hashes of the workflow rules (poisonscan.codehash), derived from the imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from poisonscan.codehash import code_hash, module_closure


def test_closure_follows_imports_transitively_and_only_them() -> None:
    detect = module_closure("poisonscan.steps.detect")
    # the registry and what its module imports; parents of every module
    assert {"poisonscan", "poisonscan.steps", "poisonscan.detectors",
            "poisonscan.detectors._base", "poisonscan.explain.store",
            "poisonscan.storage"} <= detect  # fmt: skip
    # detector modules are named by string in the registry: not imported by the step
    assert "poisonscan.detectors.gw_kmeans" not in detect
    assert "poisonscan.training" not in detect
    # a lazily imported module (inside a function) counts
    assert "poisonscan.parallel" in module_closure("poisonscan.steps.distances")
    # a package's lazily loaded names count where they are used, not where declared
    assert "poisonscan.explain.run" not in module_closure("poisonscan.explain")
    assert "poisonscan.explain.run" in module_closure("poisonscan.steps.explain")
    assert "poisonscan.distances._tiles" in module_closure("poisonscan.steps.distances")


def test_code_hash_is_stable_and_order_free() -> None:
    one = code_hash("poisonscan.steps.train")
    assert len(one) == 16 and one == code_hash("poisonscan.steps.train")
    assert code_hash("poisonscan.steps.detect", "poisonscan.detectors.gw_kmeans") == code_hash(
        "poisonscan.detectors.gw_kmeans", "poisonscan.steps.detect"
    )
    assert code_hash("poisonscan.steps.detect") != code_hash("poisonscan.steps.scan")
    with pytest.raises(ValueError, match="no module or package poisonscan.nope"):
        code_hash("poisonscan.nope")


@pytest.mark.parametrize(
    "module",
    ["poisonscan.steps.detect", "poisonscan.steps.evaluate", "poisonscan.steps.scan",
     "poisonscan.steps.report", "poisonscan.steps.distances", "poisonscan.detectors",
     "poisonscan.config"],
)  # fmt: skip
def test_analysis_steps_do_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"importing {module} loads torch"
