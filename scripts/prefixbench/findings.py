"""The report's findings: each answer to a seed question, and the sentence it supports, computed from the data.

An effect is claimed only where its clustered 95% interval excludes 1 and clears the run's A/A floor (see
stats.outside_floor), and a closed-loop gain only where the point's hit rate can explain it (hit_bound_of);
without an interval it is shown, not claimed. The template only arranges these.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from . import OFF, ON
from .aggregate import closed_loop, open_loop
from .formatting import fmt_pct, fmt_s, fmt_x, markdown_table
from .ideal import Shape, explained, ideal_rows
from .stats import outside_floor

NOISE = 0.05  # relative change treated as no change where a rule needs one and no interval exists (hit rates)
GAP_FLAG_S, GAP_FLAG_FRAC = 0.05, 0.25  # client-vs-server gap beyond loopback overhead: both exceeded


def verdict(
    ratio: float | None,
    better: str = "faster",
    worse: str = "slower",
    ci: tuple[float | None, float | None] | None = None,
    floor: tuple[float, float] | None = None,
    hit_bound: tuple[float, float] | None = None,
    mde_pct: float | None = None,
    failed: str | None = None,
) -> str:
    """Words for an off/on ratio where >1 means the cache helped.

    An effect is claimed only when its clustered 95% CI excludes 1 and clears the A/A floor (the interval two
    identical setups show on this run); without an interval nothing is claimed. `hit_bound` (hit rate, the most
    speed-up it can explain): a gain whose whole interval lies above it is not the cache's, and is not claimed.
    `mde_pct`: the smallest effect the contrast could detect, which "no difference" always states. `failed`: the
    design's control found a difference where there is none, so nothing is claimed."""
    if ratio is None:
        return "not measured"
    if failed:
        return f"not claimed: {fmt_x(ratio)}, but {failed}"
    if not ci or ci[0] is None or ci[1] is None:
        return f"{fmt_x(ratio)} off/on, not claimed (no interval: too few independent rounds)"
    band = f"95% CI {ci[0]:.2f}–{ci[1]:.2f}"
    if ci[0] <= 1 <= ci[1]:
        if mde_pct is not None:
            return (
                f"no difference larger than {mde_pct:.0f}% ({fmt_x(ratio)}, {band} includes 1; {mde_pct:.0f}% is the "
                "smallest effect this point could detect at 80% power)"
            )
        return f"no measurable difference ({fmt_x(ratio)}, {band} includes 1)"
    if not outside_floor((ci[0], ci[1]), floor):
        return f"no difference beyond the A/A noise floor ({fmt_x(ratio)}, {band}; A/A {floor[0]:.2f}–{floor[1]:.2f})"
    if ratio > 1 and beyond_hits(ci, hit_bound):
        return (
            f"not claimed: {fmt_x(ratio)} ({band}) is more than a {fmt_pct(hit_bound[0])} hit rate can remove "
            f"(at most {fmt_x(hit_bound[1])}): server-lifetime noise, not the cache"
        )
    if ratio > 1:
        return f"{fmt_x(ratio)} {better} ({band}" + (f"; MDE {mde_pct:.0f}%)" if mde_pct is not None else ")")
    return f"{fmt_x(1 / ratio)} {worse} (95% CI {1 / ci[1]:.2f}–{1 / ci[0]:.2f})"


def ci_of(row: dict, name: str) -> tuple[float | None, float | None] | None:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    return (lo, hi) if lo is not None and hi is not None else None


def floor_of(row: dict, name: str = "ttft_speedup") -> tuple[float, float] | None:
    """The A/A interval that goes with a ratio column (TTFT or E2E) of a speed-up row: the widest of the controls
    (`floor_*`; tables from before instance controls have only `aa_*`)."""
    kind = "e2e" if name.startswith("e2e") else "ttft"
    lo, hi = row.get(f"floor_{kind}_lo", row.get(f"aa_{kind}_lo")), row.get(f"floor_{kind}_hi", row.get(f"aa_{kind}_hi"))
    return (lo, hi) if lo is not None and hi is not None else None


def hit_bound_of(row: dict, name: str = "ttft_speedup") -> tuple[float, float] | None:
    """(hit rate, 1 / (1 - hit rate)) for a closed-loop TTFT or E2E ratio: with a share h of the prompt tokens
    served from cache, the cache can remove at most that share of the prefill work, so off/on is at most
    1 / (1 - h) (fixed costs and decode only lower it; a quadratic attention term lowers it too). Open-loop
    points are left out: there a queue that grows past saturation can make the gain larger than the work saved."""
    h = row.get("window_hit_rate_on", row.get("measured_hit_rate_on"))  # the window's requests, where recorded
    if name not in ("ttft_speedup", "e2e_speedup") or h is None or not 0 <= h < 1 or row.get("request_rate"):
        return None
    return h, 1 / (1 - h)


def beyond_hits(ci: tuple[float, float], bound: tuple[float, float] | None) -> bool:
    """The whole interval lies above what the point's hit rate can explain (hit_bound_of)."""
    return bound is not None and ci[0] > bound[1]


