"""Report rendering from data: the numbers in its sentences are the data's, and 'no difference' is said when true."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from helpers import ROOT  # noqa: E402
from synthetic import write_run

from prefixbench.aggregate import speedups, write_summary
from prefixbench.config import schema_defaults
from prefixbench.findings import helped, judged, ttft_finding, verdict
from prefixbench.report import ReportInputs, render

SLO = schema_defaults()["benchmark"]["slo"]
TEMPLATE = ROOT / "scripts/prefixbench/templates/prefix_caching_results.md.j2"


def make_inputs(tmp_path, **kw):
    recs, metas = write_run(tmp_path / "raw", **kw)
    write_summary(recs, metas, tmp_path / "summary.csv", tmp_path / "speedup.csv")  # what the aggregate rule writes
    summary = pl.read_csv(tmp_path / "summary.csv")
    infos = []
    for mode in ("no_prefix_cache", "with_prefix_cache"):
        p = tmp_path / f"{mode}.json"
        p.write_text(
            json.dumps(
                {
                    "mode": mode,
                    "vllm_version": "9.9.9",
                    "startup_s": 12.5,
                    "warmup_policy": "reset before every point",
                    "hardware": {"cpu": "Test CPU", "cpu_count": 2},
                }
            )
        )
        infos.append(p)
    scripts = []
    for mode in ("no_prefix_cache", "with_prefix_cache"):
        p = tmp_path / f"serve_slm_{mode}.sh"
        p.write_text(f"exec vllm --{mode}\n")
        scripts.append(p)
    prompts = tmp_path / "medium.jsonl"
    prompts.write_text(
        json.dumps(
            {
                "prompt": "PREFIX\nQ: Why?\nA:",
                "prefix_len_tokens": 512,
                "workload": "chat_policy",
                "regime": "medium",
                "reuse_pct": 100,
                "request_index": 0,
                "question": "Why?",
                "prefix_group": "shared",
                "prompt_len_tokens": 520,
                "expected_cached_tokens": 0,
            }
        )
        + "\n"
    )
    return summary, infos, scripts, [prompts]


def render_md(tmp_path, model=None, slo=None, contrasts=False, shapes=None, **kw) -> tuple[str, pl.DataFrame]:
    """The report of a synthetic run; `contrasts`: with the contrasts rule's table (prefixbench.verdicts)."""
    summary, infos, scripts, prompts = make_inputs(tmp_path, **kw)
    out = tmp_path / "report.md"
    contrasts_csv = None
    if contrasts:
        from prefixbench.verdicts import contrast_rows

        contrasts_csv = tmp_path / "contrasts.csv"
        contrast_rows(summary, pl.read_csv(tmp_path / "speedup.csv")).write_csv(contrasts_csv)
    inputs = ReportInputs(
        summary_csv=tmp_path / "summary.csv",
        speedup_csv=tmp_path / "speedup.csv",
        info_paths=infos,
        script_paths=scripts,
        prompt_paths=prompts,
        model=model or {"source": "smollm2_package", "path": "m", "served_name": "s"},
        target="cpu",
        max_tokens=8,
        block_size=128,
        slo=slo or SLO,
        shapes=shapes or {},
        contrasts_csv=contrasts_csv,
    )
    render(inputs, TEMPLATE, out)
    return out.read_text(), summary


def test_report_sections_and_numbers(tmp_path):
    md, summary = render_md(tmp_path, n=40)  # 10 rounds at c=4: enough for an interval at every point
    for heading in [
        "## Appendix B: prefix strategy",
        "## Appendix C: the two server commands",
        "## Appendix D: summary per (prefix length, concurrency)",
        "## Hit rate mental model",
        "## Consulting-ready conclusion",
        "**Did it increase throughput at the same p95?**",
        "**Extra memory overhead?**",
        "**What workload shapes benefit most?**",
        "**How does the benefit change",
    ]:
        assert heading in md
    # The seed's columns, latencies in ms (issue 22: no 0.02935 s in the report; summary.csv keeps seconds).
    assert "| mode | prefix_len_tokens | concurrency | mean_ttft_ms | mean_e2e_ms | p95_e2e_ms | tok_s | notes |" in md
    assert "exec vllm --no_prefix_cache" in md and "Test CPU" in md and "vLLM 9.9.9" in md
    assert "charts/ttft_vs_concurrency.png" in md
    assert "None" not in md and "n/a" not in md
    # The headline TTFT sentence carries the data's own numbers.
    sp = speedups(summary).filter(pl.col("reuse_pct") == 100).sort("ttft_speedup")
    best = sp.row(-1, named=True)
    assert (
        "Yes. At 100% reuse the cache cut mean TTFT at every point, beyond the A/A noise floor" in md
        and f"the largest cut {best['regime']} ({best['prefix_len_tokens']} tokens) at concurrency" in md
    )
    assert "random weights" not in md.lower()
    assert "1 of 40 failed" not in md


def test_failures_show_in_report(tmp_path):
    md, _ = render_md(tmp_path, failed_at=("no_prefix_cache", "large", 100, 4))
    assert "1 failed" in md and "1 of 10 failed, means over ok only" in md


def test_dummy_weights_are_stated(tmp_path):
    md, _ = render_md(tmp_path, model={"source": "dummy", "path": "m", "served_name": "s"})
    assert "Random weights" in md and "--load-format dummy" in md


def test_no_claim_for_a_gain_larger_than_the_hit_rate_can_explain():
    # 17% of the prompt tokens from cache remove at most 17% of the prefill: off/on <= 1 / 0.83 = 1.20x.
    row = {
        "ttft_speedup": 1.47,
        "ttft_speedup_lo": 1.37,
        "ttft_speedup_hi": 1.58,
        "floor_ttft_lo": 0.71,
        "floor_ttft_hi": 1.35,
        "measured_hit_rate_on": 0.17,
        "request_rate": 0.0,
    }
    assert judged(row).startswith("not claimed: 1.47× (95% CI 1.37–1.58) is more than a 17% hit rate can remove")
    assert "(at most 1.20×)" in judged(row) and not helped(row)
    # The same gain at a 60% hit rate (at most 2.5x) stands.
    assert judged(row | {"measured_hit_rate_on": 0.60}) == "1.47× faster (95% CI 1.37–1.58)"
    assert helped(row | {"measured_hit_rate_on": 0.60})
    # An interval that reaches below the bound is not refuted by it; open-loop queues are left out.
    assert helped(row | {"ttft_speedup_lo": 1.19, "floor_ttft_hi": 1.1}) and helped(row | {"request_rate": 20.0})


