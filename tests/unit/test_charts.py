"""The charts a reader trusts at a glance (issue 22): numeric order, a reader's words, ms, intervals, no overlapping
labels; the contrast forest plot, the TTFT distributions, hit rate vs KV capacity in GiB, the trace's curve; and the
Vega-Lite spec written beside each PNG for the HTML report."""

from __future__ import annotations

import json

import polars as pl
import pytest
from helpers import ROOT  # noqa: E402

from prefixbench import OFF, ON
from prefixbench.chart_specs import CHARTS, EXTENSIONS, chart_files, chart_names
from prefixbench.charts import (
    CACHE_ORDER,
    DRAW,
    FORCED_MISS,
    ChartData,
    capacity_curve,
    contrasts_chart,
    fit_band,
    forest_rows,
    kv_bytes_per_token,
    kv_cache_dtype,
    log_ticks,
    ratio_ci,
    save_chart,
    throughput_vs_p95,
    trace_capacity_chart,
    ttft_quantiles,
    ttft_vs_concurrency,
)
from prefixbench.kvcache import block_hashes

SLO = {"p95_ttft_s": 1.0, "p95_e2e_s": 10.0}


def summary_frame(with_ci: bool = True) -> pl.DataFrame:
    """Closed-loop points of one regime at reuse 0, 50 and 100 % (written in text order: 0, 100, 50), c = 1 and 16."""
    rows = []
    for reuse in (0, 100, 50):
        for conc in (1, 16):
            for mode, base in ((OFF, 0.030), (ON, 0.020)):
                rows.append(
                    {"mode": mode, "regime": "large", "prefix_len_tokens": 1024, "reuse_pct": reuse,
                     "concurrency": conc, "request_rate": 0.0, "workload": "rag_document", "requests_ok": 10,
                     "prompt_tokens": 10400, "mean_ttft_s": base * conc, "p50_ttft_s": base * conc,
                     "p95_ttft_s": 1.5 * base * conc, "mean_ttft_warm_s": base * conc, "p95_e2e_s": 0.2 * conc,
                     "tok_s": 400.0 * conc, "tok_s_lo": 380.0 * conc if with_ci else None,
                     "tok_s_hi": 420.0 * conc if with_ci else None}
                )  # fmt: skip
    return pl.DataFrame(rows)


def spec(chart) -> dict:
    return chart.to_dict()


