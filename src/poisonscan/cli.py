"""The ``poisonscan`` command: scan your own images (and model) with the workflow, build its report.

``poisonscan scan DIR`` writes a config for the image folder ``DIR`` (one subfolder per
class; an ``.npz`` file works too) into the output folder and runs the Snakemake workflow of
this repository there in audit mode (no attack, no ground truth), through Snakemake's Python
API (:mod:`snakemake.api`), with Snakemake's progress on the console. ``poisonscan report``
builds the HTML report of that output folder.

The config the command writes replaces the workflow's own ``config/config.yaml`` (Snakemake's
``replace_workflow_config``): its scenarios are not merged in. Bad input (a missing folder,
bad images, a model file that does not fit) is reported before any work as one message on
stderr and exit code 2, without a traceback.

The workflow (``Snakefile``, ``rules/``, ``workflow/``, ``config/schema.yaml``, ``profiles/``)
is found beside the package: in the checkout it was installed from (``pip install -e .``),
inside the package of an installed wheel (``poisonscan/_workflow``, copied by ``setup.py``),
or in the folder named by ``$POISONSCAN_WORKFLOW``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CliError",
    "build_config",
    "check_out",
    "failure_line",
    "front_page",
    "main",
    "model_sidecar",
    "parse_normalization",
    "read_config_file",
    "recover_lock",
    "workflow_root",
]

# Exit codes: 2 = bad input or usage (argparse's own code for usage errors), 1 = a job failed.
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
CONFIG_NAME = "config.yaml"
# The first line of every config.yaml the command writes: an --out folder whose config.yaml
# starts otherwise is the user's (check_out).
CONFIG_MARK = "# written by `poisonscan scan`"
# What the command and the workflow write into --out besides config.yaml.
OWN_ENTRIES = ("results", ".snakemake", "report.html", "report-workflow.html", "report.zip")
# In <out>/.snakemake/: the process of the scan running there (recover_lock).
OWNER_NAME = "poisonscan-run.json"
DEFAULT_OUT = "poisonscan-out"
# A TorchScript model supports only gradient explanations (poisonscan.modelfile); the command
# takes the cheapest one, the plain gradient.
TORCHSCRIPT_EXPLAIN = "saliency"


class CliError(Exception):
    """A problem the user can fix; :func:`main` prints it and exits with code 2."""


def workflow_root() -> Path:
    """The folder holding the workflow's ``Snakefile``.

    Raises
    ------
    CliError
        If neither ``$POISONSCAN_WORKFLOW`` nor the checkout beside the package holds one.
    """
    env = os.environ.get("POISONSCAN_WORKFLOW")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates.append(here.parents[1])  # src/poisonscan/cli.py -> the checkout
    candidates.append(here / "_workflow")  # an installed wheel carries it (setup.py)
    for root in candidates:
        if (root / "Snakefile").is_file() and (root / "rules").is_dir():
            return root
    tried = ", ".join(str(c) for c in candidates)
    raise CliError(
        f"the poisonscan workflow (Snakefile, rules/) was not found (looked in {tried}); "
        "reinstall poisonscan (pip install <checkout> or its wheel) or set "
        "POISONSCAN_WORKFLOW=<checkout>"
    )


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys put in, section by section."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """The keys of ``--config FILE`` (any key of the schema; checked with the rest).

    Raises
    ------
    CliError
        If the file cannot be read, is not YAML (naming the line) or not a mapping, or sets
        ``scenarios``/``matrix``/``audit: false`` (a scan is an audit).
    """
    from poisonscan.config import ConfigError, check_yaml

    if not path.is_file():
        raise CliError(f"--config {path}: no such file")
    try:
        keys = check_yaml(path) or {}
    except (ConfigError, OSError) as err:
        raise CliError(f"--config {err}") from err
    if not isinstance(keys, Mapping):
        raise CliError(f"--config {path}: expected a mapping of config keys, got "
                       f"{type(keys).__name__}")  # fmt: skip
    for key in ("scenarios", "matrix"):
        if keys.get(key):
            raise CliError(f"--config {path}: '{key}' is for experiments; a scan is an audit "
                           "of your data without attacks (remove the key)")  # fmt: skip
    if keys.get("audit", True) is not True:
        raise CliError(f"--config {path}: a scan is an audit (audit: true); remove 'audit'")
    return dict(keys)


def parse_normalization(text: str) -> dict[str, list[float]]:
    """``--normalization MEAN/STD``: per-channel ``r,g,b`` or one value for all three.

    Examples
    --------
    >>> parse_normalization("0.485,0.456,0.406/0.229,0.224,0.225")["std"]
    [0.229, 0.224, 0.225]
    >>> parse_normalization("0.5/0.5")
    {'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}
    """
    usage = (f"--normalization {text!r}: expected MEAN/STD on the [0, 1] scale, each one "
             "number or three (r,g,b), e.g. 0.485,0.456,0.406/0.229,0.224,0.225")  # fmt: skip
    parts = text.split("/")
    if len(parts) != 2:
        raise CliError(usage)
    try:
        values = [[float(v) for v in part.split(",")] for part in parts]
    except ValueError as err:
        raise CliError(usage) from err
    if any(len(v) not in (1, 3) for v in values):
        raise CliError(usage)
    mean, std = (v * 3 if len(v) == 1 else v for v in values)
    if min(std) <= 0:
        raise CliError(f"--normalization {text!r}: a standard deviation must be positive")
    return {"mean": mean, "std": std}


def model_sidecar(model: Path) -> dict[str, Any] | None:
    """What the sidecar ``<file>.json`` of a model trained by poisonscan says about its input.

    Returns
    -------
    dict or None
        ``{"name": architecture, "normalization": {"mean", "std"}}`` when ``model`` has a
        poisonscan sidecar beside it (``results/.../model.safetensors.json``), else None.
    """
    import json

    path = model.with_name(model.name + ".json")
    try:
        meta = json.loads(path.read_text())
        norm = meta["normalization"]
        return {"name": str(meta["architecture"]),
                "normalization": {"mean": [float(v) for v in norm["mean"]],
                                  "std": [float(v) for v in norm["std"]]}}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_config(
    data: Path,
    model: Path | None = None,
    image_size: int | None = None,
    *,
    keys: Mapping[str, Any] | None = None,
    normalization: Mapping[str, Any] | None = None,
    input_size: int | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """The config of an audit of ``data`` (an image folder or an ``.npz`` file).

    Parameters
    ----------
    data : Path
        The image folder (one subfolder per class) or the npz file; stored absolute.
    model : Path, optional
        The user's model file (``model.file``, stored absolute); a TorchScript file also
        sets ``explain.method`` to a gradient method it supports. A model trained by
        poisonscan (its sidecar ``<file>.json`` beside it) brings its architecture and its
        normalisation (:func:`model_sidecar`) unless ``keys`` or ``normalization`` set them.
    image_size : int, optional
        ``dataset.image_size`` (and ``model.input_size``); default: the schema's.
    keys : mapping, optional
        ``--config FILE``: any config keys; the options above win over them.
    normalization : mapping, optional
        ``model.normalization`` (``--normalization``).
    input_size : int, optional
        ``model.input_size`` (``--input-size``).
    skip_bad : bool
        ``dataset.on_bad_input: skip`` (``--skip-bad``).

    Returns
    -------
    dict
        ``audit: true``, ``dataset`` (and ``model``, ``explain``) sections and ``keys``;
        every other key takes the schema's default.
    """
    name = "npz" if data.is_file() and data.suffix.lower() == ".npz" else "folder"
    dataset: dict[str, Any] = {"name": name, "path": str(data.resolve())}
    if image_size is not None:
        dataset["image_size"] = image_size
    if skip_bad:
        dataset["on_bad_input"] = "skip"
    config: dict[str, Any] = {"audit": True, "dataset": dataset}
    given = dict((keys or {}).get("model") or {})
    if model is not None:
        from poisonscan.modelfile import TORCHSCRIPT, model_format

        section: dict[str, Any] = {"file": str(model.resolve())}
        sidecar = model_sidecar(model)
        if sidecar is not None:
            section.update({k: v for k, v in sidecar.items() if k not in given})
        if image_size is not None:
            section["input_size"] = image_size
        if input_size is not None:
            section["input_size"] = input_size
        if normalization is not None:
            section["normalization"] = dict(normalization)
        config["model"] = section
        if model_format(model) == TORCHSCRIPT and "method" not in ((keys or {}).get("explain")
                                                                    or {}):  # fmt: skip
            config["explain"] = {"method": TORCHSCRIPT_EXPLAIN}
    return _merge(dict(keys or {}), config)


def normalization_unknown(config: Mapping[str, Any]) -> bool:
    """True if the config gives a model file without saying how its input is normalised."""
    section = config.get("model") or {}
    return bool(section.get("file")) and "normalization" not in section


def _check_paths(data: Path, model: Path | None) -> None:
    if not data.exists():
        raise CliError(f"{data} does not exist (expected a folder with one subfolder per class)")
    if not data.is_dir() and data.suffix.lower() != ".npz":
        raise CliError(f"{data} is not a folder (expected one subfolder per class, or an .npz)")
    if model is not None:
        from poisonscan.modelfile import ModelFileError, model_format

        try:
            model_format(model)
        except ModelFileError as err:
            raise CliError(str(err)) from err


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out(out: Path, data: Sequence[Path]) -> None:
    """Refuse an output folder that would touch the user's data or files poisonscan did not write.

    Parameters
    ----------
    out : Path
        The output folder (``--out``), resolved.
    data : sequence of Path
        The dataset's folders or files (``dataset.path``, ``dataset.test_path``), resolved.

    Raises
    ------
    CliError
        If ``out`` is a file; lies inside a dataset folder (its files would be read as a
        class, and the next scan would stop on them); or holds one of the files the scan writes
        (:data:`OWN_ENTRIES`) without the mark of a scan in its ``config.yaml``: a
        ``config.yaml`` of the user's, or ``results/``, ``.snakemake/``, a report of another
        tool. Files of other names in ``out`` are never written, so they do not matter.
    """
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file; name a folder (it is created if missing)")
    for root in data:
        if root.is_dir() and _inside(out, root):
            raise CliError(
                f"--out {out} is inside the dataset folder {root}: the scan's files would be "
                "read as images of a class; choose an output folder outside it"
            )
    if not out.is_dir():
        return
    config = out / CONFIG_NAME
    if config.exists():
        try:
            with open(config, encoding="utf-8", errors="replace") as f:
                ours = f.readline().startswith(CONFIG_MARK)
        except OSError as err:
            raise CliError(f"--out {out}: cannot read {config} ({err})") from err
        if not ours:
            raise CliError(
                f"{config} exists and was not written by poisonscan scan; it would be "
                "overwritten: choose another --out (or move the file)"
            )
        return
    for name in OWN_ENTRIES:
        if (out / name).exists():
            raise CliError(
                f"{out / name} exists but {out} holds no {CONFIG_NAME} of a scan: it would be "
                "overwritten: choose another --out (or move it)"
            )


def _write_config(out: Path, config: Mapping[str, Any], rerun: str = "") -> Path:
    from poisonscan.storage import atomic_path

    path = out / CONFIG_NAME
    header = (
        f"{CONFIG_MARK}; every other key takes its default from the schema\n"
        "# (config/schema.yaml of the poisonscan workflow).\n"
        + (f"# Rerun with: {rerun}\n" if rerun else "")
    )
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(dict(config), sort_keys=False))
    return path


def _validate(root: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with defaults, checked as the workflow checks it (bad input included)."""
    from poisonscan.config import ConfigError, load_schema, validate_config
    from poisonscan.datasets import BadInputError

    try:
        return validate_config(config, load_schema(root / "config" / "schema.yaml"))
    except ConfigError as err:
        text = str(err)
        cause = err.__cause__
        if isinstance(cause, BadInputError) and all(p.skippable for p in cause.problems):
            head, _, rest = text.partition("\n")  # the advice in the command's own terms
            advice = "; with poisonscan scan: add --skip-bad"
            head = f"{head[:-1]}{advice}:" if head.endswith(":") else head + advice
            text = f"{head}\n{rest}"
        raise CliError(text) from err


def _check_model(cfg: Mapping[str, Any]) -> None:
    """The model file loads and its output size equals the class count (before any work)."""
    from poisonscan.datasets import inspect_dataset
    from poisonscan.modelfile import ModelFileError
    from poisonscan.usermodel import load_user_model

    info = inspect_dataset(cfg["dataset"])
    assert info.n_classes is not None
    try:
        load_user_model(cfg["model"], info.n_classes, cfg["dataset"]["image_size"])
    except ModelFileError as err:
        raise CliError(str(err)) from err


def _owner_path(out: Path) -> Path:
    return out / ".snakemake" / OWNER_NAME


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: field 22 of /proc/<pid>/stat), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # fields after the command name, from 3 on


