"""The run against two simple models: mixed traffic as a blend of warm and cold requests, and the FLOPs ideal
(the cached tokens' compute removed, the fixed cost kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from .. import OFF, ON
from ..formatting import fmt_pct
from ..ideal import Shape, explained, ideal_rows
from ..scalars import opt_num, whole
from .claims import Finding, rows_of, span
from .units import fmt_s


def hit_rate_model(summary: pl.DataFrame) -> Finding:
    on = summary.filter(pl.col("mode") == ON)
    off = summary.filter(pl.col("mode") == OFF)
    details = [
        f"{r['regime']} reuse {r['reuse_pct']}% c={r['concurrency']}: measured hit rate {fmt_pct(r['measured_hit_rate'])} "
        f"(expected {fmt_pct(r['expected_hit_rate'])} if requests ran one at a time)"
        for r in rows_of(on)
    ]
    off_hits = off["hit_tokens"].fill_null(0).sum()
    details.append(f"Cache off: {off_hits:.0f} hit tokens in total (must be 0).")
    reuses = sorted(set(summary["reuse_pct"].to_list()), reverse=True)
    answer = (
        f"Reuse levels tested: {', '.join(f'{r}%' for r in reuses)} of requests sharing the prefix "
        f"(measured token hit rates with the cache on: {fmt_pct(opt_num(on['measured_hit_rate'].min()))} to "
        f"{fmt_pct(opt_num(on['measured_hit_rate'].max()))})."
    )
    # Mixed traffic: mean TTFT ≈ f·TTFT(warm) + (1−f)·TTFT(cold); test it on the measured points.
    preds = []
    c_min = whole(summary["concurrency"].min())
    for regime in summary["regime"].unique(maintain_order=True).to_list():
        full = on.filter((pl.col("regime") == regime) & (pl.col("reuse_pct") == 100) & (pl.col("concurrency") == c_min))
        cold = off.filter((pl.col("regime") == regime) & (pl.col("reuse_pct") == 100) & (pl.col("concurrency") == c_min))
        mixed = (pl.col("reuse_pct") > 0) & (pl.col("reuse_pct") < 100)  # at 0% the blend is the cold TTFT itself
        for r in rows_of(on.filter((pl.col("regime") == regime) & mixed & (pl.col("concurrency") == c_min))):
            if full.is_empty() or cold.is_empty() or None in (full["mean_ttft_s"][0], cold["mean_ttft_s"][0], r["mean_ttft_s"]):
                continue  # a point without a steady-state window has no mean to blend
            f = r["reuse_pct"] / 100
            pred = f * full["mean_ttft_s"][0] + (1 - f) * cold["mean_ttft_s"][0]
            preds.append((regime, r["reuse_pct"], pred, r["mean_ttft_s"]))
    for regime, reuse, pred, meas in preds:
        details.append(
            f"{regime} at {reuse}% reuse, c={c_min}: model predicts mean TTFT {fmt_s(pred)}, measured {fmt_s(meas)} "
            f"({(meas / pred - 1):+.0%})."
        )
    if not preds:
        answer += (
            " Mixed traffic should behave like a blend: mean TTFT ≈ f·TTFT(warm) + (1−f)·TTFT(cold), with f the share "
            "of requests that reuse a cached prefix; this run measured no mixed reuse level (between 0% and 100%) "
            "with both settings, so it does not test that model."
        )
    else:
        err = max(abs(m / p - 1) for *_, p, m in preds)
        answer += (
            f" Mixed traffic behaves like a blend: mean TTFT ≈ f·TTFT(warm) + (1−f)·TTFT(cold), with f the share of "
            f"requests that reuse a cached prefix; on this run that model was within {err:.0%} of the measured "
            "mixed-traffic TTFT. The benefit shrinks in proportion to the misses."
        )
    return Finding(answer, details)


def ideal_words(r: dict) -> str:
    """One regime against the FLOPs ideal, measured and modelled said apart: what the compute model allows the cache
    to save, what it saved, and either the share delivered or why the model does not explain this regime (a saving
    larger than the model allows is said so, never as a share above 100% or a negative distance "above" the ideal)."""
    allowed, got = r["cold_s"] - r["ideal_s"], r["cold_s"] - r["warm_s"]
    line = (
        f"{r['regime']}: cold TTFT {fmt_s(r['cold_s'])} (cache off, {r['tokens']:.0f} prompt tokens). With "
        f"{r['cached']:.0f} tokens cached, {r['flops_left']:.1%} of the prefill FLOPs remain, so the compute model's ideal "
        f"warm TTFT is {fmt_s(r['ideal_s'])} (it allows a saving of up to {fmt_s(allowed)}). Measured warm: "
        f"{fmt_s(r['warm_s'])}, " + (f"a saving of {fmt_s(got)}" if got > 0 else f"no saving ({fmt_s(-got)} above cold)")
    )
    if got <= 0:
        return line + ": the cache did not bring this regime's warm TTFT below its cold TTFT, so no share is given."
    if r["share"] is not None:
        return (
            line + f": the engine delivered {r['share']:.0%} of what the model allows, and warm TTFT stays "
            f"{fmt_s(r['warm_s'] - r['ideal_s'])} above the ideal."
        )
    if not explained(r):
        return (
            line + f", and warm TTFT is below the fitted fixed cost of {fmt_s(r['fixed_s'])}: the compute model does not "
            "explain this run (a warm request cannot be cheaper than a request's fixed cost), so no share is given."
        )
    if r["warm_s"] < r["ideal_s"]:
        return (
            line + f", more than the model allows (warm TTFT is {fmt_s(r['ideal_s'] - r['warm_s'])} below the ideal): "
            "the compute model does not explain this regime, so no share is given."
        )
    return line + "."


def ideal_finding(
    summary: pl.DataFrame, shape: Shape | None, block_size: int, cold_samples: Sequence[tuple[float, float]] = ()
) -> Finding:
    """Measured warm TTFT against the ideal (the cached tokens' compute removed, the fixed cost kept)."""
    if shape is None:
        return Finding("Not computed: the model's config.json is not available locally (a hub model).", [])
    rows = ideal_rows(summary, shape, block_size, list(cold_samples))
    if not rows:
        return Finding("Not computed: no regime has both cache settings at full reuse.", [])
    fitted = rows[0]["s_per_flop"] is not None
    details = []
    for r in rows:
        details.append(ideal_words(r))
    valid = [r["share"] for r in rows if r["share"] is not None]
    head = (
        f"From the model's shape ({shape.layers} layers, width {shape.hidden}, attention width {shape.attn}, "
        f"{shape.params / 1e6:.0f} M matmul parameters) and "
    )
    if fitted:
        r0 = rows[0]
        answer = (
            head + f"this run's cold requests of different lengths (the calibration's, the short one included, and the "
            f"cache-off points), TTFT ≈ {fmt_s(r0['fixed_s'])} fixed + "
            f"{r0['s_per_flop'] * 1e15:.3g} ms per TFLOP of prefill (c={r0['concurrency']}). The ideal warm TTFT keeps "
            "the fixed cost and drops the cached tokens' compute. "
            + (
                f"The engine delivered {span(f'{min(valid):.0%}', f'{max(valid):.0%}')} of that saving; the rest of a warm request's "
                "TTFT is the fixed cost (request handling, scheduling, the recomputed last block, the first decode "
                "step), which no cache removes."
                if valid
                else "No regime's saving fits this model (see below), so no share of it is claimed."
            )
        )
    else:
        answer = (
            head + "a single prompt length, the fixed cost cannot be separated from the per-token cost, so the ideal "
            "here scales the cold TTFT by the FLOPs left (an upper bound on the saving: it assumes no fixed cost). "
            "The engine delivered "
            + (span(f"{min(valid):.0%}", f"{max(valid):.0%}") if valid else "an unmeasurable share")
            + " of that bound."
        )
    return Finding(answer, details)