def walk(node):
    """Every dict in a Vega-Lite spec."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def test_charts_and_their_files_are_registered_once():
    """Every chart has a drawing and a caption; each writes a PNG, an SVG and its Vega-Lite spec (the HTML report
    embeds NAME.vl.json); a chart of one shape kind is drawn only where the run has that kind."""
    assert set(DRAW) == {c.name for c in CHARTS}
    assert "vl.json" in EXTENSIONS
    assert chart_files(["contrasts"]) == [f"results/charts/contrasts.{e}" for e in EXTENSIONS]
    plain = chart_names(rates=False, shapes=False)
    assert {"contrasts", "ttft_distribution"} <= set(plain)
    assert not {"shapes", "kv_capacity", "trace_capacity", "open_loop"} & set(plain)
    assert {"shapes", "kv_capacity"} <= set(chart_names(rates=False, shapes={"kv_overflow"}))
    assert "trace_capacity" not in chart_names(rates=False, shapes={"kv_overflow"})
    assert "trace_capacity" in chart_names(rates=False, shapes={"trace", "multi_turn"})
    assert "kv_capacity" not in chart_names(rates=False, shapes={"multi_turn"})
    assert {"kv_capacity", "trace_capacity"} <= set(chart_names(rates=False, shapes=True))


def test_facets_and_legends_are_in_numeric_order_and_in_a_readers_words():
    """Reuse 0%, 50%, 100% (not the labels' text order 0, 100, 50); "cache off"/"cache on", never the mode names;
    TTFT in ms."""
    s = spec(ttft_vs_concurrency(summary_frame()))
    assert s["facet"]["row"]["sort"] == ["reuse 0%", "reuse 50%", "reuse 100%"]
    text = json.dumps({k: v for k, v in s.items() if k != "datasets"})
    assert OFF not in text and ON not in text
    colors = [d for d in walk(s) if d.get("field") == "cache" and "scale" in d]
    assert colors and all(d["scale"]["domain"] == ["cache off", "cache on"] for d in colors)
    data = next(iter(s["datasets"].values()))
    row = next(r for r in data if r["mode"] == OFF and r["reuse_pct"] == 0 and r["concurrency"] == 1)
    assert row["mean_ttft_ms"] == pytest.approx(30.0)
    assert any(d.get("title") == "TTFT (ms)" for d in walk(s))


def test_throughput_vs_p95_has_intervals_and_no_point_labels():
    """The throughput's interval is drawn where the summary has one; concurrency is a point shape and a tooltip,
    never text written beside the points (which overlapped)."""
    s = spec(throughput_vs_p95(summary_frame()))
    marks = [d.get("mark") for d in walk(s) if "mark" in d]
    kinds = [m if isinstance(m, str) else m.get("type") for m in marks]
    assert "text" not in kinds
    assert "errorbar" in kinds
    assert any(d.get("field") == "tok_s_lo" for d in walk(s))
    assert any(d.get("field") == "p95_e2e_ms" for d in walk(s))
    without = spec(throughput_vs_p95(summary_frame(with_ci=False)))
    assert "errorbar" not in [(m if isinstance(m, str) else m.get("type")) for d in walk(without) if (m := d.get("mark"))]


def contrast_frame(n_controls: int = 3, n_effects: int = 2, failing_control: bool = False) -> pl.DataFrame:
    rows = []
    for i in range(n_effects):
        for metric, ratio in (("ttft", 1.5), ("e2e", 1.2)):
            rows.append({"family": "cache_effect", "metric": metric, "ratio": ratio, "lo": ratio - 0.1,
                         "hi": ratio + 0.1, "mde_pct": 8.0, "verdict": "faster", "label": f"large · c={i}",
                         "design": "paired", "reason": "interval excludes 1"})  # fmt: skip
    rows.append({"family": "flag_cost", "metric": "ttft", "ratio": None, "lo": None, "hi": None, "mde_pct": None,
                 "verdict": "not measured", "label": "large · 0% reuse · cache on vs off", "design": "lifetimes",
                 "reason": "one lifetime per setting"})  # fmt: skip
    for i in range(n_controls):
        bad = failing_control and i == 0
        rows.append({"family": "control", "metric": "ttft", "ratio": 1.2 if bad else 1.0, "lo": 1.1 if bad else 0.95,
                     "hi": 1.3 if bad else 1.05, "mde_pct": 5.0, "verdict": "faster" if bad else "no difference",
                     "label": f"control {i}", "design": "lifetimes", "reason": "r"})  # fmt: skip
    return pl.DataFrame(rows)


def test_the_contrast_chart_keeps_one_row_per_point_and_at_most_25():
    """One row per (group, label) whatever the number of metrics; past 25 rows the controls that found no
    difference go first (a failing control stays), then rows from the end, and the chart says what it left out."""
    kept, left = forest_rows(contrast_frame())
    assert kept.select("group", "label").unique().height == 2 + 1 + 3 and left == ""
    kept, left = forest_rows(contrast_frame(n_controls=30, n_effects=5, failing_control=True))
    labels = kept["label"].unique().to_list()
    assert "control 0" in labels and "control 1" not in labels
    assert "29 controls that found no difference" in left
    kept, left = forest_rows(
        contrast_frame(n_controls=10, n_effects=20, failing_control=True).with_columns(
            pl.when(pl.col("family") == "control").then(pl.lit("faster")).otherwise(pl.col("verdict")).alias("verdict")
        )
    )
    sizes = kept.select("group", "label").unique().group_by("group").len()
    assert dict(sizes.iter_rows()) == {"what caching bought": 20, "cost of leaving it on (0% reuse)": 1,
                                       "controls (true ratio 1)": 4}  # fmt: skip
    assert left == "not drawn (all in contrasts.csv): 6 rows of controls (true ratio 1)"
    kept, left = forest_rows(contrast_frame(n_controls=0, n_effects=40))
    assert kept.select("group", "label").unique().height == 25
    assert "16 rows of what caching bought" in left
    assert "large · 0% reuse · cache on vs off" in kept["label"].to_list()  # the smaller group is kept whole
    # A shape's throughput sits with the shapes, not with the one-prefix points.
    shaped = pl.concat(
        [
            contrast_frame().with_columns(pl.lit(None, dtype=pl.String).alias("shape")),
            pl.DataFrame(
                {
                    "family": ["shape", "throughput"],
                    "metric": ["ttft", "throughput"],
                    "ratio": [1.3, 1.1],
                    "lo": [1.2, 1.0],
                    "hi": [1.4, 1.2],
                    "mde_pct": [5.0, 5.0],
                    "verdict": ["faster", "no difference"],
                    "label": ["chat (multi_turn) · c=1"] * 2,
                    "design": ["lifetimes"] * 2,
                    "reason": ["r"] * 2,
                    "shape": ["multi_turn"] * 2,
                }  # fmt: skip
            ),
        ],
        how="diagonal",
    )
    kept, _ = forest_rows(shaped)
    chat = kept.filter(pl.col("label") == "chat (multi_turn) · c=1")
    assert chat["group"].unique().to_list() == ["workload shapes"] and chat.height == 2
    # The groups in the verdict table's order, and each group's rows in the file's order.
    kept, _ = forest_rows(contrast_frame())
    assert kept["group"].unique(maintain_order=True).to_list() == [
        "what caching bought",
        "cost of leaving it on (0% reuse)",
        "controls (true ratio 1)",
    ]


def test_the_contrast_chart_draws_intervals_the_mde_band_and_verdict_colours():
    s = spec(contrasts_chart(contrast_frame(failing_control=True)))
    data = next(iter(s["datasets"].values()))
    first = next(r for r in data if r["label"] == "large · c=0" and r["metric"] == "ttft")
    assert first["mde_lo"] == pytest.approx(1 / 1.08) and first["mde_hi"] == pytest.approx(1.08)
    missing = next(r for r in data if r["verdict"] == "not measured")
    assert missing["missing_at"] == 1.0
    colors = [d for d in walk(s) if d.get("field") == "shown" and "scale" in d]
    # The failing control is marked as a warning, not as a gain.
    assert colors[0]["scale"]["domain"] == ["faster", "no difference", "not measured", "control found a difference"]
    assert colors[0]["scale"]["range"][0] == "#2ca02c"
    scales = [d["scale"] for d in walk(s) if d.get("field") in ("ratio", "lo", "mde_lo") and "scale" in d]
    assert scales and all(sc["type"] == "log" for sc in scales)
    assert contrasts_chart(pl.DataFrame()).to_dict()["mark"]["type"] == "text"  # a run without contrasts says so


def test_ttft_quantiles_keep_the_forced_misses_apart():
    """The paired design's forced misses inside the cache-on lifetime are their own series, not cache on."""
    rows = []
    for i in range(100):
        base = {"regime": "large", "prefix_len_tokens": 1024, "reuse_pct": 100, "concurrency": 1,
                "request_rate": 0.0, "workload": "rag_document", "status": "ok", "in_window": True}  # fmt: skip
        rows.append({**base, "mode": OFF, "arm": None, "ttft_s": 0.030 + i * 1e-5})
        rows.append({**base, "mode": ON, "arm": "hit", "ttft_s": 0.010 + i * 1e-5})
        rows.append({**base, "mode": ON, "arm": "miss", "ttft_s": 0.028 + i * 1e-5})
        rows.append({**base, "mode": ON, "arm": "hit", "ttft_s": 5.0, "status": "error"})  # never counted
    q = ttft_quantiles(pl.DataFrame(rows))
    assert q["cache"].to_list() == CACHE_ORDER
    on = q.filter(pl.col("cache") == "cache on").row(0, named=True)
    assert on["requests"] == 100
    assert on["p50"] == pytest.approx(10.0 + 49.5 * 0.01)
    assert q.filter(pl.col("cache") == FORCED_MISS)["p5"][0] > 27.9


def test_ratio_ci_and_fit_band():
    """The hit rate's interval (ratio of sums over requests) covers the rate and narrows with more requests; the
    fit's band contains the line and is narrowest at the samples' mean."""
    r, lo, hi = ratio_ci([50, 0, 100, 50], [100, 100, 100, 100])
    assert r == pytest.approx(0.5) and lo < 0.5 < hi
    _, lo2, hi2 = ratio_ci([50, 0, 100, 50] * 25, [100] * 100)
    assert hi2 - lo2 < hi - lo
    assert ratio_ci([], []) is None
    samples = [(x, 2.0 + 0.5 * x + (0.1 if x % 2 else -0.1)) for x in range(10)]
    band = fit_band(samples, [0.0, 4.5, 9.0])
    assert band is not None
    widths = [h - lo_ for lo_, h in band]
    assert widths[1] < widths[0] and widths[1] < widths[2]
    assert band[1][0] < 2.0 + 0.5 * 4.5 < band[1][1]
    assert fit_band(samples[:2], [1.0]) is None


def test_kv_bytes_per_token_and_dtype(tmp_path):
    """Keys and values, every layer, the KV heads' width, at the KV cache's dtype: Phi-3-mini in bfloat16 takes
    2 x 32 x 3072 x 2 bytes a token (12 GiB for 2048 blocks of 16)."""
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "num_hidden_layers": 32,
                "hidden_size": 3072,
                "num_attention_heads": 32,
                "num_key_value_heads": 32,
                "intermediate_size": 8192,
                "torch_dtype": "bfloat16",
            }
        )  # fmt: skip
    )
    per_token = kv_bytes_per_token(str(tmp_path), "auto")
    assert per_token == 2 * 32 * 3072 * 2
    assert per_token * 2048 * 16 / 2**30 == pytest.approx(12.0)
    assert kv_bytes_per_token(str(tmp_path), "float32") == 2 * per_token
    assert kv_bytes_per_token(str(tmp_path / "none"), "auto") is None
    assert kv_cache_dtype("bfloat16", ["--kv-cache-dtype", "fp8"]) == "fp8"
    assert kv_cache_dtype("bfloat16", ["--kv-cache-dtype=auto"]) == "bfloat16"
    assert kv_cache_dtype("float16", []) == "float16"


