"""The wheel carries the Snakemake workflow inside the package (``poisonscan/_workflow``).

Everything else is in ``pyproject.toml``. ``poisonscan scan`` runs the workflow beside the
package: in a checkout (``pip install -e .``) it is the checkout's own; an installed wheel
(``pip install .``, ``pip install poisonscan-*.whl``) has no checkout, so the build copies
the workflow's files (:data:`WORKFLOW`) into the package (:func:`poisonscan.cli.workflow_root`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# What `snakemake` reads besides the package: the Snakefile, the rules, their scripts and
# report captions, the conda environments the rules name, the profiles and the schema.
WORKFLOW = ("Snakefile", "rules", "workflow", "envs", "profiles", "config/schema.yaml")


class BuildWithWorkflow(build_py):
    """``build_py`` that also copies :data:`WORKFLOW` into ``poisonscan/_workflow``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install uses the checkout
            return
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "poisonscan" / "_workflow"
        skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake")
        for name in WORKFLOW:
            src, dst = root / name, target / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=skip, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildWithWorkflow})
