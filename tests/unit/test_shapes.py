"""Workload shapes: each one's construction, checked by re-tokenizing independently, and its expected hits."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from helpers import ROOT

from prefixbench.corpus import DEFAULT_QUESTIONS
from prefixbench.findings import KIT
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


def test_aggregation_writes_the_trace_curve_the_report_reads(tmp_path):
    """The report no longer re-reads the trace: aggregation writes each replayed trace's curve (trace_capacity.csv)
    and the report's sentence from the file is the one the curve computed in memory gives, digit for digit."""
    import polars as pl

    from prefixbench.shapes.trace import read_trace_curves, trace_curves, trace_words

    check = pl.DataFrame(
        {"regime": ["trace"], "workload": ["trace"], "kv_blocks": [400], "requests": [40], "exact": [38]}
        | {f"{k}_hit_rate": [0.3] for k in ("expected", "predicted", "measured")}
    )
    shapes = {"trace": {"kind": "trace", "params": {"path": str(TRACE), "chunk_tokens": 64}}}
    table = trace_curves(check, shapes, 16)
    table.write_csv(tmp_path / "trace.csv")
    curves = read_trace_curves(tmp_path / "trace.csv")
    assert curves["trace"] == dict(zip(table["capacity_blocks"], table["hit_rate"]))  # exact: full precision
    assert curves["trace"][1000] == pytest.approx(0.044, abs=0.002)
    words = trace_words(check, shapes, 16, curves, KIT)
    assert "capacity curve" in words and "1,000 blocks 4%" in words
    assert "capacity curve" not in trace_words(check, shapes, 16, {}, KIT)  # no curve recorded: no curve claimed
    (tmp_path / "none.csv").write_text("")
    assert read_trace_curves(tmp_path / "none.csv") == {} and trace_curves(check.head(0), shapes, 16).is_empty()


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
    table = shapes_table(sp, check, {n: {"kind": "kv_overflow"} for n in names}, KIT)
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == names


# --- The registry: one module per kind, found through KINDS -----------------------------------------------------


def schema_kinds() -> tuple[list[str], list[str]]:
    """The schema's `kind` enum and the kinds its if/then branches describe."""
    import yaml

    entry = yaml.safe_load((ROOT / "config/schema/config.schema.yaml").read_text())["properties"]["shapes"]
    entry = entry["additionalProperties"]
    return entry["properties"]["kind"]["enum"], [b["if"]["properties"]["kind"]["const"] for b in entry["allOf"]]


def test_every_kind_in_the_schema_has_a_registry_entry_and_back():
    from prefixbench.shapes import KINDS

    enum, branches = schema_kinds()
    assert sorted(enum) == sorted(KINDS) == sorted(branches)
    assert all(kind.name == name for name, kind in KINDS.items())


def test_every_kind_implements_every_method_and_names_its_fields():
    import inspect

    from prefixbench.shapes import KINDS, ShapeKind

    assert ShapeKind.__abstractmethods__  # the contract is enforced by the ABC, not by convention
    for name, kind in KINDS.items():
        for method in ShapeKind.__abstractmethods__:
            assert getattr(type(kind), method) is not getattr(ShapeKind, method), f"{name} does not implement {method}"
            assert inspect.getdoc(getattr(kind, method)), f"{name}.{method} says nothing"
        assert set(kind.table_fields) <= set(kind.record_fields), name
        assert inspect.getmodule(type(kind)).__name__ == f"prefixbench.shapes.{name}"  # one module per kind


def test_a_kind_without_every_method_cannot_be_registered():
    from prefixbench.shapes import ShapeKind

    class Half(ShapeKind):
        name = "half"

        def check(self, shape, target, endpoint):
            return []

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_shape_requests_keeps_the_columns_it_always_kept():
    """The registry derives the CSV's shape columns; their order is the published files' (byte-identical reports)."""
    from prefixbench.shapes.results import SHAPE_COLUMNS

    assert SHAPE_COLUMNS == ["session", "turn", "document", "working_set", "kv_blocks"]


def test_each_kind_contributes_its_own_loads():
    from prefixbench.shapes import KINDS

    conc, rates = [1, 4, 16], [0.5]
    chat, pool = Shape("c", "multi_turn", {}), Shape("p", "prefix_pool", {})
    assert KINDS["multi_turn"].loads(chat, conc, rates) == [(1, 0.0), (4, 0.0), (16, 0.0)]
    assert KINDS["prefix_pool"].loads(pool, conc, rates) == [(1, 0.0), (4, 0.0), (16, 0.0)]
    assert KINDS["trace"].loads(Shape("t", "trace", {"rate": 2}), conc, rates) == [(0, 2.0)]  # open loop, its own rate
    overflow = Shape("o", "kv_overflow", {"capacity_blocks": 26})
    assert KINDS["kv_overflow"].loads(overflow, conc, rates) == [(1, 0.0)]  # one at a time
    assert KINDS["kv_overflow"].kv_capacity(overflow) == 26 and KINDS["prefix_pool"].kv_capacity(pool) is None