def overflow_requests(docs: int, blocks: int, block_size: int = 4, per_doc: int = 3):
    """A uniform pool of `docs` documents of 8 blocks each, each document sent `per_doc` times in turn, one at a
    time, on a server of `blocks` KV blocks: the shape table's rows and the prompts' block hashes."""
    rows, hashes = [], {}
    order = [d for _ in range(per_doc) for d in range(docs)]
    for i, d in enumerate(order):
        tokens = [1000 * d + t for t in range(8 * block_size)] + [9999 - i]
        hashes[("overflow", i)] = block_hashes(tokens, block_size)
        rows.append({"mode": ON, "instance": 1, "regime": "overflow", "repeat": 0, "workload": "kv_overflow",
                     "request_index": i, "status": "ok", "start_s": float(i), "e2e_s": 0.5,
                     "prompt_tokens": len(tokens), "completion_tokens": 1, "cached_tokens": 0,
                     "predicted_cached_tokens": 0, "working_set": docs * 8 / (blocks - 1), "kv_blocks": blocks})  # fmt: skip
    return pl.DataFrame(rows), hashes


def test_the_cache_models_capacity_curve_rises_to_its_plateau():
    """A pool twice the cache's size hits nothing under LRU (each document is evicted before it returns); with
    enough blocks every repeat hits its whole document."""
    req, hashes = overflow_requests(docs=8, blocks=33)
    curve = capacity_curve(req, hashes, 4, (0.5, 1.0, 2.0, 4.0))
    rates = curve.sort("kv_blocks")["predicted"].to_list()
    assert rates == sorted(rates)
    assert rates[0] == 0.0
    assert rates[-1] == pytest.approx(2 / 3 * 32 / 33)  # the second and third pass hit all 8 blocks of 33 tokens
    assert capacity_curve(req, {}, 4, (1.0,)).is_empty()  # without the prompts' hashes there is no curve


