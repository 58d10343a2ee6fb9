"""The cross-checks: client timings against the server's histograms, hits against the prompt generator's
expectation, and how the latencies were measured (steady-state windows, schedule lag, lifetimes).
"""

from __future__ import annotations

import polars as pl

from .. import OFF, ON
from ..aggregate import closed_loop, open_loop
from ..scalars import num, opt_num, whole
from .claims import Finding, load_label, point_name, rows_of
from .units import fmt_s, ms_table

GAP_FLAG_S, GAP_FLAG_FRAC = 0.05, 0.25  # client-vs-server gap beyond loopback overhead: both exceeded


def timing_flags(summary: pl.DataFrame) -> pl.DataFrame:
    """Points whose client-vs-server mean TTFT or E2E gap exceeds both GAP_FLAG_S and GAP_FLAG_FRAC."""

    def off(gap: str, server: str) -> pl.Expr:
        return (pl.col(gap).abs() > GAP_FLAG_S) & (pl.col(gap).abs() > GAP_FLAG_FRAC * pl.col(server))

    return summary.filter(off("ttft_gap_s", "server_mean_ttft_s") | off("e2e_gap_s", "server_mean_e2e_s"))


def hit_flags(summary: pl.DataFrame, block_size: int) -> pl.DataFrame:
    """Points whose server-counted hits differ from the generator's expectation by more than a block per request;
    with the cache off, any hit at all."""
    on = pl.col("mode") == ON
    diff = (pl.col("hit_tokens").fill_null(0) - pl.col("expected_cached_tokens")).abs()
    return summary.filter((on & (diff > block_size * pl.col("requests_sent"))) | (~on & (pl.col("hit_tokens").fill_null(0) > 0)))


def cross_checks(summary: pl.DataFrame, block_size: int) -> Finding:
    details = []
    timed = summary.drop_nulls("server_mean_ttft_s")
    if timed.height:
        details.append(
            f"Client minus server mean TTFT (server: `vllm:time_to_first_token_seconds`, deltas around each point): "
            f"{fmt_s(opt_num(timed['ttft_gap_s'].min()))} to {fmt_s(opt_num(timed['ttft_gap_s'].max()))}; end-to-end "
            f"(`vllm:e2e_request_latency_seconds`): {fmt_s(opt_num(timed['e2e_gap_s'].min()))} to {fmt_s(opt_num(timed['e2e_gap_s'].max()))}."
        )
        tf = timing_flags(timed)
        details.append(
            "No point's gap exceeds loopback overhead (flag: over both "
            f"{fmt_s(GAP_FLAG_S)} and {GAP_FLAG_FRAC:.0%} of the server's figure)."
            if tf.is_empty()
            else f"Flagged, gap beyond loopback overhead (over both {fmt_s(GAP_FLAG_S)} and {GAP_FLAG_FRAC:.0%}): "
            + ", ".join(
                f"{r['mode']} {r['regime']} reuse {r['reuse_pct']}% {load_label(r)} (TTFT gap {fmt_s(r['ttft_gap_s'])})"
                for r in rows_of(tf)
            )
            + ". Queueing in the API server before the engine sees a request counts for the client only."
        )
    else:
        details.append("The server exposed no latency histograms, so client timings could not be cross-checked.")
    on = summary.filter(pl.col("mode") == ON)
    if summary["hit_tokens"].is_null().all():
        client_cached = int(on["cached_tokens"].fill_null(0).sum())
        details.append(
            "No server-side prefix-cache counters (`/metrics` without `vllm:prefix_cache_hits_total`): hits "
            f"could not be counted by the server. Per-request `cached_tokens` sum to {client_cached} with the "
            f"cache on and {int(summary.filter(pl.col('mode') == OFF)['cached_tokens'].fill_null(0).sum())} "
            "with it off."
        )
        return Finding("Cross-checks were limited to what the endpoints expose (see below).", details)
    hf = hit_flags(summary, block_size)
    details.append(
        f"Cache hits, server counters vs the prompt generator's expectation (whole {block_size}-token blocks of the shared "
        "prefix, last prompt token recomputed, first request of a prefix a miss): "
        + (
            "every point within a block per request."
            if hf.is_empty()
            else "disagreeing at "
            + ", ".join(
                f"{r['mode']} {r['regime']} reuse {r['reuse_pct']}% {load_label(r)} "
                f"({r['hit_tokens']:.0f} vs {r['expected_cached_tokens']})"
                for r in rows_of(hf)
            )
            + "."
        )
    )
    client_cached = int(on["cached_tokens"].fill_null(0).sum())
    server_hits = int(on["hit_tokens"].fill_null(0).sum())
    details.append(
        f"Per-request `cached_tokens` reported to the client sum to {client_cached} with the cache on; the "
        f"server's hit counter moved by {server_hits}" + (" (equal)." if client_cached == server_hits else ".")
    )
    off_hits = summary.filter(pl.col("mode") == OFF)["hit_tokens"].fill_null(0).sum()
    details.append(
        f"With the cache off the server counted {off_hits:.0f} hit tokens"
        + (" (as it must)." if off_hits == 0 else ": a defect.")
    )
    ok = timing_flags(timed).is_empty() if timed.height else False
    answer = (
        "All cross-checks agree."
        if ok and hf.is_empty() and off_hits == 0
        else "Some cross-checks disagree; the flagged points are listed below."
    )
    return Finding(answer, details)