def judged(row: dict, name: str = "ttft_speedup") -> str:
    if row.get(name) is None:
        return f"not measured ({why_unmeasured(row)})"
    ttft = name == "ttft_speedup"
    return verdict(
        row[name],
        ci=ci_of(row, name),
        floor=floor_of(row, name),
        hit_bound=hit_bound_of(row, name),
        mde_pct=row.get("mde_ttft_pct") if ttft else None,
        failed=row.get("design_failed") if ttft else None,
    )


def why_unmeasured(row: dict) -> str:
    """Why a point has no ratio: most often a steady-state window that never opened (too few requests for its
    concurrency: the opening burst and the drain are all there was)."""
    if 0 in (row.get("window_requests_off"), row.get("window_requests_on")):
        return "no steady-state window: too few requests for its concurrency"
    return "no successful request in one of the settings"


def measured(sp: pl.DataFrame, name: str = "ttft_speedup") -> pl.DataFrame:
    """The rows that have the ratio `name`: a finding compares only these, and says which others it could not."""
    return sp.filter(pl.col(name).is_not_null()) if name in sp.columns else sp.clear()


def saved(row: dict) -> str:
    """Mean TTFT saved per request (off minus on), or n/a where either side has no window."""
    off, on = row.get("mean_ttft_s_off"), row.get("mean_ttft_s_on")
    return "n/a" if off is None or on is None else fmt_s(off - on)


def unmeasured_words(sp: pl.DataFrame, name: str = "ttft_speedup") -> str:
    """A sentence naming the points a finding had to leave out, or nothing."""
    missing = [r for r in _rows(sp) if r.get(name) is None] if name in sp.columns else []
    if not missing:
        return ""
    return (
        f" Left out, not measured: {', '.join(point_name(r) for r in missing)} ({why_unmeasured(missing[0])})."
        if len({why_unmeasured(r) for r in missing}) == 1
        else " Left out, not measured: " + ", ".join(f"{point_name(r)} ({why_unmeasured(r)})" for r in missing) + "."
    )


def point_name(row: dict) -> str:
    return f"{row['regime']} reuse {row['reuse_pct']}% {load_label(row)}"


def helped(row: dict, name: str = "ttft_speedup") -> bool:
    """The cache helped beyond noise: the CI lies above 1 and above the A/A floor, and not wholly above what the
    point's hit rate can explain."""
    ci = ci_of(row, name)
    return (
        ci is not None
        and row.get(name) is not None
        and not (name == "ttft_speedup" and row.get("design_failed"))
        and row[name] > 1
        and outside_floor(ci, floor_of(row, name))
        and not beyond_hits(ci, hit_bound_of(row, name))
    )


def hurt(row: dict, name: str = "ttft_speedup") -> bool:
    ci = ci_of(row, name)
    return (
        ci is not None
        and row.get(name) is not None
        and not (name == "ttft_speedup" and row.get("design_failed"))
        and row[name] < 1
        and outside_floor(ci, floor_of(row, name))
    )


@dataclass
class Finding:
    answer: str
    details: list[str]


def _rows(df: pl.DataFrame) -> list[dict]:
    return list(df.iter_rows(named=True))


def ttft_finding(sp: pl.DataFrame) -> Finding:
    gaps = unmeasured_words(sp)
    top_all = sp.filter(pl.col("reuse_pct") == sp["reuse_pct"].max())
    top = measured(top_all)
    if top.is_empty():
        return Finding(
            "Not answerable from this run: no point at the highest reuse level was measured in both settings." + gaps,
            [f"{point_name(r)}: {judged(r)}" for r in _rows(sp)],
        )
    rows = _rows(top)
    n_helped, n_hurt = sum(helped(r) for r in rows), sum(hurt(r) for r in rows)
    best = top.sort("ttft_speedup", descending=True).row(0, named=True)
    claimed = [r for r in rows if helped(r)]
    if n_helped == top.height:
        lo = min(r["ttft_speedup_lo"] for r in claimed)
        answer = (
            f"Yes. At {best['reuse_pct']}% reuse the cache cut mean TTFT at every point, beyond the A/A noise floor; "
            f"the smallest interval bound was {fmt_x(lo)}, the largest cut {best['regime']} "
            f"({best['prefix_len_tokens']} tokens) at concurrency {best['concurrency']}: {fmt_s(best['mean_ttft_s_off'])} "
            f"→ {fmt_s(best['mean_ttft_s_on'])}, {judged(best)}."
        )
    elif n_helped == 0:
        answer = (
            f"No claim. At {best['reuse_pct']}% reuse no point showed a TTFT cut whose interval clears the A/A "
            f"noise floor (ratios {fmt_x(top['ttft_speedup'].min())} to {fmt_x(top['ttft_speedup'].max())})."
        )
    else:
        b = max(claimed, key=lambda r: r["ttft_speedup"])
        answer = (
            f"Partly. At {b['reuse_pct']}% reuse the cache cut mean TTFT beyond the A/A noise floor at {n_helped} of "
            f"{top.height} points; the largest: {b['regime']} at concurrency {b['concurrency']}, "
            f"{fmt_s(b['mean_ttft_s_off'])} → {fmt_s(b['mean_ttft_s_on'])}, {judged(b)}."
        )
    if n_hurt:
        answer += f" At {n_hurt} point(s) the cache made TTFT worse beyond the floor (listed below)."
    answer += gaps
    details = [
        f"{r['regime']} ({r['prefix_len_tokens']} tok), reuse {r['reuse_pct']}%, c={r['concurrency']}: "
        f"{fmt_s(r['mean_ttft_s_off'])} → {fmt_s(r['mean_ttft_s_on'])}, {judged(r)}"
        for r in _rows(sp)
    ]
    answer += how_judged(sp)
    return Finding(answer, details)