def _alive(owner: Mapping[str, Any]) -> bool:
    """Whether the process that wrote ``owner`` (this host's) still runs."""
    pid = int(owner.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    start = _process_start(pid)
    return start is None or owner.get("start") in (None, start)  # a reused pid is not it


def _claim(out: Path) -> None:
    """Record this process as the scan running in ``out`` (read by :func:`recover_lock`)."""
    import json
    import socket

    pid = os.getpid()
    path = _owner_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": socket.gethostname(), "start": _process_start(pid)}
    path.write_text(json.dumps(owner))


def _release(out: Path) -> None:
    _owner_path(out).unlink(missing_ok=True)


def recover_lock(out: Path, rerun: str, unlock: bool = False) -> str | None:
    """Remove Snakemake's lock on ``out`` when the scan that held it is gone.

    A scan killed (``kill -9``, a power loss) leaves ``.snakemake/locks/`` behind, and the
    next run would stop. Each scan records its process (``.snakemake/poisonscan-run.json``:
    pid, host, process start time); a lock whose process no longer runs on this host is
    removed.

    Parameters
    ----------
    out : Path
        The output folder.
    rerun : str
        The command that repeats the scan (for the advice).
    unlock : bool
        ``--unlock``: remove a lock that cannot be shown stale (held by a plain Snakemake
        run, or by a scan on another host); a scan running on this host is never unlocked.

    Returns
    -------
    str or None
        What was done, for the console; None if there was no lock.

    Raises
    ------
    CliError
        If a scan still runs in ``out``, or the lock's owner is unknown without ``unlock``.
    """
    import json
    import shutil
    import socket

    locks = out / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return None
    try:
        owner = json.loads(_owner_path(out).read_text())
    except (OSError, ValueError):
        owner = None
    here = owner is not None and owner.get("host") == socket.gethostname()
    if here and _alive(owner):
        raise CliError(
            f"another poisonscan scan (process {owner['pid']}) is running in {out}; wait for "
            f"it to end, or stop it (kill {owner['pid']}) and run the same command again"
        )
    if not here and not unlock:
        who = f"a scan on {owner.get('host')}" if owner else "another Snakemake run"
        raise CliError(
            f"{out} is locked by {who}; if none is running there (a killed run leaves its "
            f"lock), remove the lock and scan: {rerun} --unlock"
        )
    shutil.rmtree(locks)
    _release(out)
    if here:
        return f"removed the lock left by a scan that stopped (process {owner['pid']})"
    return f"removed the lock on {out} (--unlock)"


def failure_line(out: Path, since: float, rerun: str) -> str:
    """The one line that says what to do after a failed run.

    Parameters
    ----------
    out : Path
        The output folder.
    since : float
        When the run began (``time.time()``): only the logs written since are read.
    rerun : str
        The command that repeats the scan.

    Returns
    -------
    str
        The failed step, its error (the ``step failed:`` line of its log,
        :func:`poisonscan.rulelog.rule_log`), the log's path and what to do.
    """
    from poisonscan.rulelog import RERUN

    again = f"run the same command again: {rerun}"
    failed = []
    logs = out / "results" / "logs"
    for path in sorted(logs.rglob("*.log")) if logs.is_dir() else []:
        try:
            if path.stat().st_mtime < since - 1:
                continue
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        errors = [line.split("step failed: ", 1)[1] for line in lines if "step failed: " in line]
        if errors:
            failed.append((path, errors[-1]))
    if not failed:
        return (
            f"the workflow stopped (its messages above; its log in {out / '.snakemake' / 'log'})"
            f"; after fixing the cause, {again}"
        )
    path, error = failed[0]
    step = path.relative_to(logs).parts[0]
    if RERUN in error:  # a damaged input was moved aside: running again recomputes it
        return f"step {step} failed: {error.replace(RERUN, again)} (log: {path})"
    more = f" ({len(failed) - 1} more failed steps in {logs})" if len(failed) > 1 else ""
    return (
        f"step {step} failed: {error} (log: {path}){more}; after fixing the cause, {again} "
        "(it resumes where it stopped)"
    )


def _profile_dir(root: Path, profile: str | None) -> Path:
    if profile is None:
        return root / "profiles" / "default"
    for candidate in (Path(profile), root / "profiles" / profile):
        if (candidate / "config.yaml").is_file():
            return candidate.resolve()
    raise CliError(
        f"profile {profile!r} not found: no config.yaml in {profile} or in "
        f"{root / 'profiles' / profile}"
    )


def _profile_args(profile: Path, cores: int | None) -> argparse.Namespace:
    """The profile's settings, parsed by Snakemake's own argument parser (same meaning)."""
    from snakemake.cli import get_argument_parser

    argv = ["--cores", str(cores)] if cores is not None else []
    return get_argument_parser(profiles=[str(profile)]).parse_args(argv)


def _run_workflow(
    root: Path,
    out: Path,
    configfile: Path,
    args: argparse.Namespace,
    dry_run: bool,
    targets: Sequence[str] = (),
) -> bool:
    """Run the workflow with ``configfile`` replacing its own config; True on success.

    ``targets``: the files to build (default: the workflow's default target, ``all``).
    """
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        ExecutionSettings,
        OutputSettings,
        RemoteExecutionSettings,
        ResourceSettings,
    )
    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

    executor = args.executor or "local"
    plugin = ExecutorPluginRegistry().get_plugin(executor)
    cores = args.cores
    if cores is None and plugin.common_settings.local_exec:
        cores, args.jobs = args.jobs, None  # as Snakemake's CLI: --jobs stands for --cores
    output = OutputSettings(
        dryrun=dry_run,
        printshellcmds=args.printshellcmds,
        # poisonscan scan ends a failure with one line naming the log (failure_line)
        show_failed_logs=False,
        stdout=dry_run,
    )
    with SnakemakeApi(output) as api:
        try:
            workflow = api.workflow(
                resource_settings=ResourceSettings(
                    cores=cores,
                    nodes=args.jobs,
                    local_cores=args.local_cores,
                    max_threads=args.max_threads,
                    resources=args.resources,
                    overwrite_threads=args.set_threads,
                    overwrite_resources=args.set_resources,
                    default_resources=args.default_resources,
                ),
                config_settings=ConfigSettings(
                    configfiles=[configfile], replace_workflow_config=True
                ),
                snakefile=root / "Snakefile",
                workdir=out,
            )
            dag = workflow.dag(
                DAGSettings(
                    targets=set(targets),
                    force_incomplete=args.rerun_incomplete,
                    rerun_triggers=args.rerun_triggers,
                )
            )
            dag.execute_workflow(
                executor=executor,
                pseudo_executor="dryrun" if dry_run else None,
                execution_settings=ExecutionSettings(
                    latency_wait=args.latency_wait,
                    retries=args.retries,
                    keep_going=args.keep_going,
                ),
                remote_execution_settings=RemoteExecutionSettings(),
                executor_settings=plugin.get_settings(args),
            )
        except Exception as err:  # Snakemake's errors: printed the way its own CLI does
            api.print_exception(err)
            return False
    return True


