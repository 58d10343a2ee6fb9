"""A real single-node SLURM on localhost for the cluster-profile test: Debian's slurm-wlm and munge.

The test starts it itself: munged (the shared key Debian's package made), slurmctld and slurmd with a
config of our own in a temporary folder. SLURM_CONF points our commands at it; the config is also put
in /run/slurm/conf, where slurmd's config cache lives on a configless cluster, because the job-step
executor drops SLURM_CONF before its `srun` inside the job (a real node has /etc/slurm/slurm.conf or
that cache). /etc/slurm is never touched: where it holds a config, this machine is a real SLURM node
and the test skips rather than run a second cluster beside it. one node with one `gpu` GRES (backed by /dev/null), so the pipeline's GPU
rule asks the scheduler for a GPU exactly as on a cluster. Two partitions, `cpu` (default) and `gpu`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged")
PACKAGES = ("slurm-wlm", "munge")


def missing_tools() -> list[str]:
    return [
        t
        for t in ("slurmctld", "slurmd", "sbatch", "squeue", "munged")
        if not shutil.which(t) and not Path("/usr/sbin", t).exists()
    ]


def install() -> str | None:
    """Install the Debian packages where we can (root with apt-get); None, or why not."""
    if not missing_tools():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return (
            f"SLURM is not installed ({', '.join(missing_tools())} missing) and cannot be installed here "
            "(needs root and apt-get): apt-get install slurm-wlm munge"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if out.returncode != 0:
            return f"`{' '.join(cmd)}` failed ({out.returncode}): {out.stderr.strip()[-400:]}"
    return None if not missing_tools() else f"installed {PACKAGES} but still missing {missing_tools()}"


SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
RUNTIME_CONF_DIR = Path("/run/slurm/conf")


def conflict() -> str | None:
    """Why this machine can't host the throwaway cluster, or None."""
    for f in (SYSTEM_CONF, RUNTIME_CONF_DIR / "slurm.conf"):
        if f.exists():
            return f"{f} exists: this machine belongs to a SLURM cluster; the test won't start a second one beside it"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class SlurmCluster:
    """slurmctld + slurmd (+ munged if none runs) for one test session, torn down by stop()."""

    root: Path
    # The node advertises what the shipped SLURM profile asks of a GPU node (SlurmdParameters=config_overrides
    # makes slurmd report these, not the hardware), so the test runs the profile as users get it.
    cpus: int = 16
    memory_mb: int = 128000
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""\
ClusterName=prefixbench-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
MinJobAge=900
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
""")
        (self.root / "gres.conf").write_text(f"AutoDetect=off\nNodeName={host} Name=gpu Count=1 File=/dev/null\n")
        RUNTIME_CONF_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            shutil.copy(self.root / name, RUNTIME_CONF_DIR / name)

    def _munge_running(self) -> bool:
        return subprocess.run(["munge", "-n"], capture_output=True).returncode == 0

    def start(self, timeout_s: float = 60) -> None:
        self.write_config()
        if not self._munge_running():
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["runuser", "-u", "munge", "--", _sbin("munged")], check=True, timeout=30)
            self._await(self._munge_running, timeout_s, "munged")
        log = (self.root / "log" / "daemons.out").open("a")
        for cmd in ([_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)], [_sbin("slurmd"), "-D", "-f", str(self.conf)]):
            self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True))
            time.sleep(1)
        self._await(self.node_idle, timeout_s, "the node to come up idle")

    def _await(self, cond, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond():
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited ({p.returncode}) waiting for {what}; {self.logs_tail()}")
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}; {self.logs_tail()}")

    def node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env)
        return out.returncode == 0 and "idle" in out.stdout

    def logs_tail(self, lines: int = 15) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*")):
            text = f.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {f.name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still holds (MinJobAge keeps finished ones 15 min): id, name, state, partition, gres."""
        out = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True, env=self.env)
        rows = []
        for line in out.stdout.splitlines():
            kv = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
            if "JobId" in kv:
                rows.append(
                    {
                        k: kv.get(k, "")
                        for k in (
                            "JobId",
                            "JobName",
                            "JobState",
                            "Partition",
                            "ExitCode",
                            "NodeList",
                            "TresPerJob",
                            "TRES",
                            "RunTime",
                        )
                    }
                )
        return rows

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", str(os.getuid())], capture_output=True, env=self.env)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for name in ("slurm.conf", "gres.conf"):
            (RUNTIME_CONF_DIR / name).unlink(missing_ok=True)
