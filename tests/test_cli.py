"""The poisonscan command (poisonscan.cli): the config it writes, its errors, the workflow API."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, random_dataset
from PIL import Image

from poisonscan import cli
from poisonscan.config import load_schema, validate_config
from poisonscan.data import make_synthetic_signs

SCHEMA = load_schema(REPO / "config" / "schema.yaml")
# The audit mode (top-level key `audit`) is another part of issue 18; tests that need the
# workflow to accept the written config wait for it.
HAS_AUDIT = "audit" in SCHEMA["properties"]
needs_audit = pytest.mark.skipif(not HAS_AUDIT, reason="the config schema has no audit mode yet")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POISONSCAN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three classes of 12 synthetic signs as PNG, one class in grayscale."""
    ds = make_synthetic_signs(12, 0, 0, 32, classes=[0, 8, 9])
    root = tmp_path / "data"
    for i, (x, y) in enumerate(zip(ds.x_train, ds.y_train, strict=True)):
        (root / f"class{y}").mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(x)
        (img.convert("L") if y == 9 else img).save(root / f"class{y}" / f"{i:03d}.png")
    return root


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("poisonscan: error:")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


def test_scan_writes_the_audit_config_of_the_folder(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    cli.main(["scan", str(folder), "--out", str(out), "--image-size", "32", "--dry-run"])
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written == {
        "audit": True,
        "dataset": {"name": "folder", "path": str(folder.resolve()), "image_size": 32},
    }
    # how to rerun, verbatim from any directory
    rerun = f"# Rerun with: poisonscan scan {folder.resolve()} --out {out} --image-size 32\n"
    assert rerun in (out / "config.yaml").read_text()
    # the sections it writes are valid (with the audit mode, as they are)
    cfg = copy.deepcopy(written)
    if not HAS_AUDIT:
        del cfg["audit"]
        cfg["scenarios"] = {"control": {"attack": "clean", "target": 0}}
        cfg["clustering"] = {"methods": ["hc_l2", "ac"], "spray": {"n_neighbors": 5}}
        cfg["distances"] = {"methods": ["l2"]}
    assert validate_config(cfg, SCHEMA)["dataset"]["on_bad_input"] == "stop"


def test_scan_with_a_torchscript_model_picks_a_gradient_explanation(
    folder: Path, tmp_path: Path
) -> None:
    import torch

    from poisonscan.models import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        model = torch.jit.trace(build_model("net", 3, 32).eval(), torch.zeros(1, 3, 32, 32))
    model.save(str(tmp_path / "m.pt"))
    cfg = cli.build_config(folder, tmp_path / "m.pt", 32)
    assert cfg["model"] == {"file": str((tmp_path / "m.pt").resolve()), "input_size": 32}
    assert cfg["explain"] == {"method": "saliency"}
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros((2, 8, 8, 3), np.uint8), y=np.arange(2))
    assert cli.build_config(npz)["dataset"]["name"] == "npz"