def test_no_claim_without_an_interval_or_inside_the_aa_floor():
    assert verdict(2.0).startswith("2.00× off/on, not claimed (no interval")
    assert verdict(1.3, ci=(0.9, 1.6)).startswith("no measurable difference")
    # The interval excludes 1 but not the noise two identical setups showed: no claim.
    assert verdict(1.15, ci=(1.05, 1.25), floor=(0.85, 1.2)).startswith("no difference beyond the A/A noise floor")
    assert verdict(1.5, ci=(1.3, 1.7), floor=(0.85, 1.2)) == "1.50× faster (95% CI 1.30–1.70)"
    assert verdict(0.5, ci=(0.4, 0.6), floor=(0.9, 1.1)) == "2.00× slower (95% CI 1.67–2.50)"
    sp = pl.DataFrame(
        {
            "regime": ["a", "a"],
            "prefix_len_tokens": [512, 512],
            "reuse_pct": [100, 100],
            "concurrency": [1, 4],
            "ttft_speedup": [1.01, 0.99],
            "mean_ttft_s_off": [0.1, 0.2],
            "mean_ttft_s_on": [0.099, 0.202],
        }
    )
    assert ttft_finding(sp).answer.startswith("No claim.")
    sp = sp.with_columns(
        pl.Series("ttft_speedup", [1.5, 1.6]),
        pl.Series("ttft_speedup_lo", [1.3, 1.1]),
        pl.Series("ttft_speedup_hi", [1.7, 2.0]),
        pl.Series("aa_ttft_lo", [0.9, 0.9]),
        pl.Series("aa_ttft_hi", [1.2, 1.2]),
    )
    answer = ttft_finding(sp).answer
    assert answer.startswith("Partly.") and "at 1 of 2 points" in answer  # c=4's 1.1 lies inside the A/A band


def draw(tmp_path, **kw) -> list:
    """The three data charts of a synthetic run (make_inputs with `kw`), as the charts rule draws them."""
    from prefixbench.charts import draw_all

    make_inputs(tmp_path, **kw)
    return draw_all(
        summary_csv=tmp_path / "summary.csv",
        speedup_csv=tmp_path / "speedup.csv",
        outdir=tmp_path / "charts",
        names=["ttft_vs_concurrency", "throughput_vs_p95", "speedup"],
        slo=SLO,
        model_dir=None,
        block_size=128,
    )


@pytest.mark.parametrize("name", ["ttft_vs_concurrency", "throughput_vs_p95", "speedup"])
def test_charts_render(tmp_path, name):
    written = draw(tmp_path)
    png = tmp_path / "charts" / f"{name}.png"
    assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert (tmp_path / "charts" / f"{name}.svg").read_text().lstrip().startswith("<svg")


def test_open_loop_goodput(tmp_path):
    # Synthetic open loop: TTFT grows by 10% per 2 req/s offered; cold large prefix = 1.024 s.
    md, summary = render_md(tmp_path, rates=(2.0, 8.0), slo={"p95_ttft_s": 1.1, "p95_e2e_s": 10.0})
    assert "**Open loop: goodput with and without the cache.**" in md and "charts/open_loop.png" in md
    assert "open loop 2 req/s" in md  # the seed table's notes say which rows are open loop
    # large, reuse 100%: cache off p95 TTFT 1.024 s at 2 req/s (meets 1.1 s), 1.33 s at 8 (misses); cache on
    # p95 0.76 s at 8 req/s (one cold request among ten) -> goodput 2 vs 8 req/s.
    assert "large (1024 tok), reuse 100%: cache off 2 req/s (achieved 5.00), on 8 req/s (achieved 5.00), 4.00×" in md


def test_no_open_loop_section_without_rates(tmp_path):
    md, _ = render_md(tmp_path)
    assert "Open loop" not in md


def test_two_lifetimes_show_their_controls_and_order(tmp_path):
    md, summary = render_md(tmp_path, n=40, instances=2, reuses=(100, 0), jitter=0.05)
    assert "off vs off (lifetimes)" in md and "not run (1 lifetime)" not in md
    assert "Each cache setting ran in 2 server lifetimes, interleaved" in md
    assert "Between server lifetimes of the same setting" in md
    assert (summary["instances"] == 2).all()


def test_one_lifetime_says_the_instance_variance_was_not_measured(tmp_path):
    md, _ = render_md(tmp_path, n=40, reuses=(100, 0))
    assert "not run (1 lifetime)" in md and "k = 1" in md


def _tput_rows(regime: str, reuse: int, off: tuple[float, float, float], on: tuple[float, float, float]) -> list[dict]:
    """Two load levels per mode; (tok_s, lo, hi) at p95 0.2 s and twice that throughput at p95 0.4 s."""
    rows = []
    for mode, (t, lo, hi) in (("no_prefix_cache", off), ("with_prefix_cache", on)):
        for k, p95 in ((1, 0.2), (2, 0.4)):
            rows.append(
                {
                    "mode": mode,
                    "regime": regime,
                    "reuse_pct": reuse,
                    "prefix_len_tokens": 512,
                    "p95_e2e_s": p95,
                    "tok_s": t * k,
                    "tok_s_lo": lo * k,
                    "tok_s_hi": hi * k,
                }
            )
    return rows


def test_a_throughput_gain_inside_the_zero_reuse_control_is_not_claimed():
    """The 0%-reuse case is identical work off and on: its on/off spread is the floor a throughput claim must clear."""
    import polars as pl

    from prefixbench.findings import throughput_finding

    summary = pl.DataFrame(
        _tput_rows("r", 0, (1000, 900, 1100), (1000, 900, 1100))  # control: on/off 0.82-1.22
        + _tput_rows("r", 50, (1000, 990, 1010), (1100, 1090, 1110))  # 1.10x, CI 1.08-1.12: inside the control
        + _tput_rows("r", 100, (1000, 990, 1010), (2000, 1980, 2020))  # 2.0x, CI 1.96-2.04: beyond it
    )
    f = throughput_finding(summary)
    by_reuse = {d.split("reuse ")[1].split("%")[0]: d for d in f.details}
    assert "A/A control for throughput" in by_reuse["0"]
    assert "no difference beyond the A/A noise floor" in by_reuse["50"]
    assert "2.00× more" in by_reuse["100"]
    assert f.answer.startswith("In 1 of 2 regime/reuse cases with reuse, beyond the A/A floor")