def how_judged(sp: pl.DataFrame) -> str:
    """How the TTFT effects of this table were measured and judged, in words (paired, across lifetimes, or both)."""
    kinds = set(sp["contrast"].to_list()) if "contrast" in sp.columns else {"lifetimes"}
    parts = []
    if "paired" in kinds:
        parts.append(
            " A point's effect is measured inside the cache-on server lifetimes: each point ran as alternating "
            "sub-blocks of the traffic as designed (hits) and the same prompts with a unique `cache_salt` each (forced "
            "misses), counterbalanced, and the effect is forced-miss over hit mean TTFT, paired sub-block by "
            "sub-block, so the noise between server lifetimes cancels. Its 95% interval is a t interval over the "
            "pairs, and the MDE the smallest effect the point could detect at 80% power. An effect is claimed where "
            "the interval excludes 1, unless the regime's 0%-reuse control (both arms miss) found a difference, or "
            "the gain is larger than the point's hit rate can explain."
        )
    if "lifetimes" in kinds:
        parts.append(
            " Where a point compares server lifetimes (cache off against cache on), intervals are 95% bootstrap CIs "
            "that resample whole rounds of requests (requests sent together share their fate), and an effect is "
            "claimed only where its interval excludes 1 and clears the A/A floor (and a closed-loop gain only where "
            "it is not larger than its point's hit rate can explain)."
        )
    return "".join(parts)


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
    pts = sorted((r["p95_e2e_s"], r[column]) for r in _rows(rows) if r["p95_e2e_s"] is not None and r[column] is not None)
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
        }
        if low <= high:
            budget = high
            t_off, t_on = interpolate(c_off, budget), interpolate(c_on, budget)
            row.update(p95_budget_s=budget, tok_s_off=t_off, tok_s_on=t_on, gain=t_on / t_off if t_off else None)
            if "tok_s_lo" in grp.columns and not grp["tok_s_lo"].is_null().any():
                lo_off, hi_off = (interpolate(throughput_curve(off, c), budget) for c in ("tok_s_lo", "tok_s_hi"))
                lo_on, hi_on = (interpolate(throughput_curve(on, c), budget) for c in ("tok_s_lo", "tok_s_hi"))
                if all(v for v in (lo_off, hi_off, lo_on, hi_on)):
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
        for row in _rows(sp.unique(subset=["regime"], maintain_order=True)):
            e2e = floor_of(row, "e2e_speedup")
            if e2e and e2e[0] > 0:
                bands.setdefault(row["regime"], []).append((1 / e2e[1], 1 / e2e[0]))
    floors = {k: (min(b[0] for b in v), max(b[1] for b in v)) for k, v in bands.items()}
    if floors:  # a regime without its own control takes the pooled band
        pooled = (min(f[0] for f in floors.values()), max(f[1] for f in floors.values()))
        floors.update({r["regime"]: pooled for r in rows if r["regime"] not in floors})
    return floors


def same_concurrency(summary: pl.DataFrame, r: dict) -> str:
    """Beside an interpolated ratio, the plain one: on/off throughput at each concurrency both settings ran (an
    interpolation between two points of one curve can read larger than any measured pair)."""
    if "concurrency" not in summary.columns:
        return ""
    grp = closed_loop(summary).filter((pl.col("regime") == r["regime"]) & (pl.col("reuse_pct") == r["reuse_pct"]))
    off = {x["concurrency"]: x["tok_s"] for x in _rows(grp.filter(pl.col("mode") == OFF)) if x["tok_s"]}
    on = {x["concurrency"]: x["tok_s"] for x in _rows(grp.filter(pl.col("mode") == ON)) if x["tok_s"]}
    both = sorted(set(off) & set(on))
    if not both:
        return ""
    return "; at the same concurrency, on/off " + ", ".join(f"{fmt_x(on[c] / off[c])} at c={c}" for c in both)