def _report(root: Path, out: Path, report: Path) -> bool:
    from snakemake.api import SnakemakeApi
    from snakemake.report.html_reporter import ReportSettings
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        try:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=1),
                config_settings=ConfigSettings(
                    configfiles=[out / CONFIG_NAME], replace_workflow_config=True
                ),
                snakefile=root / "Snakefile",
                workdir=out,
            )
            workflow.dag().create_report(
                reporter="html", report_settings=ReportSettings(path=report)
            )
        except Exception as err:
            api.print_exception(err)
            return False
    return True


def _parser() -> argparse.ArgumentParser:
    from poisonscan import __version__

    parser = argparse.ArgumentParser(
        prog="poisonscan",
        description="Find backdoor-poisoned images in your training set.",
    )
    parser.add_argument("--version", action="version", version=f"poisonscan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    scan = sub.add_parser(
        "scan",
        help="scan an image folder (one subfolder per class) for poisoned classes and images",
        description="Write a config for DIR into the output folder and run the workflow there "
        "in audit mode; results under <out>/results/.",
    )
    scan.add_argument(
        "dir",
        type=Path,
        metavar="DIR",
        help="folder with one subfolder of images per class (or an .npz file)",
    )
    scan.add_argument("--model", type=Path, metavar="FILE",
                      help="your trained model (safetensors of model.name, or TorchScript) "
                      "instead of training one")  # fmt: skip
    scan.add_argument("--normalization", metavar="MEAN/STD",
                      help="with --model: its input is (pixel/255 - MEAN)/STD, each one number "
                      "or r,g,b (default: from a poisonscan model's sidecar, else 0/1 with a "
                      "warning)")  # fmt: skip
    scan.add_argument("--input-size", type=int, metavar="N",
                      help="with --model: the side of its square input")  # fmt: skip
    scan.add_argument("--config", type=Path, metavar="FILE",
                      help="YAML file with any config keys (config/schema.yaml), e.g. "
                      "training: {epochs: 40}; the options here win over it")  # fmt: skip
    scan.add_argument("--skip-bad", action="store_true",
                      help="leave bad files and classes out (listed in bad_input.csv) instead "
                      "of stopping (dataset.on_bad_input: skip)")  # fmt: skip
    scan.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), metavar="DIR",
                      help=f"output folder (default: {DEFAULT_OUT})")  # fmt: skip
    scan.add_argument("--cores", type=int, metavar="N",
                      help="CPU cores to use (default: the profile's)")  # fmt: skip
    scan.add_argument("--profile", metavar="P",
                      help="Snakemake profile: a folder with config.yaml, or a name in the "
                      "workflow's profiles/ (default: profiles/default)")  # fmt: skip
    scan.add_argument("--image-size", type=int, metavar="N",
                      help="side the images are resized to (default 32)")  # fmt: skip
    scan.add_argument("--dry-run", action="store_true",
                      help="check the input and show the jobs without running them")  # fmt: skip
    scan.add_argument("--unlock", action="store_true",
                      help="remove the lock a killed run left in the output folder, then scan "
                      "(a lock left by a scan on this machine is removed without it)")  # fmt: skip
    report = sub.add_parser("report", help="build the HTML report of a scan")
    report.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), metavar="DIR",
                        help=f"output folder of the scan (default: {DEFAULT_OUT})")  # fmt: skip
    report.add_argument("--output", type=Path, metavar="FILE",
                        help="report file (.html or .zip; default: <out>/report.html)")  # fmt: skip
    return parser


