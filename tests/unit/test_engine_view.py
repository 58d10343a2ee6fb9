"""The report's look inside the engine: numbers from vLLM's histograms, words that follow them."""

from __future__ import annotations

import polars as pl

from prefixbench.engine_view import engine_rows, engine_table, engine_words


def _row(mode: str, conc: int, tokens_per_step: float, step_s: float, lo: float, hi: float, queue_s: float) -> dict:
    return {
        "mode": mode,
        "regime": "large",
        "reuse_pct": 100,
        "prefix_len_tokens": 1024,
        "concurrency": conc,
        "request_rate": 0.0,
        "instances": 2,
        "server_steps_count": 700.0,
        "tokens_per_step": tokens_per_step,
        "step_s": step_s,
        "step_s_min": lo,
        "step_s_max": hi,
        "server_mean_queue_s": queue_s,
        "server_mean_prefill_s": 0.04,
        "server_mean_decode_s": 0.15,
        "server_mean_ttft_s": 0.16,
        "server_preemptions": 0.0,
    }


def test_a_fixed_cost_step_is_named_and_lifetime_spread_reported():
    summary = pl.DataFrame(
        [
            _row("no_prefix_cache", 64, 1646, 0.0086, 0.0076, 0.0097, 0.0176),
            _row("with_prefix_cache", 64, 70, 0.0071, 0.0057, 0.0086, 0.0),
            _row("no_prefix_cache", 1, 1000, 0.02, 0.02, 0.02, 0.0),  # not the highest concurrency: left out
        ]
    )
    rows = engine_rows(summary)
    assert rows.height == 2 and set(rows["concurrency"]) == {64}
    assert "| large | 100% | no_prefix_cache | 700 | 1646 | 8.6 (7.6–9.7) |" in engine_table(rows)
    (words,) = engine_words(rows)
    assert "70 tokens instead of 1646 (23.5× fewer" in words
    assert "Removing 96% of the tokens removed 17% of the step time" in words
    assert "queueing went 17.6 → 0.0 ms" in words
    assert "differed by up to 51%" in words  # on: 5.7-8.6 ms


def test_compute_bound_steps_are_called_so_and_missing_histograms_leave_the_section_out():
    summary = pl.DataFrame(
        [
            _row("no_prefix_cache", 64, 1646, 0.030, 0.030, 0.030, 0.05),
            _row("with_prefix_cache", 64, 70, 0.010, 0.010, 0.010, 0.0),
        ]
    )
    (words,) = engine_words(engine_rows(summary))
    assert "3.0× shorter): prefill compute was a large part of every step" in words
    assert "differed by up to" not in words
    assert engine_rows(summary.with_columns(pl.lit(None, dtype=pl.Float64).alias("tokens_per_step"))).is_empty()