def throughput_finding(summary: pl.DataFrame, sp: pl.DataFrame | None = None) -> Finding:
    rows = throughput_at_p95(summary)
    floors = throughput_floors(rows, sp)
    details = []
    for r in rows:
        head = f"{r['regime']} ({r['prefix_len_tokens']} tok), reuse {r['reuse_pct']}%: "
        if r["p95_budget_s"] is None:
            details.append(
                head + f"the modes' p95 ranges do not overlap (off {fmt_s(r['range_off'][0])}–"
                f"{fmt_s(r['range_off'][1])}, on {fmt_s(r['range_on'][0])}–{fmt_s(r['range_on'][1])}), so no "
                "common budget lies inside both measured ranges."
            )
            continue
        if r["reuse_pct"] == 0:
            band = f", 95% CI {r['gain_ci'][0]:.2f}–{r['gain_ci'][1]:.2f}" if r["gain_ci"] else ""
            words = f"{fmt_x(r['gain'])} on/off{band}: the A/A control for throughput (nothing can hit), not a claim"
        else:
            words = verdict(r["gain"], "more", "less", ci=r["gain_ci"], floor=floors.get(r["regime"]))
            words = words.replace("off/on", "on/off")
        details.append(
            head + f"at p95 E2E {fmt_s(r['p95_budget_s'])} (the highest both modes measured), off "
            f"{r['tok_s_off']:.1f} tok/s, on {r['tok_s_on']:.1f} tok/s: {words}" + same_concurrency(summary, r)
        )
    judged_rows = [r for r in rows if r["gain"] is not None and r["reuse_pct"] != 0]
    if not rows:
        return Finding(
            "Not answerable from this run: no load level has a p95 latency in both settings (no steady-state window).",
            details,
        )
    if not judged_rows:
        return Finding("Not answerable from this run: the two modes' p95 ranges never overlap.", details)
    more = [r for r in judged_rows if r["gain"] > 1 and outside_floor(r["gain_ci"], floors.get(r["regime"]))]
    gains = [r["gain"] for r in judged_rows]
    if len(more) == len(judged_rows):
        answer = f"Yes: at the same p95 budget the cache sustained {fmt_x(min(gains))} to {fmt_x(max(gains))} the throughput."
    elif not more:
        answer = (
            f"No claim: at the same p95 budget, throughput ratios (on/off) were {fmt_x(min(gains))} to "
            f"{fmt_x(max(gains))}, none with an interval above 1 and clear of the A/A floor."
        )
    else:
        answer = (
            f"In {len(more)} of {len(judged_rows)} regime/reuse cases with reuse, beyond the A/A floor: throughput "
            f"ratios at the same p95 budget ranged {fmt_x(min(gains))} to {fmt_x(max(gains))}."
        )
    return Finding(
        answer
        + (
            " Each mode's throughput is read off its own throughput-vs-p95 curve (every load level it ran), "
            "interpolated at the highest p95 both modes reached; intervals pair the slowest and fastest runs "
            "(repeats, lifetimes). The floor a throughput claim must clear is the widest of the regime's 0%-reuse "
            "case (identical work off and on) and its E2E A/A floor, inverted."
        ),
        details,
    )


def memory_finding(summary: pl.DataFrame, sp: pl.DataFrame) -> Finding:
    """Peak memory compared point for point (the same traffic with the cache off and on), never maxima of different points."""
    by_mode = {mode: summary.filter(pl.col("mode") == mode) for mode in (OFF, ON)}
    if by_mode[OFF]["peak_server_rss_gib"].is_null().all() or by_mode[ON]["peak_server_rss_gib"].is_null().all():
        return remote_memory_finding({m: d["peak_kv_cache_usage"].max() for m, d in by_mode.items()})
    rows = _rows(sp)
    details = []
    for r in rows:
        parts = []
        if r.get("peak_server_rss_gib_off") is not None and r.get("peak_server_rss_gib_on") is not None:
            parts.append(f"RSS {r['peak_server_rss_gib_off']:.2f} → {r['peak_server_rss_gib_on']:.2f} GiB")
        if r.get("peak_kv_cache_usage_off") is not None and r.get("peak_kv_cache_usage_on") is not None:
            parts.append(f"KV cache {fmt_pct(r['peak_kv_cache_usage_off'])} → {fmt_pct(r['peak_kv_cache_usage_on'])}")
        if r.get("peak_gpu_mem_mib_off") is not None and r.get("peak_gpu_mem_mib_on") is not None:
            parts.append(f"GPU {r['peak_gpu_mem_mib_off']:.0f} → {r['peak_gpu_mem_mib_on']:.0f} MiB")
        details.append(f"{r['regime']} reuse {r['reuse_pct']}% {load_label(r)}: " + (", ".join(parts) or "not sampled"))
    rss = [
        (r["peak_server_rss_gib_on"] - r["peak_server_rss_gib_off"])
        for r in rows
        if r["peak_server_rss_gib_on"] is not None and r["peak_server_rss_gib_off"] is not None
    ]
    answer = (
        (
            f"Point for point (the same requests off and on), peak server RSS moved by {min(rss):+.2f} to {max(rss):+.2f} GiB "
            "with the cache on. vLLM preallocates its KV-cache pool either way; caching only keeps freed blocks "
            "reusable until they are needed, so it does not change the process's memory."
        )
        if rss
        else "Not measured."
    )
    kv = [
        (r["peak_kv_cache_usage_off"], r["peak_kv_cache_usage_on"])
        for r in rows
        if r.get("peak_kv_cache_usage_off") is not None and r.get("peak_kv_cache_usage_on") is not None
    ]
    if kv:
        lower = sum(on < off for off, on in kv)
        higher = sum(on > off for off, on in kv)
        answer += (
            f" The KV-cache usage gauge peaked lower with the cache on at {lower} of {len(kv)} points and higher at "
            f"{higher}: a shared prefix's blocks are held once for every request using them, while finished "
            "requests' blocks stay resident (counted as used) until evicted."
        )
    return Finding(
        answer + " Memory is sampled in its own thread at the configured rate (default 10 Hz) while each point runs.", details
    )