def test_each_kind_says_how_its_traffic_runs():
    from prefixbench.shapes import Arrivals, Sessions, kind_of

    turns = [
        {"workload": "multi_turn", "request_index": i, "prompt": f"p{i}", "session": s, "turn": t, "think_time_s": 0.5}
        for i, (t, s) in enumerate([(1, 1), (1, 0), (2, 1), (2, 0)])
    ]
    traffic = kind_of(turns).traffic(turns, 0.0)
    # sessions in the order of their first request, each session's turns in order
    assert traffic == Sessions([[(0, "p0"), (2, "p2")], [(1, "p1"), (3, "p3")]], 0.5)
    trace = [{"workload": "trace", "request_index": i, "prompt": [1, 2], "arrival_s": 0.7 * i} for i in range(3)]
    assert kind_of(trace).traffic(trace, 0.25) == Arrivals([0.0, 0.7, 1.4])
    assert kind_of(trace).traffic(trace, 0.0) is None  # no rate: the point's own loop
    pool = [{"workload": "prefix_pool", "request_index": 0, "prompt": "x", "document": 3}]
    assert kind_of(pool).traffic(pool, 0.0) is None
    assert kind_of([{"workload": "chat_policy", "request_index": 0, "prompt": "x"}]) is None  # one shared prefix
    assert kind_of([]) is None


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"kind": "trace", "path": "no/such/trace.jsonl", "requests": 2, "chunk_tokens": 128, "rate": 1.0}, "no such trace"),
        ({"kind": "trace", "path": str(TRACE), "requests": 2, "chunk_tokens": 100, "rate": 1.0}, "multiple of the KV block"),
    ],
)
def test_a_kinds_own_config_check_names_the_key(entry, needle):
    from prefixbench import config as pbconfig

    cfg = {"regimes": {}, "benchmark": {"max_tokens": 16}, "questions": "default", "align_to_block": True, "shapes": {"t": entry}}
    with pytest.raises(pbconfig.ConfigError, match=needle):
        pbconfig.check(cfg, {"max_model_len": 4096, "block_size": 16, "model": {"source": "hub", "path": "x"}})


def test_kv_overflow_needs_a_server_prefixbench_starts_and_one_capacity():
    from prefixbench import config as pbconfig
    from prefixbench.shapes import KINDS

    entry = {"kind": "kv_overflow", "capacity_blocks": 26, "doc_tokens": 384, "working_sets": [0.5, 2.0], "requests": 4}
    shapes = pbconfig.shapes({"shapes": {"ov": entry}})
    assert list(shapes) == ["ov_ws50", "ov_ws200"] and shapes["ov_ws200"].params["working_set"] == 2.0
    assert "working_sets" not in shapes["ov_ws50"].params
    assert KINDS["kv_overflow"].check(shapes["ov_ws50"], {}, endpoint=True) == [
        "shapes.ov_ws50: kv_overflow sets the server's KV size, so it needs a server prefixbench starts"
    ]
    assert KINDS["kv_overflow"].check(shapes["ov_ws50"], {}, endpoint=False) == []
    with pytest.raises(pbconfig.ConfigError, match="different capacity_blocks"):
        pbconfig.kv_capacity({"shapes": {"a": entry, "b": {**entry, "capacity_blocks": 30}}})


def test_every_kind_describes_itself_and_fills_its_report_sections_even_without_data():
    import polars as pl

    from prefixbench.shapes import KINDS
    from prefixbench.shapes.base import ShapeEvidence
    from prefixbench.shapes.findings import describe, kind_sections

    params = {
        "multi_turn": {"sessions": 2, "turns": 3, "system_tokens": 64, "answer_tokens": 8},
        "prefix_pool": {"requests": 9, "documents": 3, "doc_tokens": 64, "zipf_alpha": 1.0},
        "kv_overflow": {"capacity_blocks": 26, "working_set": 1.5, "requests": 4},
        "trace": {"requests": 10, "chunk_tokens": 128, "rate": 0.5},
    }
    assert set(params) == set(KINDS)  # a new kind adds its line here
    for kind, p in params.items():
        assert describe({"kind": kind, "params": p}, 30)
    assert describe({"kind": "kv_overflow", "params": params["kv_overflow"]}, 30).endswith(
        "(26 KV blocks (server: 30)), 4 requests, one at a time"
    )
    empty = ShapeEvidence(pl.DataFrame(), pl.DataFrame(), pl.DataFrame(), {}, 16)
    sections = kind_sections(empty, KIT)
    assert set(sections) == {s for k in KINDS.values() for s in k.sections} == {
        "turns_table", "turns", "overflow_table", "overflow", "trace"
    }  # fmt: skip
    assert all(v == "" for v in sections.values())


