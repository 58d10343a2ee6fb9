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
    if "paired_ratio" not in sp.columns:
        return sp.with_columns(
            pl.lit("lifetimes").alias("contrast"),
            pl.lit(None, dtype=pl.String).alias("design_failed"),
            pl.lit(None, dtype=pl.Float64).alias("mde_ttft_pct"),
        )
    # A column with no value at all reads back from CSV as text: these are numbers whatever the file says.
    sp = sp.with_columns(pl.col(c).cast(pl.Float64) for c in [*PAIRED, "mde_ttft_pct"] if c in sp.columns)
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
