"""The workflow on a real single-node SLURM, compared array by array with a local run.

A session fixture brings up munged, slurmctld and slurmd (Debian's SLURM 22.05) as root on
this machine, with every state, spool and log file in a temporary directory and only local
ports. The tiny workflow of tests/test_workflow.py then runs through ``profiles/slurm``
(Snakemake's SLURM executor: every rule an ``sbatch`` job, the rule itself an ``srun`` step)
with ``dask: {cluster: slurm}``, so that the GW tiles of ``distances_gw`` are computed by
dask-jobqueue ``SLURMCluster`` workers, batch jobs submitted from inside the rule's own job.
Every stored array (zarr, HDF5, npz, safetensors) must equal the local run's bit for bit:
training and LRP are deterministic at the same thread count and the GW matrix is assembled
from the same tiles whichever workers solve them (``pot_exact``).

Where SLURM comes from: the fixture itself installs the packages (``apt-get install
slurmctld slurmd slurm-client munge``, with ``apt-get update`` when the lists are stale,
each bounded by a timeout) when the binaries are missing and the test runs as root. So
``make test`` -- what README documents and ``.ci/run`` calls, as root on a clean checkout --
runs it with no CI-only step, and a developer's root container does the same; daemons a
session starts would not outlive it anyway. The test skips, naming the reason, only where
the packages cannot be installed (not root, no apt-get, apt failing or timing out) or where
this machine already has a SLURM configuration of its own in /etc/slurm (see below).

Why /etc/slurm/slurm.conf: the SLURM executor's job step (snakemake-executor-plugin-slurm-
jobstep 0.6) removes every ``SLURM_*`` variable but the job's identity from the environment
of its inner ``srun``, ``SLURM_CONF`` included, so the job's ``srun`` finds only the default
configuration file. The fixture writes its configuration there (marked with its pid, so a
second session skips instead of taking it over) and removes it at teardown.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, stored_arrays
from test_workflow import SNAKEMAKE, TINY, write_config

pytestmark = pytest.mark.slow

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel", "munged")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# poisonscan tests/test_slurm.py, pid "
# The SLURM run's limit. Each job parses the workflow twice (the job step and its srun), and
# the status checks come at most every few seconds: on an idle 2-core machine the run takes
# a few minutes, on a shared one much longer.
RUN_TIMEOUT = 1800
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])


def _which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH_PATH)


def _tail(text: str, n: int = 1500) -> str:
    return text.strip()[-n:]


def install_slurm() -> str | None:
    """Install the SLURM and munge packages where missing; the reason it can't, or None."""
    missing = [b for b in BINARIES if _which(b) is None]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"SLURM is not installed ({', '.join(missing)} missing) and installing needs root"
    apt = _which("apt-get")
    if apt is None:
        return f"SLURM is not installed ({', '.join(missing)} missing) and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", *PACKAGES]
    # Keep the packages' init scripts from starting system daemons (/etc/slurm has no
    # configuration yet, and ours use their own key, socket and ports).
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode != 0:  # stale or missing package lists
            subprocess.run([apt, "update"], capture_output=True, env=env, timeout=180)
            proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=300)
    except subprocess.TimeoutExpired as err:
        return f"`{' '.join(err.cmd)}` did not finish in {err.timeout:.0f} s"
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    if proc.returncode != 0:
        return f"`apt-get install {' '.join(PACKAGES)}` failed: {_tail(proc.stderr, 600)}"
    missing = [b for b in BINARIES if _which(b) is None]
    return f"{', '.join(missing)} missing after installing {PACKAGES}" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_system_conf() -> str | None:
    """The reason /etc/slurm/slurm.conf can't be ours, or None."""
    if not SYSTEM_CONF.exists():
        return None
    first = SYSTEM_CONF.read_text().splitlines()[:1]
    if not first or not first[0].startswith(MARKER):
        return f"{SYSTEM_CONF} exists: this machine has a SLURM configuration of its own"
    pid = int(first[0][len(MARKER) :])
    if pid != os.getpid() and _pid_alive(pid):
        return f"another test session (pid {pid}) runs its SLURM with {SYSTEM_CONF}"
    stop_stale_daemons(SYSTEM_CONF.read_text())  # left behind by a killed session
    return None