def test_the_trace_curve_positions_are_a_pure_function_of_the_served_capacity():
    from prefixbench.shapes.trace import CURVE_CAPACITIES, curve_capacities

    at = curve_capacities(1000, 16, 128)
    assert (at.cap_tokens, at.native, at.scaled) == (16000, 31, 125)
    assert at.capacities == sorted({*CURVE_CAPACITIES, 31, 125})
    assert curve_capacities(1, 16, 128).capacities[0] == 1  # a cache smaller than a block still has a position


def test_the_measuring_steps_import_no_report_code_through_the_shapes():
    """A kind's module is imported by `measure` (its traffic) and `shape_prompts`: editing the report's wording must
    not make their code inputs newer than their results. Both closures follow the shapes subpackage."""
    from prefixbench.config import script_closure

    for script in ("measure", "shape_prompts"):
        names = {
            Path(f).relative_to(ROOT / "scripts/prefixbench").as_posix() for f in script_closure(ROOT / f"scripts/{script}.py")
        }
        assert {"shapes/__init__.py", "shapes/base.py", "shapes/multi_turn.py", "shapes/trace.py"} <= names, script
        assert not names & {"findings.py", "formatting.py", "shapes/findings.py", "shapes/results.py", "report.py"}, script


def test_the_shape_prompts_code_inputs_cover_every_module_it_loads():
    import subprocess
    import sys

    from prefixbench.config import script_closure

    closure = set(script_closure(ROOT / "scripts/shape_prompts.py"))
    probe = (
        "import sys, prefixbench.shapes, prefixbench.prompts, prefixbench.tokenizer\n"
        "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('prefixbench') and m.__file__))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT / "scripts", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = {str(Path(f).resolve()) for f in out.stdout.split()}
    assert loaded and loaded <= closure, sorted(loaded - closure)


def test_the_overflow_table_says_what_was_not_measured_and_shows_no_ratio():
    """Issue 22: the kv_overflow table printed `n/a → n/a` and `n/a` for a working set without a measurement, and its
    sentence pointed to "each working set's verdict in the table", which is now the verdict's cliff line."""
    import polars as pl

    from prefixbench.shapes.kv_overflow import overflow_table, overflow_words

    check = pl.DataFrame(
        {
            "regime": ["ov_ws50", "ov_ws200", "ov_ws400"],
            "workload": ["kv_overflow"] * 3,
            "working_set": [0.5, 2.0, 4.0],
            "predicted_hit_rate": [0.9, 0.3, 0.1],
            "measured_hit_rate": [0.88, 0.31, None],
            "exact": [10, 9, 0],
            "requests": [10, 10, 10],
        }
    )
    sp = pl.DataFrame(
        {
            "regime": ["ov_ws50", "ov_ws200"],
            "reuse_pct": [100, 100],
            "concurrency": [1, 1],
            "request_rate": [0.0, 0.0],
            "mean_ttft_s_off": [0.030, 0.031],
            "mean_ttft_s_on": [0.015, None],
            "ttft_speedup": [2.0, None],
            "window_requests_off": [10, 10],
            "window_requests_on": [10, 0],
        }
    )
    table = overflow_table(check, sp, KIT)
    assert "n/a" not in table and "| 4 | 10% | not measured | 0/10 | not measured | not measured: no off/on pair" in table
    row200 = next(line for line in table.splitlines() if line.startswith("| 2 |"))
    assert "| not measured | not measured (no steady-state window" in row200 and "×" not in row200
    assert "30 ms → 15 ms" in table
    # The sentence says only what was measured and points nowhere.
    words = overflow_words(check.filter(pl.col("working_set") < 3), KIT, sp)
    assert words.startswith("As the working set grew from 0.5x to 2x the KV capacity, the measured hit rate went from 88% to 31%")
    assert "in the table" not in words and "n/a" not in words and "evicted" in words
    assert overflow_words(check, KIT, sp) == (
        "The hit rate was not measured at working set 4x, so how hits moved from 0.5x to 4x the KV capacity is not known."
    )
    both = sp.with_columns(pl.lit(0.025).alias("mean_ttft_s_on"))
    assert overflow_words(check.filter(pl.col("working_set") < 3), KIT, both).endswith(
        "; mean TTFT with the cache on stayed at 25 ms."
    )
