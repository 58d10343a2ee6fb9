"""Workload shapes: each one's construction, checked by re-tokenizing independently, and its expected hits."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from helpers import ROOT

from prefixbench.corpus import DEFAULT_QUESTIONS
from prefixbench.kvcache import block_hashes
from prefixbench.shapes import Shape, build_shape_prompts
from prefixbench.shapes.kv_overflow import overflow_documents
from prefixbench.shapes.prefix_pool import zipf_draws
from prefixbench.shapes.trace import trace_capacity_curve

TRACE = ROOT / "resources/traces/mooncake/conversation_trace.jsonl.gz"
B = 128


def build(tok, kind, **params):
    return build_shape_prompts(tok, Shape("s", kind, params), DEFAULT_QUESTIONS, B, 7, 4096, 16, len(tok.inner))


def common_blocks(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) // B and a[n * B : (n + 1) * B] == b[n * B : (n + 1) * B]:
        n += 1
    return n


def test_multi_turn_history_is_each_next_turns_prefix(smollm2_tokenizer):
    tok = smollm2_tokenizer
    recs = build(tok, "multi_turn", system_tokens=256, sessions=3, turns=4, answer_tokens=96)
    assert len(recs) == 12 and [r["turn"] for r in recs[:3]] == [1, 1, 1]  # sessions interleave, round-robin
    by_session = {}
    for r in recs:
        ids = tok.encode(r["prompt"])  # independent re-tokenization
        assert len(ids) == r["prompt_len_tokens"] and block_hashes(ids, B) == r["block_hashes"]
        by_session.setdefault(r["session"], []).append((r["turn"], ids, r))
    system = None
    for turns in by_session.values():
        turns.sort(key=lambda t: t[0])
        for (_, prev, _), (_, ids, rec) in zip(turns, turns[1:]):
            assert ids[: len(prev)] == prev  # the whole previous prompt opens the next one
            # unlimited cache, one at a time: a turn hits every full block of the previous turn's prompt
            assert rec["expected_cached_tokens"] == min(len(prev) // B, (len(ids) - 1) // B) * B
        heads = turns[0][1][:256]
        assert system is None or heads == system
        system = heads
    assert recs[0]["expected_cached_tokens"] == 0 and recs[1]["expected_cached_tokens"] == 256  # the system prompt


def test_pool_documents_are_exact_two_level_prefixes_with_skewed_popularity(smollm2_tokenizer):
    tok = smollm2_tokenizer
    recs = build(tok, "prefix_pool", system_tokens=128, doc_tokens=256, documents=4, zipf_alpha=1.2, requests=40)
    seen_docs = set()
    for r in recs:
        ids = tok.encode(r["prompt"])
        assert r["prefix_len_tokens"] == 128 + 256
        others = [tok.encode(o["prompt"]) for o in recs if o is not r]
        same = [o for o, orec in zip(others, [o for o in recs if o is not r]) if orec["document"] == r["document"]]
        diff = [o for o, orec in zip(others, [o for o in recs if o is not r]) if orec["document"] != r["document"]]
        assert all(common_blocks(ids, o) >= 3 for o in same)  # system (1 block) + document (2 blocks)
        assert all(common_blocks(ids, o) == 1 for o in diff)  # another document still shares the system prompt
        want = 0 if not seen_docs else (128 if r["document"] not in seen_docs else 384)
        assert r["expected_cached_tokens"] == want
        seen_docs.add(r["document"])
    counts = Counter(r["document"] for r in recs)
    assert counts[0] > counts[3]  # rank 0 is the most popular


def test_zipf_draws_follow_alpha():
    rng = random.Random(1)
    flat = Counter(zipf_draws(20000, 4, 0.0, rng))
    skew = Counter(zipf_draws(20000, 4, 1.0, rng))
    assert max(flat.values()) / min(flat.values()) < 1.1
    assert skew[0] / skew[3] == pytest.approx(4.0, rel=0.15)


def test_overflow_working_set_is_a_multiple_of_the_capacity(smollm2_tokenizer):
    assert overflow_documents(26, 128, 384, 1.0) == round(25 * 128 / 384)
    recs = build(smollm2_tokenizer, "kv_overflow", capacity_blocks=26, doc_tokens=384, working_set=2.0, requests=10)
    assert {r["documents"] for r in recs} == {overflow_documents(26, 128, 384, 2.0)}


def test_trace_blocks_keep_the_traces_sharing(smollm2_tokenizer):
    recs = build(smollm2_tokenizer, "trace", path=str(TRACE), requests=30, chunk_tokens=B, rate=2.0)
    for a in recs:
        for b in recs:
            shared = 0
            for x, y in zip(a["trace_hash_ids"], b["trace_hash_ids"]):
                if x != y:
                    break
                shared += 1
            assert common_blocks(a["prompt"], b["prompt"]) == shared  # equal hash ids <=> equal cached blocks
    assert all(r["prompt_len_tokens"] + 16 <= 4096 for r in recs)
    gaps = [b["arrival_s"] - a["arrival_s"] for a, b in zip(recs, recs[1:])]
    assert min(gaps) >= 0 and recs[-1]["arrival_s"] == pytest.approx(len(recs) / 2.0)


def test_trace_chunks_must_be_whole_blocks(smollm2_tokenizer):
    with pytest.raises(ValueError, match="multiple of the KV block size"):
        build(smollm2_tokenizer, "trace", path=str(TRACE), requests=3, chunk_tokens=100, rate=1.0)


def test_trace_capacity_curve_matches_its_readme():
    """The trace README: a block-level LRU over the whole trace hits 4.4% at 1,000 blocks and 21.1% at 10,000."""
    curve = trace_capacity_curve(TRACE, [1000, 10000])
    assert curve[1000] == pytest.approx(0.044, abs=0.002) and curve[10000] == pytest.approx(0.211, abs=0.002)


def test_a_prompt_that_cannot_fit_is_refused(smollm2_tokenizer):
    with pytest.raises(ValueError, match="do not fit max_model_len"):
        build_shape_prompts(
            smollm2_tokenizer,
            Shape("s", "multi_turn", {"system_tokens": 256, "sessions": 1, "turns": 8, "answer_tokens": 200}),
            DEFAULT_QUESTIONS,
            B,
            7,
            1024,
            16,
            49152,
        )


def test_the_vendored_trace_is_found_from_any_working_directory(tmp_path, monkeypatch):
    from pathlib import Path

    from prefixbench.config import shapes

    monkeypatch.chdir(tmp_path)
    entry = {"kind": "trace", "path": "resources/traces/mooncake/conversation_trace.jsonl.gz", "requests": 2}
    got = shapes({"shapes": {"t": {**entry, "chunk_tokens": 128, "rate": 1.0}}})["t"]
    assert Path(got.params["path"]).is_file() and Path(got.params["path"]).is_absolute()


def test_shapes_table_keeps_the_configs_order_not_the_names():
    import polars as pl

    from prefixbench.shapes.findings import shapes_table

    names = ["overflow_ws50", "overflow_ws100", "overflow_ws400"]
    sp = pl.DataFrame(
        {
            "regime": sorted(names),  # as the summary sorts them: ws100, ws400, ws50
            "concurrency": [1, 1, 1],
            "request_rate": [0.0, 0.0, 0.0],
            "mean_ttft_s_off": [0.034, 0.035, 0.034],
            "mean_ttft_s_on": [0.026, 0.031, 0.027],
            "ttft_speedup": [1.31, 1.13, 1.26],
            "throughput_gain": [1.05, 1.02, 1.05],
        }
    )
    check = pl.DataFrame(
        {"regime": ["x"], "concurrency": [1], "request_rate": [0.0]},
    )
    table = shapes_table(sp, check, {n: {"kind": "kv_overflow"} for n in names})
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == names