def stop_stale_daemons(conf: str) -> None:
    """Stop the daemons a killed session of this test left running (by their pid files)."""
    state = re.search(r"^StateSaveLocation=(.+)$", conf, re.M)
    pidfiles = re.findall(r"^Slurm(?:ctld|d)PidFile=(.+)$", conf, re.M)
    if state:
        pidfiles.append(str(Path(state[1]).parent / "munge" / "munged.pid"))
    for pidfile in pidfiles:
        try:
            pid = int(Path(pidfile).read_text().split()[0])
            if Path(f"/proc/{pid}/comm").read_text().strip() in ("slurmctld", "slurmd", "munged"):
                os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            continue


@dataclass
class Slurm:
    env: dict[str, str]  # environment of client commands and workflow runs
    logs: Path
    partition: str = "debug"

    def run(self, *cmd: str, timeout: float = 30) -> str:
        proc = subprocess.run([_which(cmd[0]), *cmd[1:]], capture_output=True, text=True,
                              env=self.env, timeout=timeout)  # fmt: skip
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        return proc.stdout

    def jobs(self) -> list[tuple[str, str, str, int]]:
        """(name, comment, state, CPUs) of every job still known to slurmctld."""
        out = self.run("squeue", "-h", "--states=all", "-o", "%j|%k|%T|%C")
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        return [(n, k, t, int(c)) for n, k, t, c in rows]

    def daemon_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{_tail(p.read_text(), 2000)}" for p in self.logs.glob("*"))


def _node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) as slurmd detects them."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True).stdout
    cpus = int(re.search(r"\bCPUs=(\d+)", out)[1])
    memory = int(re.search(r"\bRealMemory=(\d+)", out)[1])
    return cpus, memory


