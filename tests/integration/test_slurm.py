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
import time
from pathlib import Path

import polars as pl
import pytest
from helpers import PIPELINE_CPU_ISA, snakemake_cmd, write_test_config
from slurm_cluster import SlurmCluster, conflict, install

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
    configfile = write_test_config(work, cpu_isa=PIPELINE_CPU_ISA)  # the same config as the local pipeline_run
    # This throwaway cluster keeps no accounting database (no sacct): ask squeue, and sooner.
    cmd = snakemake_cmd(work, configfile, "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks",
                        "5", profile="slurm")  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2400, env=slurm.env)
    elapsed = time.monotonic() - t0
    jobs = slurm.jobs()
    (work / "slurm_jobs.json").write_text(json.dumps({"elapsed_s": elapsed, "jobs": jobs}, indent=2))
    print(
        f"\nSLURM pipeline: {elapsed:.0f} s; jobs: "
        + "; ".join(
            f"{j['JobId']} {j['Partition']} {j['JobState']} exit {j['ExitCode']} gres {j['TresPerJob']} {j['RunTime']}"
            for j in jobs
        )
    )
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

    def headings(d):
        return [ln for ln in (d / "results/prefix_caching_results.md").read_text().splitlines() if ln.startswith("#")]

    assert headings(work) == headings(local)


def test_only_server_jobs_reach_the_scheduler_and_ask_for_a_gpu(slurm_run):
    work, jobs, proc = slurm_run
    assert len(jobs) == 3, jobs  # the calibration start, one per cache setting; the cheap rules stayed local
    for job in jobs:
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Partition"] == "gpu" and "gpu" in job["TresPerJob"], job
    log = proc.stdout + proc.stderr  # Snakemake's side of the same jobs
    for job in jobs:
        assert f"with SLURM jobid {job['JobId']} " in log, job
    for mode in ("no_prefix_cache", "with_prefix_cache"):
        info = json.loads((work / f"results/raw/{mode}/i1/server.json").read_text())
        assert info["started_by_prefixbench"] and info["port"] > 0


def test_scancel_mid_measurement_leaves_no_server(slurm, smollm2_dir, tmp_path, reliability):
    """What a cluster does to a job past its time limit or cancelled by its owner: SIGTERM, then SIGKILL."""
    import psutil
    import yaml

    cfg = yaml.safe_load(write_test_config(tmp_path).read_text())
    cfg["questions"] = {"count": 32}  # a point long enough to cancel in the middle of
    cfg["benchmark"].update(concurrency=[1], repeats=1, request_rates=[], max_tokens=16)
    cfg["regimes"]["small"]["reuse_pcts"] = [100]
    configfile = tmp_path / "cancel.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    cmd = snakemake_cmd(tmp_path, configfile, "results/raw/no_prefix_cache/i1/server.json", "--slurm-status-command", "squeue",
                        "--slurm-init-seconds-before-status-checks", "5", profile="slurm")  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=slurm.env)

    def vllm_procs() -> list[int]:
        out = []
        for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
            if p.info["cwd"] == str(tmp_path) and "vllm" in " ".join(p.info["cmdline"] or []).lower():
                out.append(p.pid)
        return out

    records = tmp_path / "results/logs/records_no_prefix_cache_i1.jsonl"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not (records.exists() and len(records.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    running = [j for j in slurm.jobs() if j["JobState"] == "RUNNING"]
    assert len(running) == 1, running
    before = vllm_procs()
    t0 = time.monotonic()
    subprocess.run(["scancel", running[0]["JobId"]], check=True, env=slurm.env)
    while vllm_procs() and time.monotonic() - t0 < 120:
        time.sleep(0.1)
    gone = time.monotonic() - t0
    left = vllm_procs()
    out, _ = proc.communicate(timeout=300)
    state = next(j["JobState"] for j in slurm.jobs() if j["JobId"] == running[0]["JobId"])
    assert before and not left
    assert state == "CANCELLED" and proc.returncode != 0
    assert f"SLURM-job '{running[0]['JobId']}' failed" in out
    assert not (tmp_path / "results/raw/no_prefix_cache/i1/server.json").exists()
    kept = len(records.read_text().splitlines())
    assert kept >= 3
    reliability(
        "s9_slurm_cancel",
        "",
        "scancel of the running measure job after its first 3 requests",
        {
            "scheduler state": state,
            "vLLM processes of the job before": len(before),
            "all gone after (s)": round(gone, 1),
            "processes left": len(left),
            "snakemake exit code": proc.returncode,
            "records kept in the journal": kept,
        },
    )
