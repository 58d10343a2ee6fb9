"""The A/A section: the controls that measure this run's noise floor, and what leaving the cache on costs.

Requests that can hit nothing do identical work with the cache off and on (and lifetimes of one setting run the
same work twice), so their ratios are what noise alone produces; no claim may sit inside that band.
"""

from __future__ import annotations

from typing import cast

import polars as pl

from ..formatting import fmt_x
from .claims import Finding, rows_of
from .units import fmt_s


def aa_row(sp: pl.DataFrame) -> dict | None:
    """The run's pooled A/A control (the `aa_*` columns aggregate wrote beside each ratio), if it was measured."""
    if "aa_ttft_ratio" not in sp.columns or sp["aa_ttft_ratio"].is_null().all():
        return None
    return sp.drop_nulls("aa_ttft_ratio").row(0, named=True)


def aa_words(row: dict) -> str:
    """The A/A control in words: off/on TTFT of requests that miss in both settings."""
    lo, hi = row.get("aa_ttft_lo"), row.get("aa_ttft_hi")
    if lo is None or hi is None:
        return f"off/on mean TTFT {fmt_x(row['aa_ttft_ratio'])}, no interval (too few independent rounds)"
    return f"off/on mean TTFT {fmt_x(row['aa_ttft_ratio'])}, 95% CI {lo:.2f}–{hi:.2f}"


def aa_finding(sp: pl.DataFrame, floor_rows: list[dict]) -> Finding:
    """What the A/A control is and what it showed; the rows are per regime plus the pooled one."""
    what = (
        "Requests that can hit nothing in either setting — never-shared prefixes sent one at a time, and every request "
        "of a 0%-reuse point — do identical work with the cache off and on, so their off/on ratio is what noise alone "
        "produces on this machine. No cache effect in this report is claimed unless its interval excludes 1 and clears "
        "this band (the regime's own, else the pooled one)."
    )
    if not floor_rows or all(r.get("aa_ttft_ratio") is None for r in floor_rows):
        return Finding(
            what + " This run had no such requests (every point reused the prefix fully), so the floor was not "
            "measured and claims rest on their intervals alone.",
            [],
        )
    measured = "Measured: " + aa_words(cast(dict, aa_row(sp))) + "." if aa_row(sp) else ""  # a row: the condition says so
    paired = (
        "A paired point's TTFT effect is the exception: it is judged inside the cache-on lifetimes, against its "
        "regime's 0%-reuse paired control (both arms miss), so this band bounds the contrasts between lifetimes "
        "(throughput, workload shapes, open loop) and its TTFT floor is not used for the paired points."
        if "contrast" in sp.columns and (sp["contrast"] == "paired").any()
        else ""
    )
    return Finding(" ".join(x for x in (what, measured, paired, instance_words(sp)) if x), [])


def instance_words(sp: pl.DataFrame) -> str:
    """What the between-lifetime controls showed (off vs off, on vs on), or that they were not run."""
    row = aa_row(sp) or (sp.row(0, named=True) if sp.height else {})
    parts = []
    for prefix, name in (("inst_off", "cache off"), ("inst_on", "cache on")):
        ratio, lo, hi = (row.get(f"{prefix}_ttft_{k}") for k in ("ratio", "lo", "hi"))
        if ratio is not None:
            band = f"95% CI {lo:.2f}–{hi:.2f}" if lo is not None and hi is not None else "no interval (too few rounds)"
            parts.append(f"{name} {fmt_x(ratio)} ({band})")
    if not parts:
        return (
            "Each cache setting ran in one server lifetime, so the noise between lifetimes (off vs off, on vs on) was not "
            "measured and is not part of the floor; set `benchmark.instances` to 2 or more to measure it."
        )
    return (
        "Between server lifetimes of the same setting (odd-numbered over even-numbered lifetimes, mean TTFT of the same "
        "requests): " + "; ".join(parts) + ". The floor each claim must clear is the widest of these intervals."
    )