def remote_memory_finding(kv: dict[str, float | None]) -> Finding:
    """Existing endpoints: no process memory to read; the KV-cache gauge where their /metrics has it."""
    answer = (
        "Not measurable here: the servers are existing endpoints, not processes on this machine, so their memory was not read."
    )
    details = []
    if kv[OFF] is not None and kv[ON] is not None:
        answer += f" Their KV-cache usage gauge peaked at {kv[OFF]:.1%} of the pool with the cache off and {kv[ON]:.1%} on."
        details.append("KV-cache usage from each endpoint's `vllm:kv_cache_usage_perc` gauge, sampled during every point.")
    return Finding(answer, details)


def reuse_finding(sp: pl.DataFrame) -> Finding:
    c1 = sp.filter(pl.col("concurrency") == sp["concurrency"].min())
    details = []
    for (regime,), grp in c1.group_by("regime", maintain_order=True):
        parts = ", ".join(
            f"{r['reuse_pct']}% reuse {fmt_x(r['ttft_speedup'])}" for r in _rows(grp.sort("reuse_pct", descending=True))
        )
        details.append(f"{regime} ({grp['prefix_len_tokens'][0]} tok, {_workload(grp)}) at c={grp['concurrency'][0]}: {parts}")
    aa = aa_row(sp)
    if aa is not None:
        details.append(
            f"Requests that can hit nothing (the A/A control: never-shared prefixes one at a time, and 0%-reuse "
            f"points): {aa_words(aa)}."
        )
    ranked = measured(sp).sort("ttft_speedup", descending=True)
    if ranked.is_empty():
        return Finding("Not answerable from this run: no point was measured in both settings." + unmeasured_words(sp), details)
    claimed = [r for r in _rows(ranked) if helped(r)]
    if claimed:
        best = claimed[0]
        answer = (
            f"The largest claimed gain here was {best['regime']} ({best['prefix_len_tokens']} tokens, {best['workload']}) "
            f"at {best['reuse_pct']}% reuse and concurrency {best['concurrency']}: {judged(best)}. Claimed at "
            f"{len(claimed)} of {ranked.height} points: "
            + ", ".join(sorted({f"{r['regime']} ({r['workload']})" for r in claimed}))
            + "."
        )
    else:
        answer = (
            f"No regime or workload shape showed a claimed gain on this run (ratios {fmt_x(ranked['ttft_speedup'].min())} "
            f"to {fmt_x(ranked['ttft_speedup'].max())}); see each point's verdict."
        )
    tracks = reuse_tracks(c1)
    if tracks:
        answer += " " + tracks
    answer += (
        " By construction the cache can only help where the same long text starts many requests (a fixed system "
        "prompt or tool policy, a document asked about repeatedly, a conversation's history); traffic whose long "
        "parts differ per request has nothing to reuse."
    )
    return Finding(answer + unmeasured_words(sp), details)


def reuse_tracks(c1: pl.DataFrame) -> str:
    """'The gain tracked the reuse level' only where, in every regime with 0% and 100% reuse at the lowest
    concurrency, the full-reuse interval lies wholly above the 0%-reuse one; else nothing."""
    said = []
    for (regime,), grp in c1.group_by("regime", maintain_order=True):
        top = grp.filter(pl.col("reuse_pct") == grp["reuse_pct"].max()).row(0, named=True)
        zero = grp.filter(pl.col("reuse_pct") == 0)
        if zero.is_empty() or top["reuse_pct"] == 0:
            continue
        z = zero.row(0, named=True)
        a, b = ci_of(z, "ttft_speedup"), ci_of(top, "ttft_speedup")
        if a is None or b is None or not b[0] > a[1]:
            return ""
        said.append(f"{regime} {fmt_x(z['ttft_speedup'])} at 0% → {fmt_x(top['ttft_speedup'])} at {top['reuse_pct']}%")
    if not said:
        return ""
    return "In every regime the gain grew with the reuse level, beyond the intervals (" + "; ".join(said) + ")."


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
    measured = "Measured: " + aa_words(aa_row(sp)) + "." if aa_row(sp) else ""
    return Finding(" ".join(x for x in (what, measured, instance_words(sp)) if x), [])


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
    rows = _rows(
        sp.select([c for c in base + controls + floors if c in sp.columns]).unique(subset=["regime"], maintain_order=True)
    )
    return [{c: r.get(c) for c in base + controls + floors} for r in rows]


def _workload(grp: pl.DataFrame) -> str:
    return grp["workload"][0]


