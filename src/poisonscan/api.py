"""The Python API of an audit: ``poisonscan.audit(data, ...)`` runs ``poisonscan scan``.

::

    import poisonscan

    result = poisonscan.audit("path/to/images", out="my-scan", training={"epochs": 40})
    result.verdicts            # pandas DataFrame, one row per class
    result.poisoned_classes    # ["05_speed_limit_80"]
    result.suspicious          # DataFrame of the flagged files, most suspicious first
    result                     # in a notebook: the verdict table and the model's accuracy

The audit is the command's, run in a process of its own (``python -m poisonscan.cli scan``):
the same checks, the same workflow, the same files, so its verdicts are the command's; a
second call on the same data and ``out`` reruns nothing (and reruns what changed).
:func:`load` reads the result of a scan already made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AuditError", "AuditResult", "audit", "load", "scan_command"]

PathLike = str | os.PathLike[str]


class AuditError(RuntimeError):
    """The scan stopped: bad input (exit code 2) or a failed step (1); the message is its
    ``poisonscan: error:`` line."""


@dataclass
class AuditResult:
    """What an audit found, read from its output folder.

    Attributes
    ----------
    out : Path
        The output folder.
    verdicts : pandas.DataFrame
        ``verdicts.csv``: one row per class (``class``, ``name``, ``verdict``, ``z``, ``q``,
        ``n_flagged``, ``trigger`` ...).
    suspicious : pandas.DataFrame
        ``suspicious.csv``: one row per flagged file (``path``, ``class``, ``score``, ``q``,
        ``signal``, ``split``), most suspicious first.
    triggers : dict
        Class id (str) -> the recovered trigger (``size``, ``region``, ``pattern`` ...).
    model_quality : dict
        The model's test accuracy and the gate (:mod:`poisonscan.verdicts.gate`).
    paths : dict of str to Path
        ``verdicts``, ``suspicious``, ``clean_list``, ``filtered``, ``details``,
        ``overview`` (the HTML page), ``figure``, ``label_conflicts`` (identical images under
        different labels).
    """

    out: Path
    verdicts: Any
    suspicious: Any
    triggers: dict[str, Any] = field(default_factory=dict)
    model_quality: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def poisoned_classes(self) -> list[str]:
        """Names of the classes whose verdict is ``poisoned``."""
        rows = self.verdicts[self.verdicts["verdict"] == "poisoned"]
        return [str(n) for n in rows["name"]]

    @property
    def suspicious_files(self) -> list[str]:
        """The flagged files, most suspicious first."""
        return [str(p) for p in self.suspicious["path"]]

    def __repr__(self) -> str:
        head = ", ".join(self.poisoned_classes) or "none"
        return (f"AuditResult(out={str(self.out)!r}, classes={len(self.verdicts)}, "
                f"poisoned=[{head}], suspicious={len(self.suspicious)})")  # fmt: skip

    def _repr_html_(self) -> str:
        import html

        cols = [c for c in ("class", "name", "verdict", "n", "z", "q", "n_flagged", "trigger")
                if c in self.verdicts.columns]  # fmt: skip
        note = self.model_quality.get("summary", "")
        return (
            f"<p><b>poisonscan audit</b> ({html.escape(str(self.out))}): poisoned: "
            f"{html.escape(', '.join(self.poisoned_classes) or 'none')}; "
            f"{len(self.suspicious)} suspicious files. {html.escape(note)}</p>"
            + self.verdicts[cols].to_html(index=False)
        )


def load(out: PathLike) -> AuditResult:
    """The result of the audit in the output folder ``out`` (of ``poisonscan scan``).

    Raises
    ------
    FileNotFoundError
        If ``out`` holds no finished audit.
    """
    import pandas as pd

    root = Path(out).resolve()
    found = sorted((root / "results").glob("*/audit/verdicts/verdicts.csv"))
    if not found:
        raise FileNotFoundError(f"{root} holds no finished audit (results/*/audit/verdicts/)")
    base = found[0].parent
    details_path = base / "verdicts.json"
    details = json.loads(details_path.read_text()) if details_path.is_file() else {}
    paths = {
        "verdicts": base / "verdicts.csv",
        "suspicious": base / "suspicious.csv",
        "clean_list": base / "clean_list.txt",
        "filtered": base / "filtered.h5",
        "details": details_path,
        "figure": base / "verdicts.png",
        "label_conflicts": base / "label_conflicts.csv",
        "overview": root / "results" / "overview" / "index.html",
    }
    return AuditResult(
        out=root,
        verdicts=pd.read_csv(paths["verdicts"]),
        suspicious=pd.read_csv(paths["suspicious"]),
        triggers=dict(details.get("triggers", {})),
        model_quality=dict(details.get("model_quality") or {}),
        paths=paths,
    )


def scan_command(
    data: Path,
    out: Path,
    model: PathLike | None = None,
    configfile: Path | None = None,
    cores: int | None = None,
    skip_bad: bool = False,
) -> list[str]:
    """The ``poisonscan scan`` command line :func:`audit` runs."""
    argv = [sys.executable, "-m", "poisonscan.cli", "scan", str(data), "--out", str(out)]
    if model is not None:
        argv += ["--model", str(Path(model).resolve())]
    if configfile is not None:
        argv += ["--config", str(configfile)]
    if cores is not None:
        argv += ["--cores", str(cores)]
    if skip_bad:
        argv.append("--skip-bad")
    return argv


def audit(
    data: PathLike | np.ndarray,
    labels: np.ndarray | None = None,
    model: PathLike | None = None,
    *,
    out: PathLike = "poisonscan-out",
    names: list[str] | None = None,
    cores: int | None = None,
    skip_bad: bool = False,
    quiet: bool = True,
    **config: Any,
) -> AuditResult:
    """Audit a dataset for backdoor poisoning, as ``poisonscan scan`` does; return its result.

    Parameters
    ----------
    data : path or ndarray
        An image folder (one subfolder per class), an ``.npz`` file, or images as an array
        (n, H, W, C) / (n, C, H, W) (uint8, or floats in [0, 1]) with ``labels``.
    labels : ndarray, optional
        With an array of images: their class ids (n,) or one-hot (n, K).
    model : path, optional
        Your model file instead of training one (``--model``).
    out : path
        The output folder (created; the same rules as ``--out``).
    names : list of str, optional
        With an array: the class names (default "0", "1", ...).
    cores : int, optional
        CPU cores (default: the profile's).
    skip_bad : bool
        Leave bad files out instead of stopping (``--skip-bad``).
    quiet : bool
        Keep the workflow's progress off the console (it is in the scan's logs).
    **config
        Any config sections, e.g. ``training={"epochs": 40}``, ``dataset={"image_size": 48}``
        (written to a ``--config`` file).

    Returns
    -------
    AuditResult

    Raises
    ------
    AuditError
        If the scan stops (bad input, a failed step); the message says why and what to do.
    """
    out_dir = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="poisonscan-api-") as tmp:
        if isinstance(data, np.ndarray):
            if labels is None:
                raise ValueError("images given as an array need their labels")
            source = Path(tmp) / "images.npz"
            arrays = {"x": data, "y": np.asarray(labels)}
            if names is not None:
                arrays["names"] = np.asarray(names, dtype=str)
            np.savez(source, **arrays)
        else:
            source = Path(data).resolve()
        configfile = None
        if config:
            configfile = Path(tmp) / "config.yaml"
            import yaml

            configfile.write_text(yaml.safe_dump(_plain(config), sort_keys=False))
        argv = scan_command(source, out_dir, model, configfile, cores, skip_bad)
        proc = subprocess.run(argv, capture_output=quiet, text=True, check=False)
    if proc.returncode != 0:
        lines = (proc.stderr or "").splitlines() if quiet else []
        errors = [line for line in lines if line.startswith("poisonscan: error:")]
        message = errors[-1] if errors else f"poisonscan scan ended with code {proc.returncode}"
        raise AuditError(message)
    return load(out_dir)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as YAML-able Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