def aa_table(sp: pl.DataFrame) -> list[dict]:
    """One row per regime: each A/A control and its interval, and the floor (the band no cache effect is claimed inside)."""
    if "aa_ttft_ratio" not in sp.columns:
        return []
    base = ["regime", "aa_requests_off", "aa_requests_on"]
    controls = [f"{p}_{k}_{q}" for p in ("aa", "inst_off", "inst_on") for k in ("ttft", "e2e") for q in ("ratio", "lo", "hi")]
    floors = [f"floor_{k}_{q}" for k in ("ttft", "e2e") for q in ("lo", "hi")]
    rows = rows_of(
        sp.select([c for c in base + controls + floors if c in sp.columns]).unique(subset=["regime"], maintain_order=True)
    )
    return [{c: r.get(c) for c in base + controls + floors} for r in rows]


def flag_cost_words(sp: pl.DataFrame) -> str | None:
    """What enabling the flag cost requests that hit nothing, with server lifetimes as the unit (the flag cannot be
    paired inside a lifetime): one lifetime per setting gives a ratio and no interval. None: not measured this way."""
    if "flag_cost_ratio" not in sp.columns:
        return None
    rows = [r for r in rows_of(sp.filter(pl.col("flag_cost_ratio").is_not_null()).sort("prefix_len_tokens", "concurrency"))]
    if not rows:
        return None
    parts = []
    for r in rows:
        ratio = r["flag_cost_ratio"]
        off, on = r.get("cross_mean_ttft_s_off", r.get("mean_ttft_s_off")), r.get("cross_mean_ttft_s_on", r.get("mean_ttft_s_on"))
        means = f"{fmt_s(off)} off → {fmt_s(on)} on, " if off is not None and on is not None else ""
        if r.get("flag_cost_lo") is None:
            parts.append(
                f"{r['regime']} c={r['concurrency']}: {means}on/off {fmt_x(ratio)} (one lifetime per setting: no interval)"
            )
        elif r["flag_cost_lo"] <= 1 <= r["flag_cost_hi"]:
            mde = f"; no cost larger than {r['flag_cost_mde_pct']:.0f}% could be missed" if r.get("flag_cost_mde_pct") else ""
            parts.append(
                f"{r['regime']} c={r['concurrency']}: no measurable cost ({fmt_x(ratio)}, 95% CI "
                f"{r['flag_cost_lo']:.2f}–{r['flag_cost_hi']:.2f} over {r['flag_cost_lifetimes']} lifetime pairs{mde})"
            )
        else:
            word = "slower" if ratio > 1 else "faster"
            parts.append(
                f"{r['regime']} c={r['concurrency']}: {fmt_x(ratio if ratio > 1 else 1 / ratio)} {word} with it on (95% CI "
                f"{r['flag_cost_lo']:.2f}–{r['flag_cost_hi']:.2f} on/off, {r['flag_cost_lifetimes']} lifetime pairs)"
            )
    single = all(r.get("flag_cost_lo") is None for r in rows)
    tail = (
        " With one server lifetime per setting the noise between lifetimes (25–40% on a shared GPU host, 2–5% on a CPU) "
        "is not measured, so this run cannot say what leaving it on costs; `benchmark.instances: 3` or more can."
        if single
        else " Lifetimes are the unit here: lifetime k with the cache on against lifetime k with it off, run interleaved."
    )
    return "What leaving it on costs requests that hit nothing (0% reuse, mean TTFT on/off): " + "; ".join(parts) + "." + tail


def cost_of_leaving_it_on(aa: dict | None, sp: pl.DataFrame | None = None) -> str:
    """What requests that share nothing paid for the cache being on: across lifetimes with lifetimes as the unit
    where recorded (flag_cost_words), else the A/A control, judged by its own interval."""
    words = flag_cost_words(sp) if sp is not None else None
    if words:
        return words
    if aa is None:
        return "This run had no requests that share nothing, so the cost of leaving it on was not measured."
    lo, hi = aa.get("aa_ttft_lo"), aa.get("aa_ttft_hi")
    if lo is None or hi is None:
        return f"Requests that share nothing: {aa_words(aa)}, too few to say what leaving it on costs."
    if lo <= 1 <= hi:
        return (
            f"Requests that share nothing showed no measurable cost ({aa_words(aa)}); the interval is how small a cost "
            "this run can rule out."
        )
    return (
        f"Requests that share nothing ran {'slower' if aa['aa_ttft_ratio'] < 1 else 'faster'} with it on "
        f"({aa_words(aa)}); that mixes any cost of caching a miss with the noise between server lifetimes, "
        "which is why it is part of the floor no claim here may sit inside."
    )