@pytest.mark.parametrize("what", ["missing", "file"])
def test_a_bad_dir_is_one_line_and_exit_code_2(
    what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "nope"
    if what == "file":
        bad.write_text("x")
    rc = cli.main(["scan", str(bad), "--out", str(tmp_path / "out")])
    assert rc == 2
    line = one_error_line(capsys)
    assert str(bad) in line and ("does not exist" in line or "is not a folder" in line)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_bad_model_file_is_one_line_and_exit_code_2(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.pt").write_text("weights, promised")
    rc = cli.main(["scan", str(folder), "--model", str(tmp_path / "m.pt"),
                   "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 2
    assert "is neither a safetensors checkpoint nor a TorchScript file" in one_error_line(capsys)


def test_a_torch_save_checkpoint_is_named_as_such_and_never_unpickled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: Path
) -> None:
    """Problem 9 of issue 34: an ordinary torch.save checkpoint was called "corrupted"."""
    import torch

    from poisonscan.models import build_model

    state = build_model("net", 3, 32).state_dict()
    torch.save(state, tmp_path / "m.pt")
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    for name, what in (("m.pt", "is a torch.save checkpoint"), ("old.pt", "is a pickle")):
        rc = cli.main(["scan", str(folder), "--model", str(tmp_path / name),
                       "--out", str(tmp_path / "out")])  # fmt: skip
        line = one_error_line(capsys)
        assert rc == 2 and what in line and "save_file(model.state_dict()" in line


@needs_audit
def test_a_model_of_another_class_count_is_refused_before_any_work(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    from poisonscan.models import build_model

    save_file(build_model("net", 5, 32).state_dict(), str(tmp_path / "m.safetensors"))
    out = tmp_path / "out"
    rc = cli.main(["scan", str(folder), "--model", str(tmp_path / "m.safetensors"),
                   "--out", str(out), "--dry-run"])  # fmt: skip
    assert rc == 2
    assert "the model outputs 5 classes, the dataset has 3" in one_error_line(capsys)
    assert not (out / "results").exists()


def test_bad_input_stops_with_every_problem(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "class0" / "notes.txt").write_text("x")
    (folder / "empty").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("mine: 1\n")  # the user's file in --out
    rc = cli.main(["scan", str(folder), "--out", str(out), "--dry-run"])
    assert rc == 2
    err = capsys.readouterr().err
    if HAS_AUDIT:
        assert "2 problems in" in err and "notes.txt: not an image file" in err
        assert "empty/: empty class folder" in err
    assert "Traceback" not in err
    # nothing is written before the input is valid (issue 34, problem 3)
    assert [p.name for p in out.iterdir()] == ["config.yaml"]
    assert (out / "config.yaml").read_text() == "mine: 1\n"


def test_out_must_not_touch_the_dataset_or_the_users_files(folder: Path, tmp_path: Path) -> None:
    """Problem 3 of issue 34: --out inside DIR, and files in --out poisonscan did not write."""
    data = [folder.resolve()]
    for inside in (folder, folder / "out", folder / "class0" / "x"):
        with pytest.raises(cli.CliError, match="is inside the dataset folder"):
            cli.check_out(inside.resolve(), data)
    cli.check_out(tmp_path / "new", data)  # missing: created later
    cli.check_out(tmp_path, data)  # holds the dataset folder, writes beside it: fine
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("x")  # never written by a scan: fine
    cli.check_out(out, data)
    for own in cli.OWN_ENTRIES:  # a folder or report of something else
        (out / own).mkdir()
        with pytest.raises(cli.CliError, match=f"{out / own} exists but .* holds no config"):
            cli.check_out(out, data)
        (out / own).rmdir()
    (out / "config.yaml").write_text("# my own settings\nlr: 1\n")
    with pytest.raises(cli.CliError, match=f"{out / 'config.yaml'} exists and was not written"):
        cli.check_out(out, data)
    (out / "config.yaml").unlink()
    cli._write_config(out, {"audit": True})
    (out / "results").mkdir()
    cli.check_out(out, data)  # a scan's own folder: scanned again
    (out / "file").write_text("x")
    with pytest.raises(cli.CliError, match="is a file"):
        cli.check_out(out / "file", data)


def test_out_inside_the_folder_is_refused_before_anything_is_written(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(folder.rglob("*"))
    rc = cli.main(["scan", str(folder), "--out", str(folder / "scan"), "--dry-run"])
    assert rc == 2
    assert "is inside the dataset folder" in one_error_line(capsys)
    assert sorted(folder.rglob("*")) == before


def test_an_audits_report_opens_on_its_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Problem 7 of issue 34: the report's first page was Snakemake's workflow page."""
    out = tmp_path / "out"
    (out / "results" / "overview").mkdir(parents=True)
    cli._write_config(out, {"audit": True, "dataset": {"name": "folder", "path": "/d"}})
    (out / "results" / "overview" / "index.html").write_text(
        "<html><body><h1>poisonscan: overview</h1><h2>Verdicts: audit</h2></body></html>"
    )
    made = []
    monkeypatch.setattr(cli, "_report", lambda root, o, path: made.append(path) or True)
    assert cli.main(["report", "--out", str(out)]) == 0
    assert made == [out / "report-workflow.html"]  # Snakemake's report, linked
    page = (out / "report.html").read_text()
    assert page.index("href='report-workflow.html'") < page.index("<h2>Verdicts: audit</h2>")
    assert "(the workflow and every output:" in capsys.readouterr().err


CHROMIUM = next(
    (
        path
        for name in ("chromium", "chromium-browser", "google-chrome")
        if (path := shutil.which(name))
    ),
    None,
)
SCREEN = (1200, 900)  # the browser window: what the first screen of the page shows


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page`` (a fresh profile, nothing fetched from the network)."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}",
            f"--window-size={SCREEN[0]},{SCREEN[1]}", *args, page.as_uri()]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)"
)
def test_the_reports_first_screen_shows_the_verdicts_in_chromium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 34, "done when": the report's first page shows the verdicts, checked in a
    browser. The overview page is made by the overview rule's function from an audit's files
    (tests/test_api.py's two classes, one poisoned), ``poisonscan report`` puts it first
    (Snakemake's report, linked, is stubbed); Chromium renders report.html: its DOM holds
    the verdict table, and the first screen of the screenshot shows the poisoned class's row
    (its colour, rows 1-900). The screenshot: test output, chromium/report.png."""
    from test_api import finished_audit

    from poisonscan.steps.report import overview_page

    out = tmp_path / "out"
    finished_audit(out)
    base = out / "results" / "folder" / "audit" / "verdicts"
    Image.new("RGB", (400, 200), (31, 119, 180)).save(base / "verdicts.png")
    overview_page(out / "results" / "overview", [("audit", base / "verdicts.csv",
                  base / "verdicts.png")], suspicious=base / "suspicious.csv",
                  details=base / "verdicts.json")  # fmt: skip
    cli._write_config(out, {"audit": True, "dataset": {"name": "folder", "path": "/d"}})
    monkeypatch.setattr(cli, "_report", lambda root, o, path: path.write_text("<html/>") or True)
    assert cli.main(["report", "--out", str(out)]) == 0
    report = out / "report.html"

    dom = chromium(report, tmp_path, "--dump-dom").stdout
    assert "<h2>Verdicts: audit</h2>" in dom and "1 of 2 classes poisoned: 1 (dogs)" in dom
    assert '<tr class="poisoned"><td>1</td><td>dogs</td><td>poisoned</td>' in dom
    assert "model accuracy 0.950" in dom and "/d/dogs/a.png" in dom
    assert dom.index("Verdicts: audit") < dom.index("Suspicious images")

    shot = tmp_path / "chromium" / "report.png"
    shot.parent.mkdir(exist_ok=True)
    chromium(report, tmp_path, f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (SCREEN[1], SCREEN[0])
    assert (pixels.min(axis=2) < 128).mean() > 0.002  # text drawn, not a blank page
    poisoned_row = np.all(pixels == (0xFD, 0xE0, 0xDC), axis=2)  # tr.poisoned's background
    assert poisoned_row.sum() > 500
    assert (np.all(pixels == (31, 119, 180), axis=2)).sum() > 1000  # the verdicts' figure


def test_report_needs_a_scan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--out", str(tmp_path)]) == 2
    assert "holds no config.yaml of a scan" in one_error_line(capsys)


def test_the_workflow_is_found_beside_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.workflow_root() == REPO
    monkeypatch.setenv("POISONSCAN_WORKFLOW", str(tmp_path))  # no Snakefile there: next one
    assert cli.workflow_root() == REPO
    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    (tmp_path / "rules").mkdir()
    assert cli.workflow_root() == tmp_path


def test_the_users_config_replaces_the_shipped_scenarios(
    folder: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Through the API, as the command runs it: the workdir holds config/config.yaml with the
    shipped scenario sticker_p15_s3 (source 2), which must not be merged into ours."""
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    config = {
        "dataset": {"name": "folder", "path": str(folder)},
        "scenarios": {"control": {"attack": "clean", "target": 0}},
        "clustering": {"methods": ["hc_l2"], "spray": {"n_neighbors": 5}},
        "distances": {"methods": ["l2"]},
        "removal": {"methods": []},
    }
    configfile = work / "mine.yaml"
    configfile.write_text(yaml.safe_dump(config))
    args = cli._profile_args(REPO / "profiles" / "default", 1)
    assert args.set_threads  # the profile's settings arrive
    assert cli._run_workflow(REPO, work, configfile, args, dry_run=True)
    out = capfd.readouterr().out
    assert "results/folder/control/scan.csv" in out
    assert "sticker_p15_s3" not in out


def test_the_fingerprint_follows_what_the_loader_reads(folder: Path, tmp_path: Path) -> None:
    """Every edit of the folder changes the fingerprint; hidden files and a re-read do not."""
    import os

    from poisonscan.datasets.content import content_fingerprint

    section = {"name": "folder", "path": str(folder)}
    seen = {content_fingerprint(section)}
    (folder / ".DS_Store").write_bytes(b"x")  # hidden: the loader ignores it
    (folder / "class0" / ".thumb").write_bytes(b"x")
    assert content_fingerprint(section) in seen
    image = folder / "class0" / "000.png"
    Image.open(image).rotate(90).save(image)  # an image rotated in place
    os.utime(image, ns=(1, 1))  # even with an older time than before
    edits = [
        lambda: (folder / "class0" / "new.png").write_bytes(image.read_bytes()),  # added
        lambda: (folder / "class0" / "new.png").rename(folder / "class8" / "new.png"),  # moved
        lambda: (folder / "class11").mkdir(),  # a class added
        lambda: (folder / "class8" / "new.png").unlink(),  # removed
    ]
    for edit in [lambda: None, *edits]:
        edit()
        new = content_fingerprint(section)
        assert new not in seen
        seen.add(new)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros((2, 8, 8, 3), np.uint8), y=np.arange(2))
    before = content_fingerprint({"name": "npz", "path": str(npz)})
    np.savez(npz, x=np.ones((2, 8, 8, 3), np.uint8), y=np.arange(2))
    os.utime(npz, ns=(2, 2))
    assert content_fingerprint({"name": "npz", "path": str(npz)}) != before


@needs_audit
def test_editing_the_folder_reruns_the_audit_and_nothing_else_does(
    folder: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Problem 1 of issue 34: the same command after an edit of DIR answered "Nothing to be
    done" and kept the old verdicts. The dataset file (which every audit rule reads) is built,
    then planned again only after the folder changed, and then holds the new class."""
    from poisonscan.storage import read_dataset

    out = tmp_path / "out"
    out.mkdir()
    configfile = cli._write_config(out, cli.build_config(folder, image_size=32))
    args = cli._profile_args(REPO / "profiles" / "default", 1)
    dataset = ["results/folder/dataset.h5"]

    def planned() -> bool:
        capfd.readouterr()
        assert cli._run_workflow(REPO, out, configfile, args, dry_run=True, targets=dataset)
        text = capfd.readouterr().out
        return "make_dataset" in text and "Nothing to be done" not in text

    def build() -> None:  # in a process of its own: the job's script needs real stdout
        cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"),
               "-d", str(out), "--configfile", str(configfile), "--replace-workflow-config",
               "--cores", "1", *dataset]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    build()
    assert read_dataset(out / dataset[0]).n_classes == 3
    assert not planned()  # the same folder: nothing to do
    (folder / ".DS_Store").write_bytes(b"x")
    assert not planned()  # a hidden file the loader ignores
    shutil.copytree(folder / "class8", folder / "class7")  # a class added
    assert planned()
    build()
    assert read_dataset(out / dataset[0]).class_names == ["class0", "class7", "class8", "class9"]
    assert not planned()


def _locked(out: Path, owner: dict | None = None) -> Path:
    import json

    locks = out / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.input.lock").write_text("results/folder/dataset.h5\n")
    if owner is not None:
        (out / ".snakemake" / cli.OWNER_NAME).write_text(json.dumps(owner))
    return locks


def test_a_lock_left_by_a_killed_scan_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    """Problem 5 of issue 34: after kill -9 the next run stopped on Snakemake's lock."""
    import os
    import socket

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    out = tmp_path / "out"
    locks = _locked(out, {"pid": dead.pid, "host": host, "start": None})
    assert "removed the lock left by a scan that stopped" in cli.recover_lock(out, "cmd")
    assert not locks.exists() and not (out / ".snakemake" / cli.OWNER_NAME).exists()
    assert cli.recover_lock(out, "cmd") is None  # nothing to do
    me = {"pid": os.getpid(), "host": host, "start": cli._process_start(os.getpid())}
    _locked(out, me)  # a scan that still runs here: never unlocked, even when asked
    for unlock in (False, True):
        with pytest.raises(cli.CliError, match=f"scan \\(process {os.getpid()}\\) is running"):
            cli.recover_lock(out, "cmd", unlock)
    if me["start"] is not None:  # the same pid, another process (reused after the kill)
        _locked(out, {**me, "start": "0"})
        assert cli.recover_lock(out, "cmd")
    locks = _locked(out)  # no owner (a plain Snakemake run): only --unlock removes it
    with pytest.raises(cli.CliError, match="remove the lock and scan: cmd --unlock$"):
        cli.recover_lock(out, "cmd")
    _locked(out, {"pid": 1, "host": host + "-elsewhere"})
    with pytest.raises(cli.CliError, match="locked by a scan on .*-elsewhere"):
        cli.recover_lock(out, "cmd")
    assert cli.recover_lock(out, "cmd", unlock=True) == f"removed the lock on {out} (--unlock)"
    assert not locks.exists()


def test_the_advice_of_a_lock_works_verbatim(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shlex

    out = tmp_path / "out"
    cli.main(["scan", str(folder), "--out", str(out), "--dry-run"])
    capsys.readouterr()
    locks = _locked(out)
    assert cli.main(["scan", str(folder), "--out", str(out), "--dry-run"]) == 2
    line = one_error_line(capsys)
    command = shlex.split(line.rsplit("remove the lock and scan: ", 1)[1])
    assert command[:2] == ["poisonscan", "scan"] and command[-1] == "--unlock"
    assert cli.main([*command[1:], "--dry-run"]) == 0
    assert not list(locks.glob("*.lock"))


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until ``path`` holds ``text``; fails if ``proc`` ends first or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while not (path.is_file() and text in path.read_text(errors="replace")):
        assert proc.poll() is None, f"the scan ended (code {proc.returncode}) before {text!r}"
        assert time.monotonic() < end, f"no {text!r} in {path} after {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_scan_killed_in_training_resumes_and_the_api_gives_its_verdicts(
    folder: Path, tmp_path: Path
) -> None:
    """Issue 34, "done when": kill -9 then the same command resuming (problem 5: it stopped on
    Snakemake's lock, whose advice did not work), and the API returning the CLI's verdicts.

    The scan's process group is killed with SIGKILL while its training step runs (its log's
    first line seen, no model file yet); the same command then removes the lock, reruns the
    training and ends with the verdicts. ``poisonscan.audit`` on that folder, with the same
    keys and out, runs the same scan: Snakemake finds nothing to redo (no file rewritten, so
    its config and workflow are the command's) and its verdict table is the CLI's
    verdicts.csv and console table. (A second scan in another folder would cost a minute.)
    """
    import csv
    import signal

    import pandas as pd

    import poisonscan

    out = tmp_path / "out"
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({"training": {"epochs": 2}}))
    argv = [sys.executable, "-m", "poisonscan.cli", "scan", str(folder), "--out", str(out),
            "--config", str(keys), "--cores", "2"]  # fmt: skip
    train_log = out / "results" / "logs" / "train" / "folder" / "audit.log"
    model = out / "results" / "folder" / "audit" / "model.safetensors"
    with open(tmp_path / "first.txt", "wb") as console:
        first = subprocess.Popen(argv, stdout=console, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
        try:
            _wait_for_line(train_log, "training net", first, timeout=300)
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # the scan and its running step
            first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not model.exists(), "the training ended before the kill"
    assert any((out / ".snakemake" / "locks").iterdir())  # what stopped the next run

    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    text = again.stdout + again.stderr
    assert again.returncode == 0, text[-4000:]
    assert f"removed the lock left by a scan that stopped (process {first.pid})" in text
    assert "rule train:" in text and model.is_file()  # the step killed, run again
    base = out / "results" / "folder" / "audit" / "verdicts"
    with open(base / "verdicts.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["name"] for r in rows) == ["class0", "class8", "class9"]
    assert all(r["verdict"] in ("clean", "poisoned", "inconclusive", "too_small") for r in rows)
    # the console's verdict table (the poisoned classes, else the five of largest z)
    lines = text.split("\nAudit: ", 1)[1].splitlines()[2:]
    table = [line.split()[:3] for line in lines[: next(
        i for i, line in enumerate(lines) if not line[:1].isdigit())]]  # fmt: skip
    console_verdicts = {tuple(cells) for cells in table}
    poisoned = sum(r["verdict"] == "poisoned" for r in rows)
    assert len(console_verdicts) == (poisoned or min(len(rows), 5))
    assert console_verdicts <= {(r["class"], r["name"], r["verdict"]) for r in rows}
    assert not (out / ".snakemake" / "locks").exists() or not any(
        (out / ".snakemake" / "locks").iterdir()
    )

    written = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*") if p.is_file()}
    result = poisonscan.audit(folder, out=out, cores=2, training={"epochs": 2})
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing redone
    pd.testing.assert_frame_equal(result.verdicts, pd.read_csv(base / "verdicts.csv"))
    assert {(str(r["class"]), r["name"], r["verdict"])
            for r in result.verdicts.to_dict("records")} == console_verdicts  # fmt: skip
    with open(base / "suspicious.csv") as f:
        assert result.suspicious_files == [r["path"] for r in csv.DictReader(f)]


def test_a_failed_step_ends_with_one_line_saying_what_to_do(tmp_path: Path) -> None:
    """Problem 9 of issue 34: the cause sat inside ~117 lines of tracebacks."""
    from poisonscan.rulelog import RERUN

    out = tmp_path / "out"
    old = out / "results" / "logs" / "poison" / "folder" / "audit.log"
    old.parent.mkdir(parents=True)
    old.write_text("2026 ERROR poisonscan: step failed: OSError: an older failure\n")
    import os

    os.utime(old, (1, 1))  # written before this run: not this run's failure
    log = out / "results" / "logs" / "train" / "folder" / "audit.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026 INFO poisonscan: epoch 1\n2026 ERROR poisonscan: step failed: "
                   "ValueError: the model outputs 5 classes\nTraceback ...\n")  # fmt: skip
    line = cli.failure_line(out, time.time() - 5, "poisonscan scan /d --out /o")
    assert line == (
        f"step train failed: ValueError: the model outputs 5 classes (log: {log}); after fixing "
        "the cause, run the same command again: poisonscan scan /d --out /o (it resumes where "
        "it stopped)"
    )
    log.write_text(f"ERROR poisonscan: step failed: StoreError: x.zarr is damaged; {RERUN}: it "
                   "recomputes x.zarr\n")  # fmt: skip
    line = cli.failure_line(out, time.time() - 5, "poisonscan scan /d --out /o")
    assert "damaged; run the same command again: poisonscan scan /d --out /o: it recomputes" in line
    log.unlink()
    assert "the workflow stopped" in cli.failure_line(out, time.time() - 5, "c")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from poisonscan import __version__

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"poisonscan {__version__}"


def test_config_file_and_model_options(folder: Path, tmp_path: Path) -> None:
    """Problem 4 of issue 34: no way to pass model.normalization or any config key."""
    from safetensors.torch import save_file

    from poisonscan.models import build_model

    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "training: {epochs: 3}\ndataset: {test_fraction: 0.3, image_size: 16}\n"
        "model: {normalization: {mean: [0.1, 0.1, 0.1], std: [0.2, 0.2, 0.2]}}\n"
    )
    keys = cli.read_config_file(mine)
    cfg = cli.build_config(folder, image_size=32, keys=keys, skip_bad=True)
    assert cfg["training"] == {"epochs": 3} and cfg["audit"] is True
    assert cfg["dataset"] == {"name": "folder", "path": str(folder.resolve()),
                              "test_fraction": 0.3, "image_size": 32,  # the option wins
                              "on_bad_input": "skip"}  # fmt: skip
    for text, match in (("scenarios: {a: {attack: clean}}", "'scenarios' is for experiments"),
                        ("audit: false", "a scan is an audit"), ("- 1", "expected a mapping"),
                        ("training: {epochs: [", "line 1, column")):  # fmt: skip
        mine.write_text(text)
        with pytest.raises(cli.CliError, match=match):
            cli.read_config_file(mine)
    with pytest.raises(cli.CliError, match="no such file"):
        cli.read_config_file(tmp_path / "none.yaml")
    assert cli.parse_normalization("0.485,0.456,0.406/0.229,0.224,0.225") == {
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # fmt: skip
    assert cli.parse_normalization("0.5/0.25") == {"mean": [0.5] * 3, "std": [0.25] * 3}
    for bad in ("0.5", "0.5,0.5/1", "a/b", "0/0"):
        with pytest.raises(cli.CliError, match="--normalization"):
            cli.parse_normalization(bad)
    # a model: its normalisation from the option, from the config, or from the sidecar a scan
    # writes beside it (results/.../model.safetensors.json); otherwise unknown
    model = tmp_path / "model.safetensors"
    save_file(build_model("net", 3, 32).state_dict(), str(model))
    plain = cli.build_config(folder, model)
    assert cli.normalization_unknown(plain)
    norm = {"mean": [0.3] * 3, "std": [0.4] * 3}
    cfg = cli.build_config(folder, model, normalization=norm, input_size=32)
    assert cfg["model"]["normalization"] == norm and cfg["model"]["input_size"] == 32
    assert not cli.normalization_unknown(cfg)
    import json

    sidecar = {"architecture": "net", "normalization": {"mean": [0.4, 0.5, 0.6],
                                                        "std": [0.2, 0.2, 0.3]}}  # fmt: skip
    model.with_name("model.safetensors.json").write_text(json.dumps(sidecar))
    cfg = cli.build_config(folder, model)
    assert cfg["model"]["normalization"] == sidecar["normalization"]
    assert cfg["model"]["name"] == "net" and not cli.normalization_unknown(cfg)
    cfg = cli.build_config(folder, model, keys={"model": {"normalization": norm}})
    assert cfg["model"]["normalization"] == norm  # the user's config wins over the sidecar


@needs_audit
def test_scan_takes_a_config_file_and_warns_of_an_unknown_normalization(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    from poisonscan.models import build_model

    model = tmp_path / "m.safetensors"
    save_file(build_model("net", 3, 32).state_dict(), str(model))
    mine = tmp_path / "mine.yaml"
    mine.write_text("training: {epochs: 3}\nverdicts: {min_groups: 5}\n")
    out = tmp_path / "out"
    rc = cli.main(["scan", str(folder), "--model", str(model), "--config", str(mine),
                   "--out", str(out), "--dry-run"])  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    assert f"how {model} normalises its input is unknown" in err
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["training"] == {"epochs": 3} and written["verdicts"] == {"min_groups": 5}
    assert f"--config {mine}" in (out / "config.yaml").read_text()  # in the rerun line
    rc = cli.main(["scan", str(folder), "--normalization", "0/1", "--out", str(out)])
    assert rc == 2 and "describe a --model" in one_error_line(capsys)


@needs_audit
def test_stray_files_and_line_breaks_in_names(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Problem 9 of issue 34: one Thumbs.db stopped the scan with advice the CLI could not
    follow; a line break in a file name broke clean_list.txt."""
    (folder / "class0" / "Thumbs.db").write_bytes(b"\0")
    image = (folder / "class8").iterdir().__next__()
    shutil.copy(image, folder / "class8" / "two\nlines.png")
    out = tmp_path / "out"
    assert cli.main(["scan", str(folder), "--out", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "with poisonscan scan: add --skip-bad:" in err
    assert "two\\nlines.png: file name holds a line break" in err  # escaped: one line
    assert "Thumbs.db: not an image file" in err
    assert cli.main(["scan", str(folder), "--out", str(out), "--dry-run", "--skip-bad"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["dataset"]["on_bad_input"] == "skip"


def test_a_built_wheel_installed_into_a_fresh_venv_gives_a_working_command(
    folder: Path, tmp_path: Path
) -> None:
    """Problem 8 of issue 34: a non-editable install gave a command without its workflow.

    The wheel is built from a copy of the checkout and pip-installed (no dependencies) into a
    fresh virtual environment, whose heavy dependencies (torch, Snakemake ...) are this
    environment's: a ``.pth`` file written after the install adds only this environment's
    site-packages folder (its own ``.pth`` files, the editable install of the checkout's
    ``src`` among them, are not read). The venv's ``poisonscan`` command, run outside the
    checkout, imports poisonscan from the wheel, plans a scan of a folder (a dry run: the
    image checks, the config against the wheel's schema, the packaged workflow's jobs) with
    the Snakefile inside the installed package, then runs it to its verdicts."""
    import sysconfig

    src = tmp_path / "src"
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "Snakefile",
                 "config/schema.yaml", "src", "rules", "workflow", "envs", "profiles"):  # fmt: skip
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("poisonscan-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # pip of this environment installs into the venv (--python); nothing else is installed
    install = subprocess.run([*pip, "--python", str(python), "install", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([python, "-c", where], text=True).strip())
    assert site.is_relative_to(venv) and (site / "poisonscan" / "_workflow" / "Snakefile").is_file()
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "zz-poisonscan-test-deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))

    env = {k: v for k, v in os.environ.items()
           if k not in ("POISONSCAN_WORKFLOW", "PYTHONPATH", "VIRTUAL_ENV")}  # fmt: skip
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "elsewhere"  # not the checkout: nothing is imported from the source tree
    work.mkdir()
    which = "import poisonscan.cli as c, torch; print(c.__file__, c.workflow_root())"
    found = subprocess.run([python, "-c", which], capture_output=True, text=True, env=env,
                           cwd=work, timeout=300)  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
    module, root = map(Path, found.stdout.split())
    assert module == site / "poisonscan" / "cli.py" and root == module.parent / "_workflow"
    command = venv / "bin" / "poisonscan"
    assert command.read_text().startswith(f"#!{python}")
    proc = subprocess.run([str(command), "scan", str(folder), "--out", str(tmp_path / "out"),
                           "--dry-run"], capture_output=True, text=True, env=env, cwd=work,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert f"Snakefile: {site / 'poisonscan' / '_workflow' / 'Snakefile'}" in text
    assert str(REPO) not in text  # nothing of the checkout, the Snakefile's rules included
    assert "make_dataset" in text and "rule train:" in text
    # and the installed command runs the scan to its verdicts (one epoch: the wheel is tested)
    (work / "short.yaml").write_text("training: {epochs: 1}\n")
    proc = subprocess.run([str(command), "scan", str(folder), "--out", str(tmp_path / "out"),
                           "--config", str(work / "short.yaml"), "--cores", "2"],
                          capture_output=True, text=True, env=env, cwd=work,
                          timeout=900)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    verdicts = tmp_path / "out" / "results" / "folder" / "audit" / "verdicts" / "verdicts.csv"
    assert verdicts.is_file() and len(verdicts.read_text().splitlines()) == 1 + 3  # 3 classes


def sign_folder(root: Path, n: int, poisoned: bool) -> list[str]:
    """An image folder from the synthetic generator (PNG of mixed sizes and modes); with
    ``poisoned``, 15 % of class 5 are 50 km/h signs with a 3x3 yellow sticker (dirty label).
    Returns the poisoned files' names."""
    import numpy as np
    from PIL import Image

    from poisonscan.data import make_synthetic_signs

    ds = make_synthetic_signs(n_train_per_class=n, n_test_per_class=5, seed=4)
    names = [f"{i:02d}_{c.replace(' ', '_')}" for i, c in enumerate(ds.class_names)]
    for i, (x, y) in enumerate(zip(ds.x_train, ds.y_train, strict=True)):
        folder = root / names[y]
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(x)
        img = img.resize((48, 48)) if i % 3 == 1 else img  # any size
        img = img.convert("RGBA") if i % 5 == 2 else img  # any mode
        img.save(folder / f"img{i:05d}.png")
    if not poisoned:
        return []
    rng = np.random.default_rng(0)
    files = []
    for j, i in enumerate(np.flatnonzero(ds.y_train == 2)[: round(0.15 * n / 0.85)]):
        x = ds.x_train[i].copy()
        r, c = 16 + rng.integers(0, 4), 16 + rng.integers(0, 2)
        x[r : r + 3, c : c + 3] = [245, 255, 0]
        files.append(f"extra{j:04d}.png")
        Image.fromarray(x).save(root / names[5] / files[-1])
    return files


@pytest.mark.slow
@pytest.mark.parametrize("poisoned", [True, False], ids=["hidden-sticker", "clean"])
def test_scan_finds_the_poisoned_class_and_files_and_nothing_in_a_clean_folder(
    tmp_path: Path, poisoned: bool
) -> None:
    """The whole command on a folder of PNG files: the hidden poison's class and files are
    named, and nothing else; a clean folder gives no poisoned class."""
    import csv
    import subprocess
    import sys

    files = set(sign_folder(tmp_path / "signs", 150, poisoned))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "poisonscan.cli", "scan", str(tmp_path / "signs"), "--out",
         str(out), "--cores", "2"], capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    base = out / "results" / "folder" / "audit" / "verdicts"
    with open(base / "verdicts.csv") as f:
        verdicts = {r["name"]: r["verdict"] for r in csv.DictReader(f)}
    with open(base / "suspicious.csv") as f:
        suspicious = [Path(r["path"]) for r in csv.DictReader(f)]
    poisoned_classes = sorted(name for name, v in verdicts.items() if v == "poisoned")
    if poisoned:
        assert poisoned_classes == ["05_speed_limit_80"]
        # every flagged file is a poisoned one, and every poisoned file is flagged: those in
        # the held-out test split too (issue 34, problem 2; 5 of 26 at seed 4)
        assert suspicious and all(p.name in files and p.parent.name == "05_speed_limit_80"
                                  for p in suspicious)  # fmt: skip
        assert {p.name for p in suspicious} == files
        with open(base / "suspicious.csv") as f:
            assert {r["split"] for r in csv.DictReader(f)} == {"train", "test"}
        kept = (base / "clean_list.txt").read_text().split()
        assert not {Path(k).name for k in kept} & {p.name for p in suspicious}
        assert len(kept) + len(suspicious) == len(list((tmp_path / "signs").rglob("*.png")))
    else:
        assert poisoned_classes == [] and suspicious == []
    assert "Audit:" in proc.stdout + proc.stderr


def test_a_scans_own_model_gives_the_same_heatmaps_when_scanned_again(
    folder: Path, tmp_path: Path
) -> None:
    """Issue 34, problem 4: the weights a scan trained, passed back with --model, are read with
    their own normalisation (from the sidecar), so predictions and heatmaps are the scan's; the
    assumed 0/1 normalisation would give other heatmaps."""
    import torch

    from poisonscan.checkpoints import load_checkpoint, save_checkpoint
    from poisonscan.explain import ExplainParams
    from poisonscan.explain.methods import make_explainer
    from poisonscan.inference import Normalization
    from poisonscan.models import build_model
    from poisonscan.usermodel import load_user_model

    data = random_dataset(n_classes=3, n_train=8, n_test=2)
    torch.manual_seed(0)
    ckpt = tmp_path / "results" / "folder" / "audit" / "model.safetensors"
    ckpt.parent.mkdir(parents=True)
    save_checkpoint(ckpt, build_model("net", 3).eval(), "net", data,
                    Normalization.fit(data.x_train))  # fmt: skip
    cfg = validate_config(cli.build_config(folder, model=ckpt), SCHEMA)
    params = ExplainParams.from_config(cfg["explain"])

    def heatmaps(model: torch.nn.Module, norm: Normalization) -> np.ndarray:
        x = norm.to_tensor(data.x_train[:6])
        with make_explainer(model, params, norm, tuple(x.shape[1:])) as explainer:
            return explainer(x, torch.as_tensor(data.y_train[:6])).detach().numpy()

    trained, norm, _ = load_checkpoint(ckpt, torch.device("cpu"))
    user = load_user_model(cfg["model"], 3, 32)
    assert user.normalization == norm  # the sidecar's, not 0/1
    again = heatmaps(user.module, user.normalization)
    assert np.array_equal(heatmaps(trained, norm), again)
    assumed = Normalization((0.0,) * 3, (1.0,) * 3)
    assert not np.allclose(heatmaps(user.module, assumed), again)