def slurm_conf(base: Path, node: str, cpus: int, memory: int, munge_socket: Path) -> str:
    return f"""{MARKER}{os.getpid()}
# A single-node cluster for one test session: everything under {base}, local ports.
ClusterName=poisonscan-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
# no cgroups (containers), no accounting daemon: sacct cannot answer, squeue can
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# finished jobs stay visible to squeue (the executor's status command) for an hour
MinJobAge=3600
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def leftover_steps(base: Path) -> list[int]:
    """Process ids of the slurmstepd processes of our slurmd (they run in its directory)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().startswith("slurmstepd") and Path(
                os.readlink(proc / "cwd")
            ).is_relative_to(base):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """munged + slurmctld + slurmd on this machine, until the end of the session."""
    reason = install_slurm() if sys.platform == "linux" else "SLURM needs Linux"
    if reason is None and os.geteuid() != 0:
        reason = "slurmd runs jobs only as root"
    reason = reason or claim_system_conf()
    if reason:
        pytest.skip(f"no single-node SLURM: {reason}")
    base = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log", "munge"):
        (base / sub).mkdir()
    (base / "munge").chmod(0o700)
    key = base / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = base / "munge" / "munge.socket"
    node = socket.gethostname().split(".")[0]
    cpus, memory = _node_hardware()
    # two CPUs at least: train and explain run with the local profile's 2 threads
    conf = slurm_conf(base, node, max(cpus, 2), memory - 512, munge_socket)
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.write_text(conf)
    (base / "log" / "slurm.conf").write_text(conf)
    env = {**os.environ, "SLURM_CONF": str(SYSTEM_CONF)}
    daemons: list[subprocess.Popen] = []
    cluster = Slurm(env=env, logs=base / "log")

    def start(*cmd: str) -> None:
        with open(base / "log" / f"{Path(cmd[0]).name}.out", "w") as log:
            daemons.append(
                subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=base / "log",
                    start_new_session=True,
                )
            )

    def client(*cmd: str) -> str:
        return subprocess.run([_which(cmd[0]), *cmd[1:]], capture_output=True, text=True,
                              env=env, timeout=30).stdout.strip()  # fmt: skip

    try:
        start(_which("munged"), "-F", "-f", f"--socket={munge_socket}", f"--key-file={key}",
              f"--pid-file={base}/munge/munged.pid", f"--seed-file={base}/munge/seed",
              f"--log-file={base}/log/munged.log")  # fmt: skip
        deadline = time.monotonic() + 30
        while not munge_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        start(_which("slurmctld"), "-D", "-f", str(SYSTEM_CONF))
        start(_which("slurmd"), "-D", "-f", str(SYSTEM_CONF))
        deadline = time.monotonic() + 90
        state = ""
        while time.monotonic() < deadline:
            state = client("sinfo", "-h", "-N", "-o", "%T")
            if state == "idle" or any(d.poll() is not None for d in daemons):
                break
            time.sleep(0.5)
        assert state == "idle", f"node state {state!r}\n{cluster.daemon_logs()}"
        yield cluster
    finally:
        ids = client("squeue", "-h", "-o", "%i").split()
        if ids:
            client("scancel", *ids)
            deadline = time.monotonic() + 30
            while client("squeue", "-h", "-t", "PD,R,CG", "-o", "%i"):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        for daemon in reversed(daemons):  # slurmd, slurmctld, munged
            _stop(daemon)
        for pid in leftover_steps(base):  # job steps of jobs that would not end
            os.kill(pid, signal.SIGKILL)
        if SYSTEM_CONF.exists() and SYSTEM_CONF.read_text().startswith(f"{MARKER}{os.getpid()}\n"):
            SYSTEM_CONF.unlink()
        for sub in ("state", "spool", "munge"):
            shutil.rmtree(base / sub, ignore_errors=True)


def node_profile(path: Path) -> Path:
    """``profiles/slurm`` made to fit this node and to match the local run's threads.

    Everything else of the site profile (executor, resources of every other rule, latency,
    rerun triggers) is used as is. Changed, and why:

    - ``set-threads``: those of ``profiles/default`` (the local run), because training and
      LRP are bit-identical only at the same thread count; ``distances_gw`` gets one thread
      and one CPU because with ``dask: {cluster: slurm}`` the rule only hosts the scheduler
      and its workers need the node's other CPU.
    - ``gpu`` / ``cpus_per_gpu`` are dropped for train/explain: the node has no GPU, and a
      job asking for one would never start; cpus_per_task (-> the rule's threads) is set to
      fit the node; ``mem_mb`` of the big rules becomes what this node can hold.
    - ``slurm_partition: debug`` is the site setting the profile leaves open.
    - ``slurm-status-command: squeue``: no slurmdbd here, so sacct cannot answer (the
      executor would otherwise pick sacct because the binary exists).
    - ``retries: 0``: a failure shows at once instead of after two more attempts.
    - ``slurm-init-seconds-before-status-checks: 5`` instead of 40 (jobs of seconds): the
      executor looks 5, 20, 45, ... s after a submission (10 s more each time nothing ended).
    """
    site = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    local = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    threads = {**local["set-threads"], "distances_gw": 1}
    profile = {
        **site,
        "set-threads": {**site["set-threads"], **threads},
        "retries": 0,
        "slurm-status-command": "squeue",
        "slurm-init-seconds-before-status-checks": 5,
    }
    profile["default-resources"] = {**site["default-resources"], "slurm_partition": "debug"}
    resources = {}
    for rule, res in site["set-resources"].items():
        res = {k: v for k, v in res.items() if k not in ("gpu", "cpus_per_gpu")}
        if "cpus_per_task" in res:
            res["cpus_per_task"] = profile["set-threads"].get(rule, 1)
        res["mem_mb"] = "3000 * attempt"
        resources[rule] = res
    profile["set-resources"] = resources
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(profile))
    return path


