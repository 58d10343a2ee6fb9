"""The measure step's orchestration against a fake vLLM process: records, counters, crash behaviour."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import ROOT, fake_prompts, fake_script, measure_fake

from prefixbench import OFF, ON
from prefixbench.measure import Point, ReplicaPlan
from prefixbench.replicas import RouterError
from prefixbench.server import ServerError
from prefixbench.settings import RouterSpec


def setup(tmp_path, die_after=0, n=6):
    script = fake_script(tmp_path, f"FAKE_DIE_AFTER={die_after}" if die_after else "")
    prompts = fake_prompts(tmp_path, n, warm_cached=16)
    points = [Point("r", 100, c, prompts, tmp_path / f"c{c}.jsonl", tmp_path / f"c{c}.meta.json") for c in (1, 2)]
    return script, points


def run(tmp_path, script, points, journal, repeats=1, paired="hit_miss"):
    measure_fake(
        script,
        tmp_path,
        points,
        journal=journal,
        max_tokens=4,
        warmup_requests=1,
        sample_interval_s=0.2,
        repeats=repeats,
        paired=paired,
    )


def test_every_point_measured_with_counters(tmp_path):
    script, points = setup(tmp_path)
    run(tmp_path, script, points, tmp_path / "journal.jsonl")
    for p in points:
        recs = [json.loads(x) for x in p.records_path.read_text().splitlines()]
        # The paired design: each prompt once as a hit and once as a forced miss (a unique cache_salt).
        assert len(recs) == 12 and all(r["status"] == "ok" for r in recs)
        assert sorted(r["request_index"] for r in recs if r["arm"] == "hit") == list(range(6))
        assert sorted(r["request_index"] for r in recs if r["arm"] == "miss") == list(range(6))
        assert all(r["cached_tokens"] == 0 and r["expected_cached_tokens"] == 0 for r in recs if r["arm"] == "miss")
        pairs = {0, 1, 2} if p.concurrency == 1 else {0, 1}  # sub-blocks of 2 at c=1; of 4 at c=2 (4 + 2)
        assert sorted(r["send_index"] for r in recs) == list(range(12)) and {r["pair"] for r in recs} == pairs
        meta = json.loads(p.meta_path.read_text())
        assert meta["cache_reset"] == "ok" and meta["requests_ok"] == 12 and meta["paired"] == "hit_miss"
        assert meta["counters_delta"]["vllm:prefix_cache_hits_total"] == sum(r["cached_tokens"] for r in recs) > 0
    assert len((tmp_path / "journal.jsonl").read_text().splitlines()) == 24
    assert json.loads((tmp_path / "server.json").read_text())["points"] == 2


def test_without_the_paired_design_a_point_runs_once(tmp_path):
    script, points = setup(tmp_path)
    measure_fake(script, tmp_path, points, max_tokens=4, warmup_requests=1, sample_interval_s=0.2, paired="none")
    recs = [json.loads(x) for x in points[0].records_path.read_text().splitlines()]
    assert len(recs) == 6 and "arm" not in recs[0]
    assert json.loads(points[0].meta_path.read_text())["paired"] is None


def test_server_dying_mid_point_keeps_the_records(tmp_path):
    script, points = setup(tmp_path, die_after=4)  # 1 warm-up + 3 measured requests, then the server dies
    with pytest.raises((ServerError, RuntimeError)) as exc:
        run(tmp_path, script, points, tmp_path / "journal.jsonl")
    assert "exited" in str(exc.value) or "failed" in str(exc.value)
    journal = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    ok = [r for r in journal if r["status"] == "ok"]
    assert len(ok) == 3
    assert all(r["status"] in ("ok", "failed") for r in journal)


def test_repeats_each_start_from_a_reset_cache(tmp_path):
    script, points = setup(tmp_path)
    run(tmp_path, script, points, None, repeats=2, paired="none")  # one arm: the repeats' own counters
    recs = [json.loads(x) for x in points[0].records_path.read_text().splitlines()]
    assert len(recs) == 12 and sorted({r["repeat"] for r in recs}) == [0, 1]
    meta = json.loads(points[0].meta_path.read_text())
    per = meta["counters_delta_per_repeat"]
    assert len(per) == 2 and per[0]["vllm:prefix_cache_hits_total"] == per[1]["vllm:prefix_cache_hits_total"] > 0
    assert meta["requests_sent"] == 12 and len(meta["wall_s_per_repeat"]) == 2
    first_of_each = [r for r in recs if r["request_index"] == 0]
    assert [r["cached_tokens"] for r in first_of_each] == [0, 0]  # reset before each repeat


# ---------------------------------------------------------------------------------------------------------------------
# A replicated target: fake replicas (fake_vllm.py, logging each request's id as vLLM's --enable-log-requests does)
# behind the real vllm-router of the server environment.

ROUTER = ROOT / ".venv-server" / "bin" / "vllm-router"
LOGGING_FAKE = """import sys
sys.path.insert(0, {tests!r})
import fake_vllm

