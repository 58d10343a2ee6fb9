"""Which contrast stands for a point's cache effect, and whether the design held where it was measured.

A point that ran the paired design (prefixbench.paired) is judged by its paired contrast: forced misses over hits
inside the same cache-on lifetimes, so the noise between lifetimes cancels and no A/A hull widens it. Its
cross-lifetime ratio (cache-off lifetimes over the hit arm) stays beside it as `cross_*`. A point without the paired
design (workload shapes, open loop, runs from before it) keeps its cross-lifetime ratio and the A/A floor.

Controls test the design rather than widen claims: in a regime whose 0%-reuse paired contrast (both arms miss, so
its true ratio is 1) finds a difference, the design failed, and nothing of that regime is claimed.
"""

from __future__ import annotations

import polars as pl

EFFECT = ["ttft_speedup", "ttft_speedup_lo", "ttft_speedup_hi", "mean_ttft_s_off", "mean_ttft_s_on"]
PAIRED = ["paired_ratio", "paired_lo", "paired_hi", "paired_mean_miss_s", "paired_mean_hit_s"]
FLOAT_COLUMNS = ["paired_sd_log", "flag_cost_ratio", "flag_cost_lo", "flag_cost_hi", "flag_cost_mde_pct", "window_hit_rate_on"]
INT_COLUMNS = ["paired_pairs", "salted_cached_tokens", "salted_requests", "salted_failed", "flag_cost_lifetimes"]


def design_failures(sp: pl.DataFrame) -> dict[tuple[str, int], str]:
    """Per (regime, concurrency), why its paired design failed: the 0%-reuse paired contrast at that level (both arms
    miss, so its true ratio is 1) has an interval that excludes 1."""
    if "paired_ratio" not in sp.columns:
        return {}
    out: dict[tuple[str, int], str] = {}
    controls = sp.filter((pl.col("reuse_pct") == 0) & pl.col("paired_lo").is_not_null())
    for r in controls.iter_rows(named=True):
        if not r["paired_lo"] <= 1 <= r["paired_hi"]:
            out[(r["regime"], r["concurrency"])] = (
                f"the regime's 0%-reuse control at c={r['concurrency']} (both arms miss) measured {r['paired_ratio']:.2f}× "
                f"(95% CI {r['paired_lo']:.2f}–{r['paired_hi']:.2f}), so the paired design failed at this level"
            )
    return out


def paired_effects(sp: pl.DataFrame) -> pl.DataFrame:
    """The off/on table with each paired point's effect columns holding its paired contrast (`contrast` says which
    a row holds: `paired` or `lifetimes`), the cross-lifetime figures kept as `cross_*`, no A/A floor on paired rows,
    and `design_failed` naming a failed control of the row's regime."""
    # A column with no value at all reads back from CSV as text: these are numbers whatever the file says.
    floats = [*EFFECT, *PAIRED, "mde_ttft_pct", *FLOAT_COLUMNS]
    sp = sp.with_columns(pl.col(c).cast(pl.Float64) for c in floats if c in sp.columns)
    sp = sp.with_columns(pl.col(c).cast(pl.Int64) for c in INT_COLUMNS if c in sp.columns)
    if "paired_ratio" not in sp.columns:  # tables from before the paired design
        return sp.with_columns(
            pl.lit("lifetimes").alias("contrast"),
            pl.lit(None, dtype=pl.String).alias("design_failed"),
            pl.lit(None, dtype=pl.Float64).alias("mde_ttft_pct"),
        )
    failures = design_failures(sp)
    paired = pl.col("paired_ratio").is_not_null()
    floors = [c for c in sp.columns if c.startswith("floor_ttft_")]  # the A/A columns stay: they are the control
    return sp.with_columns(
        *(pl.col(c).alias(f"cross_{c}") for c in EFFECT),
    ).with_columns(
        *(pl.when(paired).then(pl.col(new)).otherwise(pl.col(old)).alias(old) for old, new in zip(EFFECT, PAIRED)),
        *(pl.when(paired).then(None).otherwise(pl.col(c)).alias(c) for c in floors),
        pl.when(paired).then(pl.lit("paired")).otherwise(pl.lit("lifetimes")).alias("contrast"),
        pl.Series(
            "design_failed",
            [failures.get((r, c)) for r, c in zip(sp["regime"].to_list(), sp["concurrency"].to_list())],
            dtype=pl.String,
        ),
    )


def paired_section(sp: pl.DataFrame) -> dict[str, str]:
    """The report's table of paired contrasts (one row per paired point) and what the forced misses hit, or nothing
    where no point ran the paired design."""
    from .formatting import fmt_s, fmt_x, markdown_table

    if "contrast" not in sp.columns or sp.filter(pl.col("contrast") == "paired").is_empty():
        return {"table": "", "words": ""}
    rows = []
    for r in sp.filter(pl.col("contrast") == "paired").iter_rows(named=True):
        rows.append(
            {
                "regime": r["regime"],
                "reuse": f"{r['reuse_pct']}%",
                "c": r["concurrency"],
                "forced miss": fmt_s(r["mean_ttft_s_off"]),
                "hit": fmt_s(r["mean_ttft_s_on"]),
                "miss/hit": fmt_x(r["ttft_speedup"]),
                "95% CI": "–" if r["ttft_speedup_lo"] is None else f"{r['ttft_speedup_lo']:.2f}–{r['ttft_speedup_hi']:.2f}",
                "MDE": "–" if r.get("mde_ttft_pct") is None else f"{r['mde_ttft_pct']:.0f}%",
                "pairs": r.get("paired_pairs"),
                "verdict": short_verdict(r),
            }
        )
    salted = int(sp["salted_requests"].fill_null(0).sum()) if "salted_requests" in sp.columns else 0
    hit = int(sp["salted_cached_tokens"].fill_null(0).sum()) if "salted_cached_tokens" in sp.columns else 0
    words = (
        f"The {salted} forced-miss requests (each with a fresh `cache_salt`) hit {hit} cached tokens"
        + (
            " in total, as a salted request must."
            if hit == 0
            else ": a salted request should hit nothing, so these points are suspect."
        )
        + " `MDE` is the smallest effect each point could have detected at 80% power (two-sided 5%), from its own "
        "pairs' variance: where a point says no difference, it means none larger than that."
    )
    return {"table": markdown_table(pl.DataFrame(rows), list(rows[0])), "words": words}


def short_verdict(r: dict) -> str:
    """A paired point's verdict in a table cell: the same rule as findings.judged, in a few words."""
    from .findings import helped, hurt

    if r.get("design_failed"):
        return "not claimed: the 0%-reuse control failed"
    if helped(r):
        return "**faster**"
    if hurt(r):
        return "**slower**"
    lo, hi = r.get("ttft_speedup_lo"), r.get("ttft_speedup_hi")
    if lo is None or hi is None:
        return "no interval"
    if lo <= 1 <= hi:
        return f"no difference > {r['mde_ttft_pct']:.0f}%" if r.get("mde_ttft_pct") is not None else "no difference"
    return "not claimed (more than its hit rate can explain)"