def test_workflow_through_slurm_equals_the_local_run(
    slurm: Slurm, finished_run: Path, tmp_path: Path
) -> None:
    work = tmp_path / "slurm-run"
    work.mkdir()
    dask_logs = tmp_path / "dask-worker-logs"
    # GW tiles on SLURMCluster workers: one single-threaded worker per batch job, one job
    # at a time (the rule's own job holds the node's other CPU). The worker job goes ahead
    # of the rule jobs queued beside distances_gw (a negative nice, root only), or it would
    # wait for all of them on two CPUs.
    jobqueue = {"cores": 1, "processes": 1, "memory": "2GB", "walltime": "00:30:00",
                "lifetime_margin": "2m", "minimum": 0, "maximum": 1,
                "queue": slurm.partition, "job_extra_directives": ["--nice=-1000"],
                "log_directory": str(dask_logs),
                "local_directory": str(tmp_path / "dask-scratch")}  # fmt: skip
    # Without the GW scan of every class: its rule would hold the node's other CPU beside
    # distances_gw, and neither's SLURMCluster worker could start.
    slurm_config = {
        **TINY,
        "scan": {"gw": False},
        "dask": {"cluster": "slurm", "jobqueue": jobqueue},
    }
    config = write_config(work, slurm_config)
    profile = node_profile(tmp_path / "profile")
    log = tmp_path / "snakemake.txt"
    start = time.monotonic()
    with open(log, "w") as f:
        try:
            returncode = subprocess.run(
                [*SNAKEMAKE, "--directory", str(work), "--configfile", str(config),
                 "--workflow-profile", str(profile)],
                stdout=f, stderr=subprocess.STDOUT, env={**slurm.env, "PYTHONHASHSEED": "0"},
                timeout=RUN_TIMEOUT,
            ).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            returncode = f"timeout after {RUN_TIMEOUT} s"
    out = log.read_text()
    assert returncode == 0, f"{returncode}\n{_tail(out, 6000)}\n{slurm.daemon_logs()}"
    print(f"workflow through SLURM: {time.monotonic() - start:.0f} s")

    # every rule was an sbatch job ...
    submitted = set(re.findall(r"submitted with SLURM jobid \d+ \(log: .*?/rule_(\w+?)/", out))
    assert {"train", "explain", "distances_gw"} <= submitted, submitted
    # ... but the tables and plots (the Snakefile's localrules) ran beside snakemake
    assert not submitted & {"evaluate", "figures", "summary", "clean_list"}, submitted
    jobs = slurm.jobs()
    rule_jobs = {k.split("_wildcards_")[0].removeprefix("rule_"): (t, c) for _, k, t, c in jobs}
    # train's job had as many CPUs as train has threads (no default cpus_per_task in the
    # profile to take precedence)
    assert rule_jobs["train"] == ("COMPLETED", threads_of(profile, "train")), rule_jobs
    # ... and the GW tiles were solved by SLURMCluster workers (batch jobs of their own)
    workers = [(t, c) for name, _, t, c in jobs if name == "dask-worker"]
    assert workers, jobs
    assert any("Registered to" in p.read_text() for p in dask_logs.glob("*.err"))

    local, remote = stored_arrays(finished_run / "results"), stored_arrays(work / "results")
    local = {k: v for k, v in local.items() if "gw_classes.zarr/" not in k}
    assert sorted(remote) == sorted(local)
    assert any("gw.zarr/" in name for name in local), sorted(local)
    for name, value in local.items():
        assert value.dtype == remote[name].dtype, name
        floats = np.issubdtype(value.dtype, np.inexact)  # NaN only where it can be
        assert np.array_equal(value, remote[name], equal_nan=floats), f"{name} differs"


def threads_of(profile: Path, rule: str) -> int:
    return yaml.safe_load((profile / "config.yaml").read_text())["set-threads"][rule]