def prefix_length_finding(sp: pl.DataFrame) -> Finding:
    """Speed-up and time saved per request from the shortest to the longest prefix, at each concurrency.

    "Grew" is claimed only where the two speed-ups' intervals do not overlap."""
    top = sp.filter(pl.col("reuse_pct") == sp["reuse_pct"].max())
    details, trends = [], []
    for (conc,), grp in top.group_by("concurrency", maintain_order=True):
        details.append(
            f"c={conc}: "
            + "; ".join(
                f"{r['prefix_len_tokens']} tok {judged(r)}"
                + (f" (saves {saved(r)})" if r.get("ttft_speedup") is not None else "")
                for r in _rows(grp.sort("prefix_len_tokens"))
            )
        )
        g = _rows(measured(grp).sort("prefix_len_tokens"))
        if len(g) >= 2:
            trends.append((conc, g[0], g[-1]))
    if not trends:
        return Finding(
            "Only one prefix length was measured at any concurrency, so the trend is not answerable from this run."
            + unmeasured_words(top),
            details,
        )

    def direction(a: dict, b: dict) -> str:
        ca, cb = ci_of(a, "ttft_speedup"), ci_of(b, "ttft_speedup")
        if ca is None or cb is None:
            return "cannot be compared (no interval)"
        if cb[0] > ca[1]:
            return "grew"
        if cb[1] < ca[0]:
            return "shrank"
        return "did not change beyond its intervals"

    parts = [
        f"at c={c} the speed-up {direction(a, b)}: {fmt_x(a['ttft_speedup'])} at {a['prefix_len_tokens']} tokens, "
        f"{fmt_x(b['ttft_speedup'])} at {b['prefix_len_tokens']} (time saved per request {saved(a)} → {saved(b)})"
        for c, a, b in trends
    ]
    grew = sum(direction(a, b) == "grew" for _, a, b in trends)
    if grew == len(trends):
        tail = "At every concurrency the longer prefix bought the larger speed-up: the cache skips more prefill."
    elif grew == 0:
        tail = (
            "At no concurrency is the longer prefix's speed-up larger beyond the intervals: either fixed per-request "
            "overhead, not prefill, dominates TTFT here, or the run is too small to tell (see the intervals)."
        )
    else:
        tail = f"The longer prefix bought a larger speed-up, beyond the intervals, at {grew} of {len(trends)} concurrency levels."
    answer = f"At {top['reuse_pct'][0]}% reuse, " + "; ".join(parts) + ". " + tail + unmeasured_words(top)
    return Finding(answer, details)


def hit_rate_model(summary: pl.DataFrame) -> Finding:
    on = summary.filter(pl.col("mode") == ON)
    off = summary.filter(pl.col("mode") == OFF)
    details = [
        f"{r['regime']} reuse {r['reuse_pct']}% c={r['concurrency']}: measured hit rate {fmt_pct(r['measured_hit_rate'])} "
        f"(expected {fmt_pct(r['expected_hit_rate'])} if requests ran one at a time)"
        for r in _rows(on)
    ]
    off_hits = off["hit_tokens"].fill_null(0).sum()
    details.append(f"Cache off: {off_hits:.0f} hit tokens in total (must be 0).")
    reuses = sorted(set(summary["reuse_pct"].to_list()), reverse=True)
    answer = (
        f"Reuse levels tested: {', '.join(f'{r}%' for r in reuses)} of requests sharing the prefix "
        f"(measured token hit rates with the cache on: {fmt_pct(on['measured_hit_rate'].min())} to "
        f"{fmt_pct(on['measured_hit_rate'].max())})."
    )
    # Mixed traffic: mean TTFT ≈ f·TTFT(warm) + (1−f)·TTFT(cold); test it on the measured points.
    preds = []
    c_min = summary["concurrency"].min()
    for regime in summary["regime"].unique(maintain_order=True).to_list():
        full = on.filter((pl.col("regime") == regime) & (pl.col("reuse_pct") == 100) & (pl.col("concurrency") == c_min))
        cold = off.filter((pl.col("regime") == regime) & (pl.col("reuse_pct") == 100) & (pl.col("concurrency") == c_min))
        for r in _rows(on.filter((pl.col("regime") == regime) & (pl.col("reuse_pct") < 100) & (pl.col("concurrency") == c_min))):
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
    if preds:
        err = max(abs(m / p - 1) for *_, p, m in preds)
        answer += (
            f" Mixed traffic behaves like a blend: mean TTFT ≈ f·TTFT(warm) + (1−f)·TTFT(cold), with f the share of "
            f"requests that reuse a cached prefix; on this run that model was within {err:.0%} of the measured "
            "mixed-traffic TTFT. The benefit shrinks in proportion to the misses."
        )
    return Finding(answer, details)


