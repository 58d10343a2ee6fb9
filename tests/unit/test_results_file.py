"""results.json: built from a run's tables, checked against config/schema/results.schema.json (prefixbench.results_file)."""

from __future__ import annotations

import copy
import json

import jsonschema
import polars as pl
import pytest
import yaml
from helpers import ROOT

from prefixbench.results_file import (
    SCHEMA_PATH,
    ResultsError,
    Setup,
    build_results,
    config_digest,
    dumps,
    read_results,
    validate,
    write_results,
)
from prefixbench.verdicts import read_contrasts

SMOL = ROOT / "docs/results/h200-2026-12-01-paired-smollm2"
OLD = ROOT / "docs/results/h200-2026-11-28b/smollm2-135m"
LIFETIMES = [
    {"mode": m, "instance": 1, "lifetime": "#1", "startup_s": 50.0, "kv_blocks": 364706, "vllm_version": "0.26.0"}
    | {"hardware": {"gpu": "NVIDIA H200, 143771 MiB"}, "started_by_prefixbench": True, "dtype_choice": None}
    for m in ("no_prefix_cache", "with_prefix_cache")
]


def setup_of(run) -> Setup:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    target = cfg["targets"]["gpu"]
    return Setup("gpu", target["model"], target["block_size"], cfg["benchmark"]["max_tokens"], target["dtype"], cfg)


def result_of(run=SMOL, shape_points: pl.DataFrame | None = None) -> dict:
    summary = pl.read_csv(run / "summary.csv", infer_schema_length=None)
    speedup = pl.read_csv(run / "speedup.csv", infer_schema_length=None)
    contrasts = read_contrasts(run / "summary.csv", run / "speedup.csv")
    return build_results(setup_of(run), LIFETIMES, summary, speedup, contrasts, shape_points)


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_published_run_validates_and_says_what_it_measured():
    r = result_of()
    validate(r)
    assert r["schema_version"] == 1
    s = r["setup"]
    assert (s["engine"], s["model"]["weights"], s["block_size"], s["max_tokens"]) == (
        {"name": "vllm", "version": "0.26.0"},
        "real",
        16,
        32,
    )
    assert s["config_digest"].startswith("sha256:") and s["concurrency"] == [1, 16]
    assert r["totals"] == {"points": 8, "requests": 5304, "failed": 0}  # as the published report counts them
    # latencies in ms: the cache-off 100% c=1 point's mean TTFT of 0.026549 s
    p = next(p for p in r["points"] if (p["mode"], p["reuse_pct"], p["concurrency"]) == ("no_prefix_cache", 100, 1))
    assert p["mean_ttft_ms"] == 26.549 and p["p95_ttft_ms"] == 33.269 and p["requests_ok"] == 52
    c = next(c for c in r["contrasts"] if c["key"] == "cache_effect/ttft/large/100/c1/point")
    assert (c["verdict"], round(c["ratio"], 2), round(c["mde_pct"], 1)) == ("faster", 1.52, 8.7)
    assert len(r["contrasts"]) == 16
    cm = r["cache_model"]
    assert cm["cache_off_hit_tokens"] == 0 and cm["forced_miss_cached_tokens"] == 0
    full = next(h for h in cm["single_prefix"] if (h["reuse_pct"], h["concurrency"]) == (100, 16))
    assert (full["expected_cached_tokens"], full["measured_cached_tokens"]) == (850944, 858928)


def test_run_without_paired_design_or_lifetime_info_validates():
    """An older run: no forced misses (null, not 0), shapes in the points, and no server.json at hand."""
    summary = pl.read_csv(OLD / "summary.csv", infer_schema_length=None)
    speedup = pl.read_csv(OLD / "speedup.csv", infer_schema_length=None)
    points = pl.DataFrame(
        {
            "regime": ["chat"],
            "workload": ["multi_turn"],
            "concurrency": [1],
            "request_rate": [0.0],
            "requests": [12],
            "prompt_tokens": [9000],
            "expected_cached_tokens": [6000],
            "predicted_cached_tokens": [6016],
            "measured_cached_tokens": [6016],
            "exact": [12],
            "off_by_more_than_a_block": [0],
            "max_diff_tokens": [0],
            "working_set": [None],
            "kv_blocks": [1000],
            "unpredicted": [0],
            "unpredicted_reason": [None],
            "expected_hit_rate": [0.66],
            "predicted_hit_rate": [0.67],
            "measured_hit_rate": [0.67],
        }
    )
    r = build_results(setup_of(OLD), [], summary, speedup, read_contrasts(OLD / "summary.csv", OLD / "speedup.csv"), points)
    validate(r)
    assert r["cache_model"]["forced_miss_cached_tokens"] is None
    assert r["cache_model"]["shapes"][0]["predicted_cached_tokens"] == 6016
    assert r["setup"]["engine"]["version"] is None and r["setup"]["lifetimes"] == []
    assert any(c["family"] == "shape" for c in r["contrasts"])