def design_note(summary: pl.DataFrame) -> str:
    """How the latencies were measured: the steady-state window and what the design could not measure."""
    closed = closed_loop(summary).filter(pl.col("concurrency") > 1)
    parts = []
    if "window_requests" in closed.columns and closed.filter(pl.col("window_requests") == 0).height:
        empty = closed.filter(pl.col("window_requests") == 0)
        parts.append(
            f"{empty.height} point/setting pair(s) had no steady-state window at all (too few requests for their "
            f"concurrency: {', '.join(sorted({point_name(r) for r in rows_of(empty)}))}), so they have no latency and "
            "no ratio: not measured."
        )
        closed = closed.filter(pl.col("window_requests") > 0)
    if closed.height and "window_requests" in closed.columns:
        rounds = (closed["window_requests"] / closed["concurrency"]).to_list()
        parts.append(
            "Closed-loop latencies come from each point's steady-state window: requests sent after the first completion "
            "(the opening burst of c requests is a wave, not a level) and finished before the first worker ran out of "
            f"work (the drain). At concurrency above 1 the windows held {whole(closed['window_requests'].min())} to "
            f"{whole(closed['window_requests'].max())} requests ({min(rounds):.1f} to {max(rounds):.1f} rounds)"
            + (
                "; fewer than 8 rounds is short of a level, so read those points as indicative and trust only what their "
                "intervals say."
                if min(rounds) < 8
                else "."
            )
        )
    if open_loop(summary).height:
        lag = opt_num(summary["max_schedule_lag_s"].max()) if "max_schedule_lag_s" in summary.columns else None
        parts.append(
            "Open-loop latencies count from each request's scheduled send time (no coordinated omission)"
            + (f"; the client sent at most {fmt_s(lag)} late." if lag is not None else ".")
        )
    instances = int(num(summary["instances"].max())) if "instances" in summary.columns and summary.height else 1
    if instances < 2:
        parts.append(
            "Each cache setting ran in one server lifetime (k = 1), so the variance between server instances "
            "was not measured: the intervals cover rounds and repeats within one instance."
        )
    else:
        parts.append(
            f"Each cache setting ran in {instances} server lifetimes, interleaved (the run order above); the intervals "
            "resample lifetimes, then rounds within each, and the off-vs-off and on-vs-on controls join the A/A floor."
        )
    return " ".join(parts)


def cold_warm_table(summary: pl.DataFrame) -> str:
    on = summary.filter(pl.col("mode") == ON).select(
        "regime", "reuse_pct", "concurrency", "mean_ttft_cold_s", "mean_ttft_warm_s", "mean_ttft_unique_s"
    )
    return ms_table(on, on.columns)
