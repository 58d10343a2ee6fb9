"""The SLURM profile on a real scheduler: the small CPU pipeline submitted through profiles/slurm.

A single-node SLURM (Debian's slurm-wlm + munge, installed if missing and started here; see
slurm_cluster.py) runs the `measure` jobs the profile submits; everything else is a localrule. The run
must finish with the same outputs as the local run of the same config (the session's `pipeline_run`).
Skipped, with the reason, only where SLURM can't be installed (no root or no apt-get) or this machine
already belongs to a cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import write_test_config
from slurm_cluster import SlurmCluster, conflict, install

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration
KEYS = ["mode", "regime", "reuse_pct", "concurrency", "request_rate"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    why = conflict() or install()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm_pipeline")
    configfile = write_test_config(work)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile",
           str(configfile), "--workflow-profile", str(ROOT / "profiles/slurm"),
           # This throwaway cluster keeps no accounting database (no sacct): ask squeue, and sooner.
           "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2400, env=slurm.env)
    elapsed = time.monotonic() - t0
    jobs = slurm.jobs()
    (work / "slurm_jobs.json").write_text(json.dumps({"elapsed_s": elapsed, "jobs": jobs}, indent=2))
    print(f"\nSLURM pipeline: {elapsed:.0f} s; jobs: " +
          "; ".join(f"{j['JobId']} {j['Partition']} {j['JobState']} exit {j['ExitCode']} gres {j['TresPerJob']} "
                    f"{j['RunTime']}" for j in jobs))
    assert proc.returncode == 0, f"SLURM run failed:\n{proc.stderr[-6000:]}\n{slurm.logs_tail()}"
    return work, jobs, proc


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "results").rglob("*") if p.is_file()}


def test_slurm_run_has_the_local_runs_outputs(slurm_run, pipeline_run):
    work, _, _ = slurm_run
    local, _, _ = pipeline_run
    assert tree(work) == tree(local)
    for prompts in (local / "results/prompts").glob("*.jsonl"):  # deterministic: byte for byte
        assert (work / "results/prompts" / prompts.name).read_bytes() == prompts.read_bytes()
    for script in (local / "results/servers").glob("*.sh"):
        assert (work / "results/servers" / script.name).read_text() == script.read_text()
    s_local, s_slurm = (pl.read_csv(d / "results/summary.csv") for d in (local, work))
    assert s_slurm.columns == s_local.columns
    assert s_slurm.select(KEYS + ["requests_sent"]).sort(KEYS).equals(s_local.select(KEYS + ["requests_sent"]).sort(KEYS))
    assert (s_slurm["requests_failed"] == 0).all()
    headings = lambda d: [ln for ln in (d / "results/prefix_caching_results.md").read_text().splitlines()
                          if ln.startswith("#")]
    assert headings(work) == headings(local)


def test_only_measure_jobs_reach_the_scheduler_and_ask_for_a_gpu(slurm_run):
    work, jobs, proc = slurm_run
    assert len(jobs) == 2, jobs  # one per cache setting; the cheap rules stayed local (localrules)
    for job in jobs:
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Partition"] == "gpu" and "gpu" in job["TresPerJob"], job
    log = proc.stdout + proc.stderr  # Snakemake's side of the same jobs
    for job in jobs:
        assert f"with SLURM jobid {job['JobId']} " in log, job
    for mode in ("no_prefix_cache", "with_prefix_cache"):
        info = json.loads((work / f"results/raw/{mode}/server.json").read_text())
        assert info["started_by_prefixbench"] and info["port"] > 0