@pytest.mark.parametrize(
    "break_it, where",
    [
        (lambda r: r["contrasts"][0].update(verdict="probably faster"), "contrasts/0/verdict"),
        (lambda r: r["points"][0].update(mean_ttft_ms="26 ms"), "points/0/mean_ttft_ms"),
        (lambda r: r["setup"].update(colour="blue"), "setup"),
        (lambda r: r.update(schema_version=2), "schema_version"),
        (lambda r: r["setup"].pop("config_digest"), "setup"),
    ],
)
def test_a_broken_result_names_the_field(break_it, where):
    r = copy.deepcopy(result_of())
    break_it(r)
    with pytest.raises(ResultsError, match=f"(?m)^  {where}: "):
        validate(r)


def test_written_file_is_deterministic_and_reads_back(tmp_path):
    """Two writes of the same outputs are byte-identical (a re-render changes nothing), and read_results reads it."""
    contrasts = tmp_path / "contrasts.csv"
    read_contrasts(SMOL / "summary.csv", SMOL / "speedup.csv").write_csv(contrasts)
    infos = []
    for i, info in enumerate(LIFETIMES):
        infos.append(tmp_path / f"server{i}.json")
        infos[-1].write_text(json.dumps(info))
    empty = tmp_path / "shape_points.csv"
    empty.write_text("")
    for out in ("a.json", "b.json"):
        write_results(setup_of(SMOL), infos, SMOL / "summary.csv", SMOL / "speedup.csv", contrasts, empty, tmp_path / out)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    back = read_results(tmp_path / "a.json")
    assert back["contrasts"][0]["key"] == "cache_effect/ttft/large/100/c1/point"
    assert "NaN" not in (tmp_path / "a.json").read_text()


def test_non_finite_numbers_become_null():
    r = result_of()
    r["points"][0]["tok_s"] = float("nan")
    from prefixbench.results_file import clean

    assert clean(r)["points"][0]["tok_s"] is None
    json.loads(dumps(clean(r)))


def test_config_digest_ignores_key_order():
    a = {"benchmark": {"max_tokens": 8, "concurrency": [1, 4]}, "seed": 7}
    b = {"seed": 7, "benchmark": {"concurrency": [1, 4], "max_tokens": 8}}
    assert config_digest(a) == config_digest(b) != config_digest(a | {"seed": 8})


def test_wrong_version_is_refused(tmp_path):
    r = result_of()
    r["schema_version"] = 99
    (tmp_path / "results.json").write_text(json.dumps(r))
    with pytest.raises(ResultsError, match="schema_version 99"):
        read_results(tmp_path)


def test_real_shape_prediction_check_validates():
    """The cache model's check as aggregation computes it (shapes.results.prediction_check) on a run with every shape
    kind, open loop included: each shape point lands in cache_model.shapes with the schema's types."""
    from prefixbench.shapes.results import prediction_check, read_shape_table

    check = prediction_check(read_shape_table(OLD / "shape_requests.csv"), 16)
    summary = pl.read_csv(OLD / "summary.csv", infer_schema_length=None)
    speedup = pl.read_csv(OLD / "speedup.csv", infer_schema_length=None)
    contrasts = read_contrasts(OLD / "summary.csv", OLD / "speedup.csv")
    r = build_results(setup_of(OLD), LIFETIMES, summary, speedup, contrasts, check)
    validate(r)
    shapes = r["cache_model"]["shapes"]
    assert len(shapes) == check.height
    trace = next(s for s in shapes if s["regime"] == "trace")
    assert trace["request_rate"] == 20.0 and trace["predicted_cached_tokens"] == trace["measured_cached_tokens"]


def test_older_run_as_re_aggregated_validates(tmp_path):
    """The 2026-11-28 SmolLM2 run re-aggregated by today's code (bash scripts/rerender.sh): its speedup.csv has the
    forced-miss columns, empty (no paired design), and a CSV's empty column reads back as text, which results_json
    once failed to sum. Empty forced-miss columns count as none (null, as a table without them), and it validates."""
    speedup = pl.read_csv(OLD / "speedup.csv", infer_schema_length=None).with_columns(
        pl.lit(None, dtype=pl.Int64).alias(c) for c in ("salted_cached_tokens", "salted_requests", "salted_failed")
    )
    speedup.write_csv(tmp_path / "speedup.csv")
    assert pl.read_csv(tmp_path / "speedup.csv", infer_schema_length=None)["salted_requests"].dtype == pl.String
    contrasts = tmp_path / "contrasts.csv"
    read_contrasts(OLD / "summary.csv", tmp_path / "speedup.csv").write_csv(contrasts)
    infos = []
    for i, info in enumerate(LIFETIMES):
        infos.append(tmp_path / f"server{i}.json")
        infos[-1].write_text(json.dumps(info))
    (tmp_path / "shape_points.csv").write_text("")
    out = tmp_path / "results.json"
    write_results(
        setup_of(OLD), infos, OLD / "summary.csv", tmp_path / "speedup.csv", contrasts, tmp_path / "shape_points.csv", out
    )
    r = read_results(out)
    assert r["cache_model"]["forced_miss_cached_tokens"] is None
    summary = pl.read_csv(OLD / "summary.csv", infer_schema_length=None)
    assert r["totals"]["requests"] == summary["requests_sent"].sum()
    assert {c["design"] for c in r["contrasts"]} == {"lifetimes"} and any(c["family"] == "shape" for c in r["contrasts"])