def load_label(row: dict) -> str:
    return f"open loop {row['request_rate']:g} req/s" if row.get("request_rate") else f"c={row['concurrency']}"


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
            f"{fmt_s(timed['ttft_gap_s'].min())} to {fmt_s(timed['ttft_gap_s'].max())}; end-to-end "
            f"(`vllm:e2e_request_latency_seconds`): {fmt_s(timed['e2e_gap_s'].min())} to {fmt_s(timed['e2e_gap_s'].max())}."
        )
        tf = timing_flags(timed)
        details.append(
            "No point's gap exceeds loopback overhead (flag: over both "
            f"{fmt_s(GAP_FLAG_S)} and {GAP_FLAG_FRAC:.0%} of the server's figure)."
            if tf.is_empty()
            else f"Flagged, gap beyond loopback overhead (over both {fmt_s(GAP_FLAG_S)} and {GAP_FLAG_FRAC:.0%}): "
            + ", ".join(
                f"{r['mode']} {r['regime']} reuse {r['reuse_pct']}% {load_label(r)} (TTFT gap {fmt_s(r['ttft_gap_s'])})"
                for r in _rows(tf)
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
                for r in _rows(hf)
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


def goodput_finding(summary: pl.DataFrame, slo: dict) -> Finding | None:
    rows = goodput_rows(summary, slo)
    if not rows:
        return None
    by = {(r["regime"], r["reuse_pct"], r["mode"]): r for r in rows}
    details, pairs = [], []
    for (regime, reuse, mode), off in by.items():
        if mode != OFF or (regime, reuse, ON) not in by:
            continue
        on = by[(regime, reuse, ON)]
        pairs.append((off["goodput_rate"], on["goodput_rate"], max(off["rates"])))
        ratio = on["goodput_rate"] / off["goodput_rate"] if off["goodput_rate"] else None

        def show(r: dict) -> str:
            if not r["goodput_rate"]:
                return "none of the offered rates"
            return f"{r['goodput_rate']:g} req/s (achieved {r['achieved_req_s']:.2f})"

        details.append(
            f"{regime} ({off['prefix_len_tokens']} tok), reuse {reuse}%: cache off {show(off)}, on {show(on)}"
            + (f", {fmt_x(ratio)}" if ratio else "")
            + f"; offered {', '.join(f'{x:g}' for x in off['rates'])} req/s"
        )
    target = f"p95 TTFT ≤ {fmt_s(slo['p95_ttft_s'])} and p95 E2E ≤ {fmt_s(slo['p95_e2e_s'])}"
    higher = sum(on > off for off, on, _ in pairs)
    capped = sum(on == off == top for off, on, top in pairs)
    answer = (
        f"Goodput here is the highest offered request rate (open loop, gamma arrivals) a mode served within {target} "
        f"with no failed request. The cache raised it in {higher} of {len(pairs)} regime/reuse cases"
    )
    answer += (
        f"; in {capped} both modes met the target at the highest rate offered, so higher rates are needed to separate them."
        if capped
        else "."
    )
    return Finding(answer, details)


def ideal_finding(
    summary: pl.DataFrame, shape: Shape | None, block_size: int, cold_samples: list[tuple[float, float]] = ()
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
        line = (
            f"{r['regime']}: cold TTFT {fmt_s(r['cold_s'])} (cache off, {r['tokens']:.0f} prompt tokens); with "
            f"{r['cached']:.0f} tokens cached, {r['flops_left']:.1%} of the prefill FLOPs remain, so the ideal warm TTFT is "
            f"{fmt_s(r['ideal_s'])}; measured warm {fmt_s(r['warm_s'])}"
        )
        if r["share"] is not None:
            line += (
                f": the cache removed {fmt_s(r['cold_s'] - r['warm_s'])} of the {fmt_s(r['cold_s'] - r['ideal_s'])} the "
                f"compute model allows ({r['share']:.0%}); {fmt_s(r['warm_s'] - r['ideal_s'])} stayed above the ideal."
            )
        elif not explained(r):
            line += (
                f", below the fitted fixed cost of {fmt_s(r['fixed_s'])}: the compute model does not explain this run "
                "(a warm request cannot be cheaper than a request's fixed cost), so no share is given"
            )
        elif r["warm_s"] < r["ideal_s"]:
            line += ": below the ideal, so the model's saving is not the whole story here; no share is given"
        details.append(line + ("" if line.endswith(".") else "."))
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
            f"{r0['s_per_flop'] * 1e12:.3g} s per TFLOP of prefill (c={r0['concurrency']}). The ideal warm TTFT keeps "
            "the fixed cost and drops the cached tokens' compute. "
            + (
                f"The engine delivered {min(valid):.0%} to {max(valid):.0%} of that saving; the rest of a warm request's "
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
            + (f"{min(valid):.0%} to {max(valid):.0%}" if valid else "an unmeasurable share")
            + " of that bound."
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
            f"concurrency: {', '.join(sorted({point_name(r) for r in _rows(empty)}))}), so they have no latency and "
            "no ratio: not measured."
        )
        closed = closed.filter(pl.col("window_requests") > 0)
    if closed.height and "window_requests" in closed.columns:
        rounds = (closed["window_requests"] / closed["concurrency"]).to_list()
        parts.append(
            "Closed-loop latencies come from each point's steady-state window: requests sent after the first completion "
            "(the opening burst of c requests is a wave, not a level) and finished before the first worker ran out of "
            f"work (the drain). At concurrency above 1 the windows held {closed['window_requests'].min()} to "
            f"{closed['window_requests'].max()} requests ({min(rounds):.1f} to {max(rounds):.1f} rounds)"
            + (
                "; fewer than 8 rounds is short of a level, so read those points as indicative and trust only what their "
                "intervals say."
                if min(rounds) < 8
                else "."
            )
        )
    if open_loop(summary).height:
        lag = summary["max_schedule_lag_s"].max() if "max_schedule_lag_s" in summary.columns else None
        parts.append(
            "Open-loop latencies count from each request's scheduled send time (no coordinated omission)"
            + (f"; the client sent at most {fmt_s(lag)} late." if lag is not None else ".")
        )
    instances = int(summary["instances"].max()) if "instances" in summary.columns and summary.height else 1
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
    return markdown_table(on, on.columns)


def flag_cost_words(sp: pl.DataFrame) -> str | None:
    """What enabling the flag cost requests that hit nothing, with server lifetimes as the unit (the flag cannot be
    paired inside a lifetime): one lifetime per setting gives a ratio and no interval. None: not measured this way."""
    if "flag_cost_ratio" not in sp.columns:
        return None
    rows = [r for r in _rows(sp.filter(pl.col("flag_cost_ratio").is_not_null()).sort("prefix_len_tokens", "concurrency"))]
    if not rows:
        return None
    parts = []
    for r in rows:
        ratio = r["flag_cost_ratio"]
        if r.get("flag_cost_lo") is None:
            parts.append(f"{r['regime']} c={r['concurrency']}: on/off {fmt_x(ratio)} (one lifetime per setting: no interval)")
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


def consulting_bullets(summary: pl.DataFrame, sp: pl.DataFrame, block_size: int) -> list[str]:
    top_reuse = sp["reuse_pct"].max()
    c_min, c_max = sp["concurrency"].min(), sp["concurrency"].max()
    # The headline: the longest prefix at full reuse, at the concurrency where the cache's effect is claimed and
    # largest; where no point clears the floor, at the lowest concurrency (and the words say it is within noise).
    ranked = measured(sp.filter(pl.col("reuse_pct") == top_reuse))
    if ranked.is_empty():
        return [
            "**No conclusion:** no point at the highest reuse level was measured in both settings, so this run "
            "supports no recommendation." + unmeasured_words(sp)
        ]
    longest = ranked.sort("prefix_len_tokens")["prefix_len_tokens"][-1]
    candidates = ranked.filter(pl.col("prefix_len_tokens") == longest).sort("concurrency")
    claimed = [r for r in candidates.iter_rows(named=True) if helped(r)]
    big = max(claimed, key=lambda r: r["ttft_speedup"]) if claimed else candidates.row(0, named=True)
    aa = aa_row(sp)
    on = summary.filter(pl.col("mode") == ON)

    def hr(conc: int) -> float | None:
        """Measured hit rate of the headline regime at full reuse and concurrency `conc`."""
        point = (pl.col("reuse_pct") == top_reuse) & (pl.col("concurrency") == conc) & (pl.col("regime") == big["regime"])
        rates = on.filter(point)["measured_hit_rate"]
        return rates[0] if rates.len() else None  # the point may not have been sent (plan.make_plan)

    h1, hmax = hr(c_min), hr(c_max)
    if helped(big):
        enable = (
            f"**When to enable it:** when many requests start with the same long text. Here, with a "
            f"{big['prefix_len_tokens']}-token shared prefix, {top_reuse}% reuse and concurrency {big['concurrency']}, "
            f"first-token latency went from {fmt_s(big['mean_ttft_s_off'])} to {fmt_s(big['mean_ttft_s_on'])} "
            f"({judged(big)}). "
        )
    else:
        enable = (
            f"**When to enable it:** this run does not show a gain to enable it for: with a {big['prefix_len_tokens']}-token "
            f"shared prefix, {top_reuse}% reuse and concurrency {big['concurrency']}, {judged(big)}. "
        )
    bullets = [
        enable + cost_of_leaving_it_on(aa, sp),
        f"**How to tell it is working:** watch `vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total` on "
        f"`/metrics` (this run: {fmt_pct(h1)} for {big['regime']} at {top_reuse}% reuse, c={c_min}) and per-request "
        "`usage.prompt_tokens_details.cached_tokens` (server flag `--enable-prompt-tokens-details`). A rate near zero "
        "despite a shared prompt means the prefix is not token-identical (a timestamp or user id near the top) or is being evicted.",
    ]
    at_max = on.filter(
        (pl.col("reuse_pct") == top_reuse) & (pl.col("concurrency") == c_max) & (pl.col("regime") == big["regime"])
    )
    expected_max = at_max["expected_hit_rate"][0] if at_max.height and "expected_hit_rate" in at_max.columns else None
    if hmax is not None and h1 is not None and hmax < h1 * (1 - NOISE):
        bullets.append(
            f"**Failure mode:** a burst of requests for a prefix that is not cached yet all miss together, because "
            f"blocks become reusable only once computed: at c={c_max} the same prompts hit {fmt_pct(hmax)} vs "
            f"{fmt_pct(h1)} at c={c_min}. Warm the prefix (one request) before a burst, and keep it hot."
        )
    else:
        bullets.append(
            f"**Failure mode:** only whole KV blocks ({block_size} tokens here) are reused and the last prompt token is "
            "always recomputed, so a prefix that changes anywhere early (a timestamp in the system prompt) caches nothing, "
            "and under memory pressure cached blocks are evicted. Concurrent first requests of a cold prefix can also miss "
            "together"
            + (
                f"; this run did not show it (at c={c_max} the measured hit rate {fmt_pct(hmax)} matched the "
                f"{fmt_pct(expected_max)} expected with requests one at a time)."
                if hmax is not None and expected_max is not None and hmax >= expected_max * (1 - NOISE)
                else "."
            )
        )
    bullets.append(
        "**For a product/SRE audience:** the server remembers the work it did reading a shared beginning of a prompt "
        "(system prompt, policy, document) and skips it for the next request that starts the same way"
        + (
            f"; on this run that made the first token arrive {fmt_x(big['ttft_speedup'])} sooner for a "
            f"{big['prefix_len_tokens']}-token shared prefix at {big['concurrency']} request(s) in flight."
            if helped(big)
            else "; on this run the effect on first-token latency could not be told apart from noise (see the intervals above)."
        )
    )
    return bullets
