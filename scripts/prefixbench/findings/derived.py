"""Numbers derived from the summary that the answers judge: throughput at a common p95 budget, its floors, goodput.

Pure arithmetic over the recorded tables, no words: the answers (answers.py) turn them into sentences.
"""

from __future__ import annotations

from typing import cast

import polars as pl

from .. import OFF, ON
from ..aggregate import open_loop
from .claims import floor_of, rows_of


def interpolate(curve: list[tuple[float, float]], x: float) -> float | None:
    """y at x on a curve of (p95, tok/s) points sorted by p95; None outside its measured range."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


def throughput_curve(rows: pl.DataFrame, column: str = "tok_s") -> list[tuple[float, float]]:
    """A mode's throughput against p95 E2E over its load levels (closed-loop concurrencies and open-loop rates),
    as the best throughput reached at or below each p95 (a frontier, so it never falls as the budget grows)."""
    pts = sorted((r["p95_e2e_s"], r[column]) for r in rows_of(rows) if r["p95_e2e_s"] is not None and r[column] is not None)
    out, best = [], 0.0
    for x, y in pts:
        best = max(best, y)
        out.append((x, best))
    return out


def throughput_at_p95(summary: pl.DataFrame) -> list[dict]:
    """Per (regime, reuse): each mode's throughput at the same p95 E2E budget, read off its interpolated curve.

    The budget is the highest p95 that both modes' measured ranges reach, so neither side is extrapolated;
    the interval pairs the repeats' lowest and highest throughput curves (none with a single repeat)."""
    out = []
    for (regime, reuse), grp in summary.group_by(["regime", "reuse_pct"], maintain_order=True):
        off, on = grp.filter(pl.col("mode") == OFF), grp.filter(pl.col("mode") == ON)
        c_off, c_on = throughput_curve(off), throughput_curve(on)
        if not c_off or not c_on:
            continue
        low, high = max(c_off[0][0], c_on[0][0]), min(c_off[-1][0], c_on[-1][0])
        row = {
            "regime": regime,
            "reuse_pct": reuse,
            "prefix_len_tokens": grp["prefix_len_tokens"][0],
            "range_off": (c_off[0][0], c_off[-1][0]),
            "range_on": (c_on[0][0], c_on[-1][0]),
            "p95_budget_s": None,
            "tok_s_off": None,
            "tok_s_on": None,
            "gain": None,
            "gain_ci": None,
            # the fewest measured passes behind a point of either curve: with one, no interval (claims.interval_gap)
            "passes": grp["repeats_measured"].min() if "repeats_measured" in grp.columns else None,
        }
        if low <= high:
            budget = high
            t_off, t_on = interpolate(c_off, budget), interpolate(c_on, budget)
            # the budget lies inside both curves' measured ranges, so neither is None (interpolate)
            row.update(p95_budget_s=budget, tok_s_off=t_off, tok_s_on=t_on, gain=cast(float, t_on) / t_off if t_off else None)
            if "tok_s_lo" in grp.columns and not grp["tok_s_lo"].is_null().any():
                lo_off, hi_off = (interpolate(throughput_curve(off, c), budget) for c in ("tok_s_lo", "tok_s_hi"))
                lo_on, hi_on = (interpolate(throughput_curve(on, c), budget) for c in ("tok_s_lo", "tok_s_hi"))
                if lo_off and hi_off and lo_on and hi_on:
                    row["gain_ci"] = (lo_on / hi_off, hi_on / lo_off)
        out.append(row)
    return out


def throughput_floors(rows: list[dict], sp: pl.DataFrame | None = None) -> dict[str, tuple[float, float]]:
    """Per regime, the band a throughput ratio must clear: the widest of its 0%-reuse case (identical work off and
    on, so its on/off ratio is noise; the interval stretched to include 1) and the regime's E2E A/A floor inverted
    (throughput at a fixed concurrency moves as 1 / E2E latency)."""
    bands: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["reuse_pct"] == 0 and r["gain_ci"]:
            bands.setdefault(r["regime"], []).append((min(r["gain_ci"][0], 1.0), max(r["gain_ci"][1], 1.0)))
    if sp is not None and sp.height:
        for row in rows_of(sp.unique(subset=["regime"], maintain_order=True)):
            e2e = floor_of(row, "e2e_speedup")
            if e2e and e2e[0] > 0:
                bands.setdefault(row["regime"], []).append((1 / e2e[1], 1 / e2e[0]))
    floors = {k: (min(b[0] for b in v), max(b[1] for b in v)) for k, v in bands.items()}
    if floors:  # a regime without its own control takes the pooled band
        pooled = (min(f[0] for f in floors.values()), max(f[1] for f in floors.values()))
        floors.update({r["regime"]: pooled for r in rows if r["regime"] not in floors})
    return floors


def goodput_rows(summary: pl.DataFrame, slo: dict) -> list[dict]:
    """Per (regime, reuse, mode): the highest offered open-loop rate met within the SLO with no failed request."""
    ttft_t, e2e_t = slo["p95_ttft_s"], slo["p95_e2e_s"]
    out = []
    for (regime, reuse, mode), grp in open_loop(summary).group_by(["regime", "reuse_pct", "mode"], maintain_order=True):
        meets = grp.filter((pl.col("p95_ttft_s") <= ttft_t) & (pl.col("p95_e2e_s") <= e2e_t) & (pl.col("requests_failed") == 0))
        best = meets.sort("request_rate", descending=True).row(0, named=True) if meets.height else None
        out.append(
            {
                "regime": regime,
                "reuse_pct": reuse,
                "mode": mode,
                "prefix_len_tokens": grp["prefix_len_tokens"][0],
                "rates": grp["request_rate"].sort().to_list(),
                "goodput_rate": best["request_rate"] if best else 0.0,
                "achieved_req_s": best["req_s"] if best else None,
            }
        )
    return out
