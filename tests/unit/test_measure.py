"""The measure step's orchestration against a fake vLLM process: records, counters, crash behaviour."""

from __future__ import annotations

import json

import pytest
from helpers import fake_prompts, fake_script, measure_fake

from prefixbench.measure import Point
from prefixbench.server import ServerError


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