def test_the_conclusion_quotes_the_strongest_claimed_point_and_its_concurrency():
    """At c=1 the effect sits inside the A/A floor, at c=64 it clears it: the headline is c=64, never the unclaimed c=1."""
    from prefixbench.findings import consulting_bullets

    def point(conc, off, on, lo, hi):
        return {
            "regime": "large",
            "reuse_pct": 100,
            "prefix_len_tokens": 1024,
            "concurrency": conc,
            "mean_ttft_s_off": off,
            "mean_ttft_s_on": on,
            "ttft_speedup": off / on,
            "ttft_speedup_lo": lo,
            "ttft_speedup_hi": hi,
            "floor_ttft_lo": 0.87,
            "floor_ttft_hi": 1.15,
        }

    sp = pl.DataFrame(
        [point(1, 0.034, 0.021, 1.08, 2.41), point(16, 0.171, 0.043, 3.4, 4.59), point(64, 0.330, 0.081, 3.12, 5.07)]
    )
    summary = pl.DataFrame(
        [
            {"mode": "with_prefix_cache", "regime": "large", "reuse_pct": 100, "concurrency": c, "measured_hit_rate": 0.9}
            for c in (1, 16, 64)
        ]
    )
    bullets = consulting_bullets(summary, sp, 16)
    assert "concurrency 64, first-token latency went from 330 ms to 81 ms (4.07× faster" in bullets[0]
    assert "4.07× sooner for a 1024-token shared prefix at 64 requests in flight." in bullets[-1]
    unclaimed = sp.with_columns(pl.lit(1.10).alias("ttft_speedup_lo"))  # nothing clears the floor: the lowest concurrency
    bullets = consulting_bullets(summary, unclaimed, 16)
    # Issue 20: no recommendation, and no "sooner", where nothing was claimed.
    assert bullets[0].startswith("**When to enable it:** this run does not show a gain to enable it for")
    assert "concurrency 1, no difference beyond the A/A noise floor" in bullets[0]
    assert "whenever many requests" not in bullets[0] and "sooner" not in bullets[-1]
    assert "could not be told apart from noise" in bullets[-1]


@pytest.mark.parametrize(
    "kw",
    [
        {"n": 4},  # c=4: four requests are one burst, no window; c=1 measured
        {"n": 4, "concs": (4,)},  # no point has a window at all
        {"n": 4, "instances": 2, "reuses": (100, 50, 0)},  # lifetimes and A/A controls, still no c=4 window
    ],
    ids=["some-points", "no-point", "lifetimes"],
)
def test_points_without_a_window_never_crash_a_finding(tmp_path, kw):
    """Issue 25: an AVX2 run trimmed c=4 to 6 requests, no window opened, and the report died on None - None.
    Every finding must say what it could not measure (the guard in report.render would hide a crash: none may occur)."""
    md, summary = render_md(tmp_path, **kw)
    closed = summary.filter(pl.col("concurrency") == 4)
    assert closed["window_requests"].max() == 0 and closed["mean_ttft_s"].is_null().all()
    assert "Not computed: this analysis failed" not in md
    assert "None" not in md
    assert "not measured (no steady-state window: too few requests for its concurrency)" in md
    assert "had no steady-state window at all" in md  # the design note names them
    if kw.get("concs") == (4,):
        assert "Not answerable from this run: no point at the highest reuse level was measured" in md
        assert "**No conclusion:**" in md
    else:
        assert "**When to enable it:**" in md


def test_a_failing_analysis_costs_only_its_own_answer(capsys):
    from prefixbench.report import guarded

    def broken(_):
        raise TypeError("boom")

    assert guarded(broken, 1).answer.startswith("Not computed: this analysis failed on this run's data (TypeError: boom)")
    assert guarded(broken, 1, fallback=lambda w: [w]) == [
        "Not computed: this analysis failed on this run's data (TypeError: boom); the rest stands."
    ]
    assert "TypeError: boom" in capsys.readouterr().err


def test_charts_render_without_windows(tmp_path):
    written = draw(tmp_path, n=4)
    assert written and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written if p.suffix == ".png")


def test_the_published_smollm2_h200_run_no_longer_says_what_its_data_do_not_carry():
    """Issue 20, item 10: sentences the SmolLM2 H200 report printed that its own data do not support. Rendered again
    from its recorded tables, none may come back (a regression test on real GPU data)."""
    from prefixbench.findings import KIT, consulting_bullets, reuse_finding
    from prefixbench.report import read_tables
    from prefixbench.shapes.kv_overflow import overflow_words
    from prefixbench.shapes.multi_turn import turns_words
    from prefixbench.shapes.results import prediction_check, read_shape_table

    run = ROOT / "docs/results/h200-2026-11-28b/smollm2-135m"
    _, sp_all, _, summary, sp = read_tables(run / "summary.csv", run / "speedup.csv")
    bullets = " ".join(consulting_bullets(summary, sp, 16))
    shapes = reuse_finding(sp.join(summary.select("regime", "workload").unique(), on="regime", how="left")).answer
    req = read_shape_table(run / "shape_requests.csv")
    words = " ".join([bullets, shapes, turns_words(req, KIT), overflow_words(prediction_check(req, 16), KIT)])
    for said in [
        "whenever many requests start with the same long text",  # nothing was claimed
        "sooner for a",  # "made the first token arrive 1.28x sooner ... (within the run's noise)"
        "The best case here was",  # 1.43x, CI 0.97-2.11
        "multi-turn chat, where each turn's history is the next turn's prefix",  # chat: 0.98x at c=16, 0.92x at c=64
        "The gain tracks how much of each prompt",  # 0%-reuse c=1 ratios exceed 50%-reuse ones
        "this run did not show it (hit rate",  # compared hit rates of different points as evidence
        "the cache stops paying",  # ws400 1.47x and 1.13x
        "the benefit grew with the history",  # per-turn ratios without intervals
    ]:
        assert said not in words, said
    assert "this run does not show a gain to enable it for" in bullets
    assert "shown here, not claimed" in words


def test_a_paired_run_is_judged_by_its_paired_contrast_with_an_mde(tmp_path):
    md, _ = render_md(tmp_path, n=24, paired="hit_miss", jitter=0.05, reuses=(100, 0))
    assert "## The cache's effect inside each cache-on lifetime" in md
    assert "| large | 100% | 1 |" in md and "**faster**" in md
    assert "no difference larger than" in md  # the 0%-reuse points: no difference, and how small an effect was ruled out
    assert "hit 0 cached tokens in total, as a salted request must" in md
    assert "A point's effect is measured inside the cache-on server lifetimes" in md