served = fake_vllm.completions


async def completions(request):
    # vLLM with --enable-log-requests: one line per request, naming the X-Request-Id it was sent
    print(f"INFO Received request cmpl-{{request.headers.get('X-Request-Id')}}-0: params: SamplingParams()", flush=True)
    return await served(request)


fake_vllm.completions = completions
fake_vllm.main()
"""


def replica_setup(tmp_path, policies, envs=({}, {}), binary=None):
    """A fake replica script, its points (one paired point, one of one arm) and the plan of a 2-replica lifetime."""
    if not ROUTER.exists():
        pytest.fail(f"{ROUTER} missing: the server environment brings vllm-router (./run.sh test makes it)")
    fake = tmp_path / "logging_fake.py"
    fake.write_text(LOGGING_FAKE.format(tests=str(ROOT / "tests")))
    script = tmp_path / "serve.sh"
    script.write_text(f"#!/usr/bin/env bash\nexec {sys.executable} {fake} $1\n")
    prompts = fake_prompts(tmp_path, 6, warm_cached=16)
    points = [Point("r", 100, 2, prompts, tmp_path / "c2.jsonl", tmp_path / "c2.meta.json")]
    spec = RouterSpec(str(binary or ROUTER), tuple(policies), 60.0, 0.3, 64, 1.5)
    plan = ReplicaPlan(envs, [tmp_path / f"server_r{k}.log" for k in range(2)], spec, tmp_path / "router.log")
    return script, points, plan


def measure_replicated(tmp_path, script, points, plan, mode=ON, repeats=2, paired="none"):
    from prefixbench.config import default_bench_settings
    from prefixbench.measure import measure_mode

    measure_mode(mode, script=script, host="127.0.0.1", log_path=tmp_path / "server.log",
                 server_info_path=tmp_path / "server.json", model="fake", points=points,
                 settings=default_bench_settings(repeats=repeats, max_tokens=4, warmup_requests=1, sample_interval_s=0.2,
                                                 paired=paired),
                 ready_timeout_s=30, python=sys.executable, engine="vllm", extra_info={},
                 journal_path=tmp_path / "journal.jsonl", replicas=plan)  # fmt: skip


def test_a_replicated_point_runs_every_policy_and_attributes_every_request(tmp_path):
    script, points, plan = replica_setup(tmp_path, ["round_robin", "consistent_hash"])
    measure_replicated(tmp_path, script, points, plan)
    recs = [json.loads(x) for x in points[0].records_path.read_text().splitlines()]
    meta = json.loads(points[0].meta_path.read_text())
    hits = "vllm:prefix_cache_hits_total"
    # Every policy, every repeat, each request once and attributed to exactly one replica; ids unique in the lifetime.
    assert len(recs) == 2 * 2 * 6 and all(r["status"] == "ok" for r in recs)
    assert all(r["replica"] in (0, 1) and r["replica_unknown"] is None for r in recs)
    assert len({r["request_id"] for r in recs}) == len(recs) and all(r["session_key"] == "shared" for r in recs)
    # Counterbalanced: instance 1 starts repeat 0 with the second policy, repeat 1 with the first.
    passes = meta["replica_passes"]
    assert [(p["repeat"], p["policy"], p["order"]) for p in passes] == [
        (0, "consistent_hash", 0), (0, "round_robin", 1), (1, "round_robin", 0), (1, "consistent_hash", 1)]  # fmt: skip
    for p in passes:
        mine = [r for r in recs if r["policy"] == p["policy"] and r["repeat"] == p["repeat"]]
        assert p["attributed"] == 6 and p["unattributed"] == 0 and sorted(p["worker_order"]) == [0, 1]
        for k in (0, 1):  # what each replica counted is what the requests attributed to it were told
            served = [r for r in mine if r["replica"] == k]
            assert p["counters_delta_per_replica"][k][hits] == sum(r["cached_tokens"] for r in served)
        for k in (0, 1):  # each request's place in the order its replica received the pass's requests
            assert sorted(r["replica_seq"] for r in mine if r["replica"] == k) == list(
                range(sum(r["replica"] == k for r in mine))
            )
        by_replica = sorted(sum(r["replica"] == k for r in mine) for k in (0, 1))
        # round_robin alternates; consistent_hash keeps one session key on one replica
        assert by_replica == ([3, 3] if p["policy"] == "round_robin" else [0, 6]), p
    # The point's own totals are the primary policy's only, so every existing analysis reads what it did before.
    # memory sampled per pass: each policy's peaks its own, the point's those of the primary policy's passes
    assert all(p["memory_samples"] >= 1 and p["peak_kv_cache_usage"] == 0.01 for p in passes)
    primary = [p for p in passes if p["policy"] == "round_robin"]
    assert meta["memory_samples"] == sum(p["memory_samples"] for p in primary)
    assert meta["counters_delta"][hits] == sum(sum(d[hits] for d in p["counters_delta_per_replica"]) for p in primary)
    assert meta["requests_sent"] == 12 and meta["requests_ok"] == 12
    info = json.loads((tmp_path / "server.json").read_text())
    assert [r["log"] for r in info["replicas"]] == [str(p) for p in plan.log_paths]
    assert info["router"]["primary"] == "round_robin" and [s["policy"] for s in info["router"]["starts"]] == [
        p["policy"] for p in passes]  # fmt: skip
    assert "<port>" in info["router"]["argv"] and not any(":" in a and "127.0.0.1" in a for a in info["router"]["argv"])
    assert len((tmp_path / "journal.jsonl").read_text().splitlines()) == len(recs)


def test_a_cache_off_lifetime_runs_the_primary_policy_only(tmp_path):
    script, points, plan = replica_setup(tmp_path, ["round_robin", "consistent_hash"])
    measure_replicated(tmp_path, script, points, plan, mode=OFF, repeats=1)
    recs = [json.loads(x) for x in points[0].records_path.read_text().splitlines()]
    assert len(recs) == 6 and {r["policy"] for r in recs} == {"round_robin"}


def test_paired_arms_run_unchanged_through_the_router(tmp_path):
    script, points, plan = replica_setup(tmp_path, ["round_robin"])
    measure_replicated(tmp_path, script, points, plan, repeats=1, paired="hit_miss")
    recs = [json.loads(x) for x in points[0].records_path.read_text().splitlines()]
    assert len(recs) == 12 and {r["arm"] for r in recs} == {"hit", "miss"}
    assert all(r["cached_tokens"] == 0 for r in recs if r["arm"] == "miss") and all(r["replica"] in (0, 1) for r in recs)


def test_a_replica_dying_mid_point_names_its_log_and_accounts_for_every_request(tmp_path):
    # replica 0 answers its warm-up and two measured requests, then exits while answering the next
    script, points, plan = replica_setup(tmp_path, ["round_robin"], envs=({"FAKE_DIE_AFTER": "3"}, {}))
    with pytest.raises(ServerError) as exc:
        measure_replicated(tmp_path, script, points, plan, repeats=1)
    first = str(exc.value).splitlines()[0]
    assert "replica 0" in first and str(plan.log_paths[0]) in first and "6 requests accounted for" in first
    journal = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 6 and sum(r["replica"] == 1 for r in journal) >= 3
    assert all(r["replica"] is not None or r["replica_unknown"] for r in journal)


def test_a_router_that_will_not_start_keeps_what_was_measured(tmp_path):
    # the second router start fails: the first pass's records are kept, then a RouterError that quotes the router's log
    count = tmp_path / "starts"
    flaky = tmp_path / "flaky-router"
    flaky.write_text(f'#!/usr/bin/env bash\necho x >> {count}\n[ "$(wc -l < {count})" -gt 1 ] && '
                     f'{{ echo "vllm-router: error: unrecognized arguments" >&2; exit 2; }}\nexec {ROUTER} "$@"\n')  # fmt: skip
    flaky.chmod(0o755)
    script, points, plan = replica_setup(tmp_path, ["round_robin", "consistent_hash"], binary=flaky)
    with pytest.raises(RouterError) as exc:
        measure_replicated(tmp_path, script, points, plan, repeats=1)
    assert "exited with code 2" in str(exc.value) and str(plan.router_log) in str(exc.value)
    journal = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 6 and all(r["status"] == "ok" and r["replica"] in (0, 1) for r in journal)


def test_session_keys_never_leave_a_request_without_one():
    from prefixbench.measure import session_keys
    from prefixbench.paired import Send
    from prefixbench.routing import trace_session_key
    from prefixbench.sessions import session_key

    prompts = [
        {"request_index": 0, "prefix_group": "doc-003"},
        {"request_index": 1, "prefix_group": None, "block_hashes": [77, 78]},
        {"request_index": 2},
    ]
    assert [session_key(p) for p in prompts] == ["doc-003", "block-77", "request-2"]
    trace = {"request_index": 3, "prefix_group": "trace-0", "trace_hash_ids": [0, 41, 42]}
    assert session_key(trace) == trace_session_key([0, 41, 42]) == "trace-0-41"  # the simulator's key, not block 0's
    sends = [Send(2, "hit", 0, 0, None), Send(0, "miss", 0, 0, "salt")]
    assert session_keys(prompts, sends) == {0: "request-2", 1: "doc-003"}  # keyed by send index in a paired pass


def test_a_kind_asking_for_per_request_counters_gets_each_requests_own(tmp_path, monkeypatch):
    """One request at a time, the server's counters read around each: a record's counters_delta is its own change, so
    its hits equal its cached tokens (the KV offload tier splits them by tier, issue 24)."""
    from prefixbench.shapes import KINDS

    monkeypatch.setattr(KINDS["prefix_pool"], "per_request_counters", True, raising=False)
    script, points = setup(tmp_path)
    lines = [json.loads(x) for x in points[0].prompts_path.read_text().splitlines()]
    points[0].prompts_path.write_text("".join(json.dumps(p | {"workload": "prefix_pool"}) + "\n" for p in lines))
    run(tmp_path, script, points, None, paired="none")
    for p in points:
        recs = [json.loads(x) for x in p.records_path.read_text().splitlines()]
        hits = [r.get("counters_delta", {}).get("vllm:prefix_cache_hits_total") for r in recs]
        if p.concurrency == 1:
            assert hits == [r["cached_tokens"] for r in recs] and sum(hits) > 0
        else:  # two in flight: a request's counter change is not its own, so none is claimed
            assert hits == [None] * len(recs)