def _rerun_line(args: argparse.Namespace, out: Path) -> str:
    """The command that repeats this scan, from any directory (absolute paths)."""
    import shlex

    argv = ["poisonscan", "scan", str(args.dir.resolve()), "--out", str(out)]
    if args.model is not None:
        argv += ["--model", str(args.model.resolve())]
    if args.config is not None:
        argv += ["--config", str(args.config.resolve())]
    if args.normalization:
        argv += ["--normalization", args.normalization]
    if args.input_size is not None:
        argv += ["--input-size", str(args.input_size)]
    if args.skip_bad:
        argv += ["--skip-bad"]
    if args.profile is not None:  # a name in the workflow's profiles/, or a folder
        path = Path(args.profile)
        argv += ["--profile", str(path.resolve()) if path.is_dir() else args.profile]
    for flag, number in (("--image-size", args.image_size), ("--cores", args.cores)):
        if number is not None:
            argv += [flag, str(number)]
    return shlex.join(argv)


def _scan(args: argparse.Namespace) -> int:
    root = workflow_root()
    data, model = args.dir, args.model
    _check_paths(data, model)
    if args.cores is not None and args.cores < 1:
        raise CliError(f"--cores must be at least 1, got {args.cores}")
    profile = _profile_dir(root, args.profile)
    out = args.out.resolve()
    if model is None and (args.normalization or args.input_size is not None):
        raise CliError("--normalization and --input-size describe a --model; none is given")
    keys = read_config_file(args.config) if args.config is not None else None
    norm = parse_normalization(args.normalization) if args.normalization else None
    config = build_config(data, model, args.image_size, keys=keys, normalization=norm,
                          input_size=args.input_size, skip_bad=args.skip_bad)  # fmt: skip
    # everything is checked before the first file is written (issue 34)
    cfg = _validate(root, config)
    if normalization_unknown(config):
        print(f"poisonscan: warning: how {model} normalises its input is unknown (no "
              "--normalization, no model.normalization in --config, no poisonscan sidecar "
              f"{model}.json): assuming (pixel/255 - 0)/1; a wrong guess changes its "
              "predictions and heatmaps", file=sys.stderr)  # fmt: skip
    check_out(out, [Path(cfg["dataset"][k]).resolve() for k in ("path", "test_path")
                    if cfg["dataset"].get(k)])  # fmt: skip
    if model is not None:
        _check_model(cfg)
    rerun = _rerun_line(args, out)
    done = recover_lock(out, rerun, args.unlock)
    if done:
        print(f"poisonscan: {done}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    configfile = _write_config(out, config, rerun=rerun)
    print(f"poisonscan: wrote {configfile}", file=sys.stderr)
    since = time.time()
    if not args.dry_run:
        _claim(out)
    try:
        ok = _run_workflow(root, out, configfile, _profile_args(profile, args.cores),
                           args.dry_run)  # fmt: skip
    finally:
        if not args.dry_run:
            _release(out)
    if not ok:
        print(f"poisonscan: error: {failure_line(out, since, rerun)}", file=sys.stderr)
        return EXIT_FAILED
    if not args.dry_run:
        print(f"poisonscan: results in {out / 'results'}; report: poisonscan report --out {out}",
              file=sys.stderr)  # fmt: skip
    return 0


def _report_command(args: argparse.Namespace) -> int:
    root = workflow_root()
    out = args.out.resolve()
    if not (out / CONFIG_NAME).is_file():
        raise CliError(f"{out} holds no {CONFIG_NAME} of a scan (run poisonscan scan first)")
    report = (args.output or out / "report.html").resolve()
    if report.suffix not in (".html", ".zip"):
        raise CliError(f"--output {report}: the report file must end in .html or .zip")
    overview = out / "results" / "overview" / "index.html"
    audit = bool((yaml.safe_load((out / CONFIG_NAME).read_text()) or {}).get("audit"))
    if audit and report.suffix == ".html" and overview.is_file():
        # an audit's report opens on its verdicts; Snakemake's report (the workflow, every
        # output) is linked from there
        details = report.with_name(f"{report.stem}-workflow.html")
        ok = _report(root, out, details)
        if ok:
            front_page(overview, details, report)
            print(f"poisonscan: report written to {report} (the workflow and every output: "
                  f"{details})", file=sys.stderr)  # fmt: skip
        return 0 if ok else EXIT_FAILED
    ok = _report(root, out, report)
    if ok:
        print(f"poisonscan: report written to {report}", file=sys.stderr)
    return 0 if ok else EXIT_FAILED


def front_page(overview: Path, details: Path, report: Path) -> None:
    """The first page of an audit's report: the overview page (verdicts, the model's
    accuracy, suspicious files; its figure embedded) with a link to Snakemake's report."""
    import html

    from poisonscan.storage import atomic_path

    page = overview.read_text()
    name = html.escape(details.name)
    link = f"<p class='details'>The workflow, its parameters and every output: <a href='{name}'>"
    link += f"{name}</a></p>"
    head = "<h1>poisonscan: overview</h1>"
    page = page.replace(head, head + link, 1) if head in page else page + link
    with atomic_path(report) as tmp:
        tmp.write_text(page)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poisonscan`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "scan":
            return _scan(args)
        return _report_command(args)
    except CliError as err:
        print(f"poisonscan: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # python -m poisonscan.cli
    sys.exit(main())