@pytest.mark.parametrize("effect", [1.0, 1.5])
def test_an_aa_paired_run_claims_nothing_and_finds_a_real_difference(tmp_path, effect):
    """Both arms salted (A/A): with no difference between the arms every point says 'no difference'; slow the second
    arm by 1.5x and the same machinery finds the difference (the check can fail), and still claims no cache effect:
    requests that hit nothing cannot owe a gain to the cache."""
    md, _ = render_md(tmp_path, n=32, paired="miss_miss", jitter=0.05, reuses=(100,), arm_effect={"miss_b": effect})
    table = md.split("## The cache's effect inside each cache-on lifetime")[1].split("## The A/A control")[0]
    rows = [line for line in table.splitlines() if line.startswith("| medium") or line.startswith("| large")]
    assert len(rows) == 4 and "**faster**" not in table
    if effect == 1.0:
        assert all("no difference >" in r for r in rows)
    else:
        assert all("more than its hit rate can explain" in r for r in rows)


def test_inside_the_engine_shows_without_workload_shapes(tmp_path):
    """Issue 21's bug: the section sat inside the shapes block, so configs without shapes lost it."""
    md, _ = render_md(tmp_path, engine=True)
    assert "## Inside the engine at the highest concurrency" in md and "## Workload shapes" not in md


def test_an_interpolated_throughput_ratio_has_the_same_concurrency_ratio_beside_it(tmp_path):
    """Issue 20, item 9: the README's bold 1.76x was an interpolation; at the same concurrency the ratio was 1.19x."""
    md, _ = render_md(tmp_path, n=24)
    assert "at the same concurrency, on/off 1.00× at c=1, 1.00× at c=4" in md


def test_the_template_sees_the_typed_context_and_nothing_else():
    """Every name the template reads is a field of ReportContext (or a formatter), and every field is read."""
    from dataclasses import fields

    import jinja2
    from jinja2 import meta

    from prefixbench.report import ReportContext

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    used = meta.find_undeclared_variables(env.parse(TEMPLATE.read_text()))
    names = {f.name for f in fields(ReportContext)}
    assert used - {"fmt_ci", "fmt_s", "fmt_x"} == names


def test_every_registered_chart_has_a_drawing_a_caption_and_a_place_in_the_report(tmp_path):
    """Charts are registered once (prefixbench.chart_specs): the drawings, the captions the rules file them with,
    and the report's images all follow the registry."""
    from prefixbench.chart_specs import CHARTS, charts_for
    from prefixbench.charts import DRAW

    assert set(DRAW) == {c.name for c in CHARTS}
    template = TEMPLATE.read_text()
    for c in CHARTS:
        assert (ROOT / c.caption).is_file(), c.caption
        assert c.section == "charts" or f'chart("{c.name}")' in template, c.name
    md, _ = render_md(tmp_path, rates=(2.0, 8.0), slo={"p95_ttft_s": 1.1, "p95_e2e_s": 10.0})
    for c in charts_for(rates=True, shapes=False):
        assert f"![{c.title}](charts/{c.name}.png)" in md


# Issue 22: the report leads with its verdict.