def test_trace_curve_in_gib_and_the_served_capacity():
    trace = pl.DataFrame({"regime": ["trace"] * 3, "capacity_blocks": [1000, 10000, 100000], "hit_rate": [0.1, 0.3, 0.5]})
    s = spec(trace_capacity_chart(trace, 2048, 393216.0, 16))
    data = [r for d in s["datasets"].values() for r in d]
    gib = {r["capacity_blocks"]: r["capacity"] for r in data if "capacity_blocks" in r}
    assert gib[1000] == pytest.approx(1000 * 512 * 393216 / 2**30)
    rule = next(r for r in data if "capacity_blocks" not in r)
    assert rule["capacity"] == pytest.approx(12.0)
    assert spec(trace_capacity_chart(trace.clear(), None, None, 16))["mark"]["type"] == "text"


def test_every_chart_writes_its_files_and_a_spec_with_its_data_inline(tmp_path):
    """PNG, SVG and NAME.vl.json (data inline, no URL to fetch), byte-identical when drawn twice."""
    chart = ttft_vs_concurrency(summary_frame())
    files = save_chart(chart, tmp_path, "ttft_vs_concurrency")
    assert [f.name for f in files] == [f"ttft_vs_concurrency.{e}" for e in EXTENSIONS]
    vl = json.loads((tmp_path / "ttft_vs_concurrency.vl.json").read_text())
    assert vl["datasets"] and "url" not in json.dumps(vl)
    first = (tmp_path / "ttft_vs_concurrency.vl.json").read_bytes()
    save_chart(ttft_vs_concurrency(summary_frame()), tmp_path, "ttft_vs_concurrency")
    assert (tmp_path / "ttft_vs_concurrency.vl.json").read_bytes() == first


