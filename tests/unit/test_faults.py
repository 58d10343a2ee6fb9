"""Fault injection with figures: what was injected, how fast it was detected, what was kept, what was left.

This half needs no real server: stalls and malformed streams (the fake server, tests/fake_vllm.py: a healthy vLLM
does not produce them), bad config, a soak, a planted key. Real vLLM's faults are in tests/integration/test_faults_real.py.
Each test records its observations; conftest renders docs/RELIABILITY.md from them.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import (
    FAKE_VLLM,
    ROOT,
    fake_prompts,
    fake_script,
    measure_fake,
    snakemake_cmd,
)

from prefixbench.client import ClientConfig, run_closed_loop
from prefixbench.engines import engine_for
from prefixbench.measure import Point
from prefixbench.server import ServerSpec


def fake_points(tmp_path: Path, n: int, conc: int = 1) -> list[Point]:
    return [Point("r", 100, conc, fake_prompts(tmp_path, n), tmp_path / "p.jsonl", tmp_path / "p.meta.json")]


def test_stalled_streams_time_out_and_are_counted(tmp_path, reliability):
    points = fake_points(tmp_path, 12, conc=4)
    t0 = time.monotonic()
    measure_fake(
        fake_script(tmp_path, "FAKE_STALL_EVERY=4"),
        tmp_path,
        points,
        max_tokens=4,
        warmup_requests=0,
        stall_timeout_s=1.0,
        sample_interval_s=0.2,
    )
    wall = time.monotonic() - t0
    recs = [json.loads(x) for x in points[0].records_path.read_text().splitlines()]
    meta = json.loads(points[0].meta_path.read_text())
    failed = [r for r in recs if r["status"] == "failed"]
    # The cache-on point runs paired (every prompt as a hit and as a forced miss): 24 requests, every 4th stalls.
    assert len(recs) == 24 and len(failed) == 6 and all("timeout" in r["error"] for r in failed)
    assert meta["requests_failed"] == 6 and meta["requests_ok"] == 18 and meta["requests_sent"] == 24
    detect = max(r["e2e_s"] for r in failed)
    reliability(
        "s3_stall",
        "",
        "every 4th stream stops after 2 tokens (stall timeout 1 s)",
        {
            "time to detect (s)": round(detect, 2),
            "failed recorded": f"{len(failed)} (timeout)",
            "requests accounted": f"{len(recs)} of {meta['requests_sent']}",
            "run wall incl. teardown (s)": round(wall, 1),
        },
    )


def test_malformed_streams_and_error_budget(tmp_path, reliability):
    ok_dir, over_dir = tmp_path / "within", tmp_path / "over"
    ok_dir.mkdir()
    over_dir.mkdir()
    points = fake_points(ok_dir, 12)
    measure_fake(fake_script(ok_dir, "FAKE_BROKEN_EVERY=4"), ok_dir, points, max_tokens=4, warmup_requests=0)
    recs = [json.loads(x) for x in points[0].records_path.read_text().splitlines()]
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(recs) == 24 and len(failed) == 6 and all("JSONDecodeError" in r["error"] for r in failed)
    points2 = fake_points(over_dir, 12)
    with pytest.raises(RuntimeError, match="error budget 10%"):
        measure_fake(
            fake_script(over_dir, "FAKE_BROKEN_EVERY=4"),
            over_dir,
            points2,
            max_tokens=4,
            warmup_requests=0,
            max_failed_fraction=0.1,
        )
    kept = len(points2[0].records_path.read_text().splitlines())
    reliability(
        "s4_malformed",
        "",
        "every 4th stream sends a broken SSE line",
        {
            "within budget (50%)": f"run goes on, {len(failed)} of {len(recs)} failed with reason JSONDecodeError",
            "over budget (10%)": f"run stops with 'error budget' error, {kept} of {len(recs)} records kept",
        },
    )


def test_bad_config_rejected_before_any_server(tmp_path, reliability):
    base = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    cases = {
        "unknown key": ({**base, "surprise": 1}, "surprise"),
        "zero concurrency": ({**base, "benchmark": {**base["benchmark"], "concurrency": [0]}}, "concurrency"),
        "prefix longer than context": (
            {**base, "regimes": {"small": {**base["regimes"]["small"], "prefix_tokens": 5000}}},
            "prefix_tokens",
        ),
        "empty question list": ({**base, "questions": []}, "questions"),
        "missing model": (
            {
                **base,
                "targets": {
                    "cpu": {**base["targets"]["cpu"], "model": {"source": "path", "path": "/nonexistent", "served_name": "x"}}
                },
            },
            "no such folder",
        ),
    }
    times = []
    for name, (cfg, needle) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        t0 = time.monotonic()
        out = subprocess.run(snakemake_cmd(tmp_path, path, "-n"), capture_output=True, text=True, timeout=120)
        times.append(time.monotonic() - t0)
        assert out.returncode != 0 and needle in out.stdout + out.stderr, name
        assert "Traceback" not in out.stderr, name
    reliability(
        "s6_bad_config",
        "",
        ", ".join(cases),
        {
            "rejected": f"{len(cases)} of {len(cases)}, each naming the key",
            "tracebacks": 0,
            "slowest rejection (s)": round(max(times), 1),
            "servers started": 0,
            "fuzzing": "config (hypothesis, 150 examples) and prompts JSONL (200): only clear errors",
        },
    )


async def test_soak_every_request_accounted(tmp_path, reliability):
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    port = port_holder.getsockname()[1]
    port_holder.close()
    server = subprocess.Popen([sys.executable, str(FAKE_VLLM), str(port)], env={**os.environ, "FAKE_BROKEN_EVERY": "97"})
    try:
        import aiohttp

        for _ in range(100):
            try:
                async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/v1/models") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                time.sleep(0.1)
        n, conc = 2000, 128
        recs = []
        cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await run_closed_loop(
            ClientConfig(
                f"http://127.0.0.1:{port}", "fake", 8, request_timeout_s=30, stall_timeout_s=10, engine=engine_for("vllm")
            ),
            [(i, f"p{i}\nQ: q\nA:") for i in range(n)],
            conc,
            recs.append,
        )
        wall = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        server.terminate()
        server.wait(timeout=10)
    ok = sum(r.status == "ok" for r in recs)
    failed = sum(r.status == "failed" for r in recs)
    assert ok + failed == n and len({r.request_index for r in recs}) == n
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    reliability(
        "s7_soak",
        "",
        f"{n} streaming requests at concurrency {conc}; every 97th stream malformed",
        {
            "sent": n,
            "ok": ok,
            "failed": failed,
            "accounted": f"{ok + failed} of {n}",
            "wall (s)": round(wall, 1),
            "client CPU (s)": round(cpu, 1),
            "client CPU per request (ms)": round(1000 * cpu / n, 2),
        },
    )


def test_planted_api_key_never_written(tmp_path, reliability, monkeypatch):
    import uuid

    from prefixbench.server import render_script

    key = f"sk-planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("PREFIXBENCH_TEST_KEY", key)
    spec = ServerSpec(
        python="python",
        model="m",
        served_model_name="s",
        host="127.0.0.1",
        max_model_len=512,
        dtype="auto",
        engine="vllm",
        api_key_env="PREFIXBENCH_TEST_KEY",
    )
    rendered = render_script(spec, "with_prefix_cache")
    assert key not in rendered and 'VLLM_API_KEY="${PREFIXBENCH_TEST_KEY:?' in rendered
    points = fake_points(tmp_path, 6)
    script = tmp_path / "serve.sh"
    script.write_text(
        f'#!/usr/bin/env bash\nexport VLLM_API_KEY="${{PREFIXBENCH_TEST_KEY:?}}"\nexec {sys.executable} {FAKE_VLLM} $1\n'
    )
    measure_fake(
        script,
        tmp_path,
        points,
        journal=tmp_path / "journal.jsonl",
        max_tokens=4,
        warmup_requests=1,
        api_key_env="PREFIXBENCH_TEST_KEY",
    )
    recs = [json.loads(x) for x in points[0].records_path.read_text().splitlines()]
    assert all(r["status"] == "ok" for r in recs)  # the server demanded the key and got it
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    leaked = [str(p) for p in files if key in p.read_text(errors="replace")]
    assert not leaked
    reliability(
        "s8_api_key",
        "",
        "an API key planted in the environment, required by the server",
        {
            "requests authorised": f"{len(recs)} of {len(recs)}",
            "files written": len(files),
            "files containing the key": len(leaked),
            "server scripts": "name the variable only",
        },
    )