def cpu_default_design() -> dict:
    """The CPU default config's design (config/config.yaml): its regimes, reuse levels, concurrencies and shapes."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    return {
        "regimes": tuple((name, r["prefix_tokens"]) for name, r in cfg["regimes"].items()),
        "reuses": tuple(next(iter(cfg["regimes"].values()))["reuse_pcts"]),
        "concs": tuple(cfg["benchmark"]["concurrency"]),
        "shapes": {
            name: {"name": name, "kind": s["kind"], "params": {k: v for k, v in s.items() if k != "kind"}}
            for name, s in cfg["shapes"].items()
        },
    }


def test_the_cpu_default_report_leads_with_the_verdict_table_and_the_contrast_chart(tmp_path):
    """Issue 22's done-when: the CPU default's verdict table and contrast chart sit within the report's first 40
    lines, after one line saying what was run; the setup (server scripts, every point's table) comes last."""
    design = cpu_default_design()
    md, _ = render_md(tmp_path, n=24, contrasts=True, shapes=design.pop("shapes"), paired="hit_miss", jitter=0.05, **design)
    lines = md.splitlines()
    first = "\n".join(lines[:40])
    assert lines[2].startswith("**Run:** `s`, real weights · vLLM 9.9.9 (CPU build) · Test CPU (2 cores) · ")
    assert "## Verdict: what caching bought on this run" in first
    table = [line for line in lines[:40] if line.startswith("| `")]
    assert [row.split(" | ")[0] for row in table] == ["| `medium` (512-token prefix, 100% reuse)",
                                                      "| `large` (1024-token prefix, 100% reuse)",
                                                      "| `chat` (multi_turn shape)", "| `pool` (prefix_pool shape)"]  # fmt: skip
    assert "c=1: **" in table[1] and "faster** " in table[1] and "MDE " in table[1]  # a claimed cut, its interval
    assert "**KV capacity cliff:** not measured" in first  # the default runs no kv_overflow shape
    assert "![Every contrast with its 95% interval](charts/contrasts.png)" in first
    # The setup is last: the evidence, then the appendices with the server scripts and the seed's table.
    assert md.index("# The evidence") < md.index("# Appendices: setup and every point") < md.index("exec vllm --")
    assert md.index("## Verdict") < md.index("## Consulting-ready conclusion") < md.index("# The evidence")


def test_a_verdict_cell_puts_the_verdict_first_and_shows_no_ratio_without_a_measurement():
    from prefixbench.findings.lead import cell

    base = {"metric": "ttft", "unit": "ms", "concurrency": 16, "baseline": 212.4, "treated": 96.05}
    faster = cell(base | {"verdict": "faster", "ratio": 2.21, "lo": 1.90, "hi": 2.56, "mde_pct": 21.0})
    assert faster == "c=16: **2.21× faster** 212 ms → 96.0 ms (95% CI 1.90–2.56, MDE 21%)"
    slower = cell(base | {"verdict": "slower", "ratio": 0.8, "lo": 0.7, "hi": 0.9, "mde_pct": None})
    assert slower.startswith("c=16: **1.25× slower**") and "95% CI 1.11–1.43" in slower
    same = cell(base | {"verdict": "no difference", "ratio": 1.01, "lo": 0.97, "hi": 1.06, "mde_pct": 6.0})
    assert same == "c=16: no difference > 6%: 212 ms → 96.0 ms (1.01×, 95% CI 0.97–1.06)"
    unclaimed = cell(base | {"verdict": "not claimed", "ratio": 1.39, "reason": "no interval: too few independent rounds"})
    assert unclaimed.endswith("1.39×, not claimed: 212 ms → 96.0 ms (no interval: too few independent rounds)")
    # Issue 22: "pool c=64 | n/a → n/a | not measured" beside a ratio. No measurement: no ratio, no means, the reason.
    hole = cell({"verdict": "not measured", "ratio": None, "concurrency": 64, "reason": "no steady-state window"})
    assert hole == "c=64: not measured (no steady-state window)" and "×" not in hole and "n/a" not in hole
    tput = cell({"metric": "throughput", "unit": "tok/s", "concurrency": 4, "verdict": "faster", "ratio": 1.5,
                 "lo": 1.2, "hi": 1.8, "baseline": 100.0, "treated": 150.0})  # fmt: skip
    assert tput == "c=4: **1.50× more tok/s** 100 tok/s → 150 tok/s (95% CI 1.20–1.80)"


def test_a_shape_point_without_a_window_shows_no_ratio():
    """Issue 22: the shapes table printed `n/a → n/a | not measured | 1.27×`: a tok/s ratio beside a point that
    measured nothing. Such a row now says what was not measured, in every column."""
    from prefixbench.findings import KIT
    from prefixbench.shapes.findings import point_cells

    hole = {"ttft_speedup": None, "mean_ttft_s_off": None, "mean_ttft_s_on": None, "throughput_gain": 1.27,
            "window_requests_off": 0, "window_requests_on": 0}  # fmt: skip
    cells = point_cells(hole, KIT)
    assert cells["TTFT off → on"] == "not measured" and cells["tok/s on/off"] == "not measured"
    assert cells["verdict"].startswith("not measured (no steady-state window")
    assert "1.27" not in " ".join(cells.values()) and "n/a" not in " ".join(cells.values())


def test_the_time_budget_line_gives_the_share_of_requests_actually_sent():
    """Issue 22: 'send 9912 of their 20568 requests (1% of each point…' where 48% were sent: the common fraction
    was printed as if it were the share. The line now gives the share sent and what each point kept."""
    from prefixbench.plan import plan_summary

    plan = {
        "rates": {"fixed_s": 0.028, "prefill_s_per_token": 1e-5, "decode_s_per_token": 0.003},
        "budget_s": 240.0,
        "min_rounds": 8,
        "fraction": 0.01,
        "trimmed": True,
        "over_budget": False,
        "estimated_s": {"no_prefix_cache": 200.0, "with_prefix_cache": 150.0},
        "full_estimated_s": {"no_prefix_cache": 1500.0, "with_prefix_cache": 1000.0},
        "requests_planned": 9912,
        "requests_full": 20568,
        "points": [{"available": 1000, "request_indices": list(range(10))}] * 2,  # 1% of 1000 is not below 10
    }
    words = plan_summary(plan)
    assert "send 9912 of their 20568 requests (48%: each point the larger of 1% of its requests and its minimum" in words
    assert "(1% of each point" not in words
    at_floor = plan_summary(plan | {"points": [{"available": 100, "request_indices": list(range(48))}] * 2})
    assert "(48%: each point at its minimum, at least 8 round(s) inside its steady-state window" in at_floor


def test_the_ideal_says_measured_and_modelled_apart_never_a_share_above_all():
    """Issue 22: 'the cache removed 17 ms of the 5 ms the compute model allows (372%); -12 ms stayed above the
    ideal'. A saving larger than the model allows is said plainly, with no share and no negative distance."""
    from prefixbench.findings.models import ideal_words

    row = {"regime": "medium", "cold_s": 0.032, "warm_s": 0.015, "ideal_s": 0.027, "tokens": 527, "cached": 512,
           "flops_left": 0.029, "share": None, "fixed_s": 0.010}  # fmt: skip
    words = ideal_words(row)
    assert "ideal warm TTFT is 27 ms (it allows a saving of up to 5 ms)" in words
    assert "Measured warm: 15 ms, a saving of 17 ms, more than the model allows (warm TTFT is 12 ms below the ideal)" in words
    assert "%" not in words.split("remain")[1] and "-" not in words and "stayed above" not in words
    ok = ideal_words(row | {"warm_s": 0.024, "ideal_s": 0.009, "cold_s": 0.038, "share": 0.47})
    assert ok.endswith(
        "a saving of 14 ms: the engine delivered 47% of what the model allows, and warm TTFT stays 15 ms above the ideal."
    )


def test_a_range_of_one_value_is_said_once(tmp_path):
    """Issue 22: '2.47× to 2.47×', '+0.00 to +0.00 GiB', '57% to 57%' in the published reports."""
    md, _ = render_md(tmp_path, n=24)
    for said in ["1.00× to 1.00×", "+0.00 to +0.00 GiB"]:
        assert said not in md, said
    assert "peak server RSS moved by +0.00 GiB" in md


def test_the_published_phi3_h200_run_leads_with_its_verdict(tmp_path):
    """A recorded run (docs/results/h200-2026-12-01-paired, Phi-3 with random weights on an H200), rendered again
    from its recorded tables and server records: its first screen states the answer, with the numbers its data give,
    and none of the sentences issue 22 quoted from the published reports comes back."""
    import tarfile

    from prefixbench.verdicts import read_contrasts

    run = ROOT / "docs/results/h200-2026-12-01-paired"
    with tarfile.open(run / "run_outputs.tar.xz") as tar:
        wanted = [m for m in tar.getmembers() if m.name.endswith(("/i1/server.json", "calibration.json"))]
        tar.extractall(tmp_path, members=wanted, filter="data")
    raw = tmp_path / "results/raw"
    infos = [raw / "no_prefix_cache/i1/server.json", raw / "with_prefix_cache/i1/server.json"]  # off #1, on #1
    read_contrasts(run / "summary.csv", run / "speedup.csv").write_csv(tmp_path / "contrasts.csv")
    inputs = ReportInputs(
        summary_csv=run / "summary.csv",
        speedup_csv=run / "speedup.csv",
        info_paths=infos,
        script_paths=[],
        prompt_paths=[],
        model=json.loads(infos[1].read_text())["model"],
        target="gpu",
        max_tokens=32,
        block_size=16,
        slo=SLO,
        calibration_json=tmp_path / "results/calibration.json",
        contrasts_csv=tmp_path / "contrasts.csv",
    )
    render(inputs, TEMPLATE, tmp_path / "report.md")
    md = (tmp_path / "report.md").read_text()
    lines = md.splitlines()
    first = "\n".join(lines[:40])
    assert lines[2] == (
        "**Run:** `phi3-mini-dummy`, **random weights** · vLLM 0.26.0 (CUDA) · NVIDIA H200 · 4 points, each with the "
        "cache off and on · 1668 requests (0 failed), 2 server lifetimes"
    )
    assert (
        "| `large` (1024-token prefix, 100% reuse) | c=1: **1.65× faster** 40.2 ms → 24.2 ms (95% CI 1.58–1.73, MDE 6%) "
        "| c=16: **2.21× faster** 212 ms → 96.3 ms (95% CI 1.90–2.56, MDE 21%) |" in first
    )
    assert "(one lifetime per setting" not in first.split("| c=16: **2.21×")[0]
    assert "**KV capacity cliff:** not measured" in first and "charts/contrasts.png" in first
    # The sentences issue 22 quoted, and their kin, do not come back.
    for said in ["stayed above the ideal", "% of each point", "2.63× to 2.63×", "+0.00 to +0.00", "47% to 47%"]:
        assert said not in md, said
    # Latencies in ms, never as fractions of a second (0.02935 s), in prose or in tables.
    assert not re.search(r"\b0\.0\d+ s\b", md) and "mean_ttft_s |" not in md
    assert "send 1112 of their 2048 requests (54%: each point at its minimum" in md


def test_the_capacity_cliff_line_reads_the_kv_overflow_sweep():
    """The kv_overflow sweep is the verdict's cliff line (each working set's TTFT verdict, then the hit rates), not a
    row per working set; a run without it or a trace says the cliff was not measured."""
    from prefixbench.findings.lead import verdicts

    def row(regime, ratio, verdict, lo=None, hi=None, reason=""):
        return {"family": "shape", "regime": regime, "shape": "kv_overflow", "reuse_pct": 100, "concurrency": 1,
                "request_rate": None, "metric": "ttft", "baseline": 30.0, "treated": 30.0 / ratio, "unit": "ms",
                "ratio": ratio, "lo": lo, "hi": hi, "mde_pct": 9.0, "verdict": verdict, "reason": reason}  # fmt: skip

    df = pl.DataFrame([row("kv_ws50", 2.0, "faster", 1.8, 2.2), row("kv_ws200", 1.02, "no difference", 0.95, 1.1)])
    shapes = {n: {"kind": "kv_overflow", "params": {"working_set": ws}} for n, ws in (("kv_ws50", 0.5), ("kv_ws200", 2.0))}
    v = verdicts(df, ["kv_ws50", "kv_ws200"], {}, shapes, overflow="As the working set grew, hits fell.")
    assert not v.rows  # the sweep is not a table row
    assert v.cliff.startswith(
        "**KV capacity cliff (kv_overflow sweep, TTFT off → on):** working set 0.5× the KV capacity: **2.00× faster** "
        "30.0 ms → 15.0 ms (95% CI 1.80–2.20, MDE 9%); working set 2× the KV capacity: no difference > 9%"
    )
    assert v.cliff.endswith("As the working set grew, hits fell.")
    assert verdicts(df.clear(), [], {}, {}).cliff.startswith("**KV capacity cliff:** not measured")
    assert verdicts(None, [], {}, {}).missing.startswith("Not computed: this run has no `results/contrasts.csv`")


def test_a_verdict_cell_without_means_shows_none():
    """A contrast whose means were not recorded shows its verdict and interval, never `n/a → n/a`."""
    from prefixbench.findings.lead import cell, cells

    row = {"metric": "ttft", "unit": "ms", "concurrency": 1, "verdict": "no difference", "ratio": 1.02, "lo": 0.9,
           "hi": 1.1, "mde_pct": 8.0, "baseline": None, "treated": None}  # fmt: skip
    assert cell(row) == "c=1: no difference > 8% (1.02×, 95% CI 0.90–1.10)"
    unclaimed = row | {"verdict": "not claimed", "lo": None, "hi": None, "reason": "no interval: one lifetime"}
    assert cells([unclaimed, unclaimed | {"concurrency": 4}]) == (
        "c=1: 1.02×, not claimed (no interval: one lifetime); c=4: 1.02×, not claimed (no interval: one lifetime)"
    )


def test_a_regime_the_time_budget_dropped_whole_keeps_its_row_saying_so():
    """A trimmed CPU default run sent no `medium` point and no c=4 point: the verdict table had no `medium` row and
    `(one load only)` where the plan had dropped the highest load. Every configured regime and shape keeps its row,
    and a cell the plan left empty says it was not run and why (the plan's reason), never a ratio."""
    from prefixbench.findings.lead import verdicts
    from prefixbench.report import configured_regimes

    why = "the 6 min 00 s time budget cannot hold every point at its minimum"

    def point(regime, reuse, conc, dropped=None):
        return {"regime": regime, "reuse_pct": reuse, "concurrency": conc, "request_rate": 0.0, "dropped": dropped}

    plan = {"budget_s": 360, "points": [point("medium", r, c, why) for r in (100, 0) for c in (1, 4)]
            + [point("large", 100, 1), point("large", 100, 4, why), point("large", 0, 1), point("large", 0, 4, why),
               point("chat", 100, 1, why), point("pool", 100, 1)]}  # fmt: skip

    def row(family, metric, regime, reuse, ratio, shape=""):
        return {"family": family, "regime": regime, "shape": shape, "reuse_pct": reuse, "concurrency": 1,
                "request_rate": None, "metric": metric, "baseline": 100.0, "treated": 100.0 / ratio,
                "unit": "tok/s" if metric == "throughput" else "ms", "ratio": ratio, "lo": ratio * 0.9,
                "hi": ratio * 1.1, "mde_pct": 9.0, "verdict": "faster", "reason": ""}  # fmt: skip

    df = pl.DataFrame([row("cache_effect", "ttft", "large", 100, 2.0), row("throughput", "throughput", "large", 100, 1.5),
                       row("flag_cost", "ttft", "large", 0, 1.2), row("shape", "ttft", "pool", None, 1.3, "prefix_pool")])  # fmt: skip
    measured = pl.DataFrame({"regime": ["large", "large", "pool"]})
    assert configured_regimes(measured, plan) == ["medium", "large", "chat", "pool"]  # the config's order
    shapes = {"chat": {"kind": "multi_turn"}, "pool": {"kind": "prefix_pool"}}
    v = verdicts(df, configured_regimes(measured, plan), {"medium": 512, "large": 1024}, shapes, plan=plan)
    by = {r.traffic: r for r in v.rows}
    assert list(by) == ["`medium` (512-token prefix)", "`large` (1024-token prefix, 100% reuse)",
                        "`chat` (multi_turn shape)", "`pool` (prefix_pool shape)"]  # fmt: skip
    medium = by["`medium` (512-token prefix)"]
    assert medium.ttft_low == "not run: the 6 min 00 s time budget dropped it"
    assert {medium.ttft_high, medium.throughput, medium.flag_cost} == {"not run"}
    large = by["`large` (1024-token prefix, 100% reuse)"]
    assert large.ttft_low.startswith("c=1: **2.00× faster**")
    assert large.ttft_high == "c=4 not run: the 6 min 00 s time budget dropped it"  # not "(one load only)"
    assert large.throughput.endswith("; c=4 not run: the 6 min 00 s time budget dropped it")
    assert large.flag_cost.endswith("; c=4 not run: the 6 min 00 s time budget dropped it")
    assert by["`chat` (multi_turn shape)"].ttft_low == "not run: the 6 min 00 s time budget dropped it"
    assert by["`pool` (prefix_pool shape)"].ttft_high == "(the only load run)"
    # Without a plan (an endpoint run, an old run), only the measured regimes, and no reason is invented.
    plain = verdicts(df, configured_regimes(measured, None), {"large": 1024}, {"pool": shapes["pool"]}, plan=None)
    assert [r.traffic for r in plain.rows] == ["`large` (1024-token prefix, 100% reuse)", "`pool` (prefix_pool shape)"]
    assert plain.rows[0].ttft_high == "(the only load run)"
    # The run line counts points (not point x setting rows) and says how many configured ones the budget dropped.
    from prefixbench.findings.lead import run_line

    hw = {"hardware": {"cpu": "Test CPU", "cpu_count": 2}, "vllm_version": "9.9.9"}
    line = run_line({"path": "m"}, hw, {}, "cpu", (3, 72, 0), 2, plan)
    assert (
        "· 3 points of 10 configured (the 6 min 00 s time budget dropped 7, Appendix A), each with the cache off and on" in line
    )
    assert "· 3 points, each with the cache off and on · 72 requests (0 failed)" in run_line(
        {"path": "m"}, hw, {}, "cpu", (3, 72, 0), 2
    )
    # Behind a router the run line names the replicas and the policy the verdicts went through; one server: nothing.
    routed = {**hw, "replicas": [{}, {}], "router": {"primary": "round_robin", "version": "0.1.17"}}
    assert "· 2 replicas behind `vllm-router` 0.1.17, `round_robin` policy (the others: Across replicas) ·" in run_line(
        {"path": "m"}, routed, {}, "cpu", (3, 72, 0), 2
    )
    assert "replicas" not in run_line({"path": "m"}, hw, {}, "cpu", (3, 72, 0), 2)
    # A reason other than the budget's is the plan's own words.
    small = {"budget_s": None, "points": [point("medium", 100, 4, "2 round(s) ... need 16 requests; the point has 12")]}
    assert verdicts(df, ["medium"], {}, {}, plan=small).rows[0].ttft_low == (
        "not run: 2 round(s) ... need 16 requests; the point has 12"
    )


def test_a_one_deployment_endpoint_run_says_cache_off_was_forced_misses(tmp_path):
    """An endpoint run whose cache off was forced misses (`salt_every_request`) on the cache-on deployment: the
    appendix said `no_prefix_cache` "is trusted to run with prefix caching off", which is false there. It now says
    cache off was forced misses on the same deployment and that the flag's own cost was not measured, and the
    verdict's flag-cost column says not measured instead of comparing misses with misses."""
    from prefixbench.verdicts import contrast_rows

    summary, infos, _, prompts = make_inputs(tmp_path, n=24)
    caps = {"metrics": True, "prefix_cache_counters": True, "latency_histograms": True, "cache_reset": "ok", "version": "9.9.9"}
    for path, mode in zip(infos, ("no_prefix_cache", "with_prefix_cache")):
        endpoint = {"base_url": "https://llm.example", "model": "served", "api_key_env": None,
                    "salt_every_request": mode == "no_prefix_cache"}  # fmt: skip
        info = {"mode": mode, "instance": 1, "started_by_prefixbench": False, "endpoint": endpoint, "capabilities": caps,
                "not_measured": ["what the prefix-caching flag itself costs"], "vllm_version": "9.9.9",
                "hardware": {"client": {"cpu": "Test CPU", "cpu_count": 2}, "server": "a remote endpoint"},
                "warmup_policy": "none", "startup_s": None, "description": ""}  # fmt: skip
        path.write_text(json.dumps(info))
    contrast_rows(summary, pl.read_csv(tmp_path / "speedup.csv")).write_csv(tmp_path / "contrasts.csv")
    inputs = ReportInputs(
        summary_csv=tmp_path / "summary.csv",
        speedup_csv=tmp_path / "speedup.csv",
        info_paths=infos,
        script_paths=[],
        prompt_paths=prompts,
        model={"source": "endpoint", "path": "served", "tokenizer": "tok"},
        target="endpoint",
        max_tokens=8,
        block_size=128,
        slo=SLO,
        contrasts_csv=tmp_path / "contrasts.csv",
    )
    render(inputs, TEMPLATE, tmp_path / "report.md")
    md = (tmp_path / "report.md").read_text()
    lines = md.splitlines()
    assert lines[2].startswith("**Run:** `served` · vLLM 9.9.9 · existing endpoint `https://llm.example` · ")
    assert lines[2].endswith("2 passes over the endpoint")
    assert "is trusted to run with prefix caching off" not in md
    assert "## Appendix C: the endpoint\n" in md
    assert "`no_prefix_cache` was\nforced misses, the same requests each with a unique `cache_salt`" in md
    assert "what the prefix-caching flag itself costs was not measured" in md
    table = [line for line in lines[:40] if line.startswith("| `")]
    assert table and all(
        row.rstrip(" |").endswith("not measured: cache off was forced misses (a unique `cache_salt` per request) on the "
                                  "same cache-on deployment, so the flag's own cost is not in this run")
        for row in table
    )  # fmt: skip
    assert "Cache off here is forced misses (a unique `cache_salt` per request) on the same cache-on deployment" in md
    assert "Requests that share nothing showed no measurable cost" not in md  # the conclusion cannot say it either
    assert "What leaving it on costs requests that hit nothing was not measured: cache off was forced misses" in md
    # Two deployments (no salt): the trust sentence stays, the flag cost is the contrast's.
    for path in infos:
        info = json.loads(path.read_text())
        info["endpoint"]["salt_every_request"] = False
        info["endpoint"]["base_url"] = f"https://{info['mode']}.example"
        path.write_text(json.dumps(info))
    render(inputs, TEMPLATE, tmp_path / "two.md")
    two = (tmp_path / "two.md").read_text()
    assert "is trusted to run with prefix caching off" in two and "Cache off here is forced misses" not in two
    assert "2 passes over the endpoints" in two.splitlines()[2]


def test_one_value_ranges_and_an_unmoved_gauge_read_plainly():
    """A trimmed CPU run (one concurrency per regime): 'off 24127 ms–24127 ms' and 'the KV-cache usage gauge peaked
    lower with the cache on at 0 of 2 points and higher at 0' read as if something had been compared."""
    from prefixbench.findings.answers import memory_finding
    from prefixbench.findings.units import fmt_s_range

    assert fmt_s_range((24.127, 24.127)) == "24127 ms" and fmt_s_range((1.0, 2.0)) == "1000 ms–2000 ms"
    point = {"regime": "large", "reuse_pct": 100, "concurrency": 1, "request_rate": 0.0}
    summary = pl.DataFrame([point | {"mode": m, "peak_server_rss_gib": 4.9, "peak_kv_cache_usage": 0.02}
                            for m in ("no_prefix_cache", "with_prefix_cache")])  # fmt: skip
    sp = pl.DataFrame([point | {"peak_server_rss_gib_off": 4.9, "peak_server_rss_gib_on": 5.0,
                                "peak_kv_cache_usage_off": 0.02, "peak_kv_cache_usage_on": 0.02}])  # fmt: skip
    answer = memory_finding(summary, sp).answer
    assert "The KV-cache usage gauge peaked at the same level off and on at every point:" in answer
    assert "at 0 of" not in answer
    higher = sp.with_columns(pl.lit(0.05).alias("peak_kv_cache_usage_on"))
    assert "peaked lower with the cache on at 0 of 1 points and higher at 1:" in memory_finding(summary, higher).answer


# Issue 23: the Across-replicas section.


def test_a_single_server_report_says_across_replicas_was_not_run(tmp_path):
    from prefixbench.findings.replicas import NOT_RUN

    md, _ = render_md(tmp_path)
    assert f"## Across replicas\n\n{NOT_RUN}\n\n## Charts" in md
    assert "charts/replicas.png" not in md and "charts/routing_curve.png" not in md


def render_replicated(tmp_path, offload=None, **kw) -> str:
    """The report of a synthetic replicated run (tests/synthetic.write_replicated_run) as the rules make it; `offload`:
    the second KV tier's section file."""
    from synthetic import POLICIES, write_replicated_run
    from test_replicas_analysis import synthetic_router

    from prefixbench.replicas_analysis import ReplicaTables, routing_module, write_replica_tables

    recs, metas, prompts = write_replicated_run(tmp_path / "raw", **kw)
    write_summary(
        recs,
        metas,
        tmp_path / "summary.csv",
        tmp_path / "speedup.csv",
        tmp_path / "shape_requests.csv",
        prompt_paths=[prompts],
        block_size=16,
        shape_points_csv=tmp_path / "shape_points.csv",
        trace_csv=tmp_path / "trace_capacity.csv",
        policy=POLICIES[0],
    )
    out = ReplicaTables(*(tmp_path / f"{n}.csv" for n in ("req", "points", "contrasts", "sim", "curve")))
    write_replica_tables(recs, metas, [prompts], 16, synthetic_router(), out, routing_module())
    _, infos, scripts, _ = make_inputs(tmp_path / "single")
    inputs = ReportInputs(
        summary_csv=tmp_path / "summary.csv",
        speedup_csv=tmp_path / "speedup.csv",
        info_paths=infos,
        script_paths=scripts,
        prompt_paths=[prompts],
        model={"source": "smollm2_package", "path": "m", "served_name": "s"},
        target="cpu",
        max_tokens=8,
        block_size=16,
        slo=SLO,
        shape_csv=tmp_path / "shape_requests.csv",
        shape_points_csv=tmp_path / "shape_points.csv",
        trace_csv=tmp_path / "trace_capacity.csv",
        shapes={"pool": {"kind": "prefix_pool", "params": {"requests": 24, "documents": 6, "doc_tokens": 64, "zipf_alpha": 1.0}}},
        replica_points_csv=out.points,
        replica_contrasts_csv=out.contrasts,
        routing_sim_csv=out.sim,
        routing_curve_csv=out.curve,
        offload_md=offload,
    )
    render(inputs, TEMPLATE, tmp_path / "report.md")
    return (tmp_path / "report.md").read_text()


def test_a_replicated_run_shows_the_policies_three_hit_rates_and_re_renders_identically(tmp_path):
    md = render_replicated(tmp_path, policy_ttft_s={"cache_aware": 0.03})
    section = md.split("## Across replicas")[1].split("## Charts")[0]
    assert "Policies measured: `cache_aware`, `round_robin`, `consistent_hash`" in section
    header = "| point | policy | requests | in the traffic | kept by the routing | delivered, predicted | delivered, measured (95% CI) |"
    assert header in section
    assert "| pool c=4 | `round_robin` | 48 (2 passes) | 67% | 56% | 31% | 31% (31%–31%) | 48/48 |" in section
    assert "| pool c=1 | `consistent_hash` | 30/18 | 1.25× | 35%/29% | 0 |" in section  # load per replica
    assert "- At pool c=4, the policy with the most hits had the slowest first token: `cache_aware`" in section
    assert "The policy simulator re-routed every measured pass at 2 replicas" in section
    assert "![Hit rates, TTFT and load per routing policy](charts/replicas.png)" in section
    assert "charts/routing_curve.png" not in section  # no trace curve was simulated here
    assert "None" not in section and "n/a" not in section
    again = tmp_path / "again"
    again.mkdir()
    assert render_replicated(again, policy_ttft_s={"cache_aware": 0.03}) == md  # from the same data, the same bytes


def test_the_second_kv_tiers_section_sits_where_the_kv_overflow_section_ends(tmp_path):
    """Issue 24: the offload rule writes its section (findings.offload); the report prints it as written, in the
    shapes' section after the KV overflow sweep, and nothing without it."""
    section = tmp_path / "offload_section.md"
    section.write_text("### A second KV tier in CPU memory\n\nWords from the tier's tables.\n")
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    md = render_replicated(tmp_path / "with", offload=section)
    assert "\n\n### A second KV tier in CPU memory\n\nWords from the tier's tables.\n\n" in md
    shapes_part = md.split("## Workload shapes")[1].split("## Across replicas")[0]
    assert "### A second KV tier in CPU memory" in shapes_part
    assert "A second KV tier" not in render_replicated(tmp_path / "without")