def test_log_ticks():
    assert log_ticks(13, 130) == [20.0, 50.0, 100.0]
    assert log_ticks(0.87, 1.85) == [0.9, 1.0, 1.2, 1.4, 1.6, 1.8]
    assert log_ticks(0, 1) == []


def test_every_drawing_draws_a_run_without_shapes_or_records(tmp_path):
    """Each registered chart draws from the tables alone (a run without shapes, contrasts or records says so in
    its image rather than failing the rule)."""
    summary = summary_frame()
    data = ChartData(summary, summary, pl.DataFrame(), SLO, None, 16, [])
    for name, draw in DRAW.items():
        assert draw(data).to_dict(), name


def test_the_ideal_chart_uses_the_same_fit_as_the_report(tmp_path):
    """The chart's ideal bar left the calibration's cold requests out of the fit the report's text states (issue 21):
    both now read ideal.cold_samples, and the charts rule takes the calibration as an input."""
    from prefixbench.charts import DRAW, ChartData
    from prefixbench.ideal import cold_samples, ideal_rows, load_shape, prefill_flops

    (tmp_path / "config.json").write_text(
        json.dumps({"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "intermediate_size": 1536})
    )
    shape = load_shape(tmp_path)
    rows = []
    for regime, tokens in (("medium", 520), ("large", 1036)):
        cold = 0.015 + 2e-12 * prefill_flops(shape, tokens)
        for mode, t in (("no_prefix_cache", cold), ("with_prefix_cache", 0.02)):
            rows.append({"mode": mode, "regime": regime, "reuse_pct": 100, "concurrency": 1, "request_rate": 0.0,
                         "requests_ok": 10, "prompt_tokens": 10 * tokens, "prefix_len_tokens": tokens - 12,
                         "mean_ttft_s": t, "mean_ttft_warm_s": t})  # fmt: skip
    summary = pl.DataFrame(rows)
    calibration = tmp_path / "calibration.json"
    requests = [{"prompt_tokens": t, "ttft_s": 0.005 + 3e-12 * prefill_flops(shape, t)} for t in (16, 1036)]
    calibration.write_text(json.dumps({"calibration": {"requests": requests}}))
    samples = cold_samples(calibration)
    report_ideal = [r["ideal_s"] for r in ideal_rows(summary, shape, 16, samples)]  # what ideal_finding states
    assert report_ideal != [r["ideal_s"] for r in ideal_rows(summary, shape, 16)]  # the calibration moves the fit
    chart = DRAW["ideal"](ChartData(summary, summary, pl.DataFrame(), SLO, str(tmp_path), 16, samples))
    points = [r for d in chart.to_dict()["datasets"].values() for r in d if r.get("kind") == "ideal warm (model)"]
    assert [r["ttft_ms"] / 1000 for r in points] == pytest.approx(report_ideal, rel=1e-12)
    assert "calibration=[PLAN_FILE] if PLAN_FILE else []" in (ROOT / "rules/charts.smk").read_text()
    assert "calibration_json=" in (ROOT / "scripts/charts.py").read_text()


# Issue 23: a replicated run's charts.


def replica_tables(tmp_path):
    """The synthetic replicated run's replica_points.csv and a curve of the simulator on a small trace."""
    import gzip
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_replicas_analysis import synthetic_router, tables

    from prefixbench.replicas_analysis import read_table, routing_curve, routing_module

    out = tables(tmp_path, routing=routing_module())
    trace = tmp_path / "t.jsonl.gz"
    rows = [{"timestamp": k, "input_length": 1030, "output_length": 5, "hash_ids": [0, 100 + k % 3, 200 + k]} for k in range(30)]
    with gzip.open(trace, "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    return read_table(out.points), routing_curve(synthetic_router(trace), routing_module())


def test_the_replica_charts_are_drawn_only_for_a_router():
    assert not {"replicas", "routing_curve"} & set(chart_names(rates=True, shapes=True))
    assert {"replicas", "routing_curve"} <= set(chart_names(rates=False, shapes=False, router=True))


def test_the_replicas_chart_sets_three_hit_rates_beside_the_measured_one_with_ttft_and_load(tmp_path):
    from prefixbench.charts_replicas import MEASURED, RATE_WORDS, replicas_chart

    points, _ = replica_tables(tmp_path)
    s = spec(replicas_chart(points))
    assert len(s["hconcat"]) == 3  # hit rates, TTFT, load per replica
    colors = [d for d in walk(s) if d.get("field") == "rate" and "scale" in d]
    assert colors and colors[0]["scale"]["domain"] == [*RATE_WORDS.values(), MEASURED]
    fields = {d.get("field") for d in walk(s)}
    assert {"measured_hit_lo", "measured_hit_hi", "ttft_lo_ms", "ttft_hi_ms", "ttft_p90_ms", "requests"} <= fields
    rows = [d["sort"] for d in walk(s) if d.get("field") == "point" and "sort" in d]
    assert rows and all(r == ["pool c=1", "pool c=4"] for r in rows)  # numeric order of the loads
    text = json.dumps({k: v for k, v in s.items() if k != "datasets"})
    assert "policy" in text and "with_prefix_cache" not in text
    saved = save_chart(replicas_chart(points), tmp_path, "replicas")
    assert saved[0].stat().st_size > 0


def test_the_routing_curve_is_titled_a_simulation_on_a_log_axis_with_the_measured_points(tmp_path):
    from prefixbench.charts_replicas import routing_curve_chart

    points, curve = replica_tables(tmp_path)
    s = spec(routing_curve_chart(curve, points))
    assert s["title"]["text"].startswith("Simulation:")
    scales = [d["scale"] for d in walk(s) if d.get("field") == "replicas" and "scale" in d]
    assert scales and scales[0]["type"] == "log" and scales[0]["domain"] == [1, 64]
    marks = [d["mark"] for d in walk(s) if isinstance(d.get("mark"), dict)]
    assert any(m.get("shape") == "diamond" for m in marks)  # this run's measured kept hit rates
    assert "its own traffic, not the trace" in json.dumps(s["title"])
    assert spec(routing_curve_chart(curve.clear(), points))["mark"]["type"] == "text"  # no simulator: says so
