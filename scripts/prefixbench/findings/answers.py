"""The answers to the seed's questions (TTFT, throughput at the same p95, memory, workload shapes, prefix
length, goodput): each a Finding, its sentence judged by the claim rule (claims.py).
"""

from __future__ import annotations

import polars as pl

from .. import OFF, ON
from ..aggregate import closed_loop
from ..formatting import fmt_pct, fmt_x
from ..scalars import opt_num
from .claims import (
    Finding,
    ci_of,
    helped,
    hurt,
    interval_gap,
    judge,
    judged,
    load_label,
    measured,
    point_name,
    rows_of,
    saved,
    span,
    unmeasured_words,
    verdict,
)
from .controls import aa_row, aa_words
from .derived import goodput_rows, throughput_at_p95, throughput_floors
from .units import fmt_s, fmt_s_range


def ttft_finding(sp: pl.DataFrame) -> Finding:
    gaps = unmeasured_words(sp)
    top_all = sp.filter(pl.col("reuse_pct") == sp["reuse_pct"].max())
    top = measured(top_all)
    if top.is_empty():
        return Finding(
            "Not answerable from this run: no point at the highest reuse level was measured in both settings." + gaps,
            [f"{point_name(r)}: {judged(r)}" for r in rows_of(sp)],
        )
    rows = rows_of(top)
    n_helped, n_hurt = sum(helped(r) for r in rows), sum(hurt(r) for r in rows)
    best = top.sort("ttft_speedup", descending=True).row(0, named=True)
    claimed = [r for r in rows if helped(r)]
    # A paired point is judged against its own 0%-reuse control, not the A/A band (contrasts.paired_effects).
    beyond = "beyond the A/A noise floor"
    if "contrast" in top.columns and "paired" in top["contrast"].to_list():
        beyond = "beyond the noise (each interval excludes 1, and no 0%-reuse paired control failed)"
    if n_helped == top.height:
        lo = min(r["ttft_speedup_lo"] for r in claimed)
        answer = (
            f"Yes. At {best['reuse_pct']}% reuse the cache cut mean TTFT at every point, {beyond}; "
            f"the smallest interval bound was {fmt_x(lo)}, the largest cut {best['regime']} "
            f"({best['prefix_len_tokens']} tokens) at concurrency {best['concurrency']}: {fmt_s(best['mean_ttft_s_off'])} "
            f"→ {fmt_s(best['mean_ttft_s_on'])}, {judged(best)}."
        )
    elif n_helped == 0:
        answer = (
            f"No claim. At {best['reuse_pct']}% reuse no point showed a TTFT cut whose interval clears the A/A "
            f"noise floor (ratios {span(fmt_x(opt_num(top['ttft_speedup'].min())), fmt_x(opt_num(top['ttft_speedup'].max())))})."
        )
    else:
        b = max(claimed, key=lambda r: r["ttft_speedup"])
        answer = (
            f"Partly. At {b['reuse_pct']}% reuse the cache cut mean TTFT {beyond.split(' (')[0]} at {n_helped} of "
            f"{top.height} points; the largest: {b['regime']} at concurrency {b['concurrency']}, "
            f"{fmt_s(b['mean_ttft_s_off'])} → {fmt_s(b['mean_ttft_s_on'])}, {judged(b)}."
        )
    if n_hurt:
        answer += f" At {n_hurt} point(s) the cache made TTFT worse beyond the floor (listed below)."
    answer += gaps
    details = [
        f"{r['regime']} ({r['prefix_len_tokens']} tok), reuse {r['reuse_pct']}%, c={r['concurrency']}: "
        f"{fmt_s(r['mean_ttft_s_off'])} → {fmt_s(r['mean_ttft_s_on'])}, {judged(r)}"
        for r in rows_of(sp)
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


def same_concurrency(summary: pl.DataFrame, r: dict) -> str:
    """Beside an interpolated ratio, the plain one: on/off throughput at each concurrency both settings ran (an
    interpolation between two points of one curve can read larger than any measured pair)."""
    if "concurrency" not in summary.columns:
        return ""
    grp = closed_loop(summary).filter((pl.col("regime") == r["regime"]) & (pl.col("reuse_pct") == r["reuse_pct"]))
    off = {x["concurrency"]: x["tok_s"] for x in rows_of(grp.filter(pl.col("mode") == OFF)) if x["tok_s"]}
    on = {x["concurrency"]: x["tok_s"] for x in rows_of(grp.filter(pl.col("mode") == ON)) if x["tok_s"]}
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
                head + f"the modes' p95 ranges do not overlap (off {fmt_s_range(r['range_off'])}, on "
                f"{fmt_s_range(r['range_on'])}), so no common budget lies inside both measured ranges."
            )
            continue
        if r["reuse_pct"] == 0:
            band = f", 95% CI {r['gain_ci'][0]:.2f}–{r['gain_ci'][1]:.2f}" if r["gain_ci"] else ""
            words = f"{fmt_x(r['gain'])} on/off{band}: the A/A control for throughput (nothing can hit), not a claim"
        else:
            gap = interval_gap(passes=r["passes"])
            words = verdict(r["gain"], "more", "less", ci=r["gain_ci"], floor=floors.get(r["regime"]), no_interval=gap)
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
    more = [r for r in judged_rows if judge(r["gain"], ci=r["gain_ci"], floor=floors.get(r["regime"])).kind == "faster"]
    gains = [r["gain"] for r in judged_rows]
    if len(more) == len(judged_rows):
        answer = f"Yes: at the same p95 budget the cache sustained {span(fmt_x(min(gains)), fmt_x(max(gains)))} the throughput."
    elif not more:
        answer = (
            f"No claim: at the same p95 budget, the throughput ratio (on/off) was {span(fmt_x(min(gains)), fmt_x(max(gains)))}"
            f"{'' if len(gains) == 1 else ' across the cases'}, with no interval above 1 and clear of the A/A floor."
        )
    else:
        answer = (
            f"In {len(more)} of {len(judged_rows)} regime/reuse cases with reuse, beyond the A/A floor: throughput "
            f"ratios at the same p95 budget ranged {span(fmt_x(min(gains)), fmt_x(max(gains)))}."
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
        return remote_memory_finding({m: opt_num(d["peak_kv_cache_usage"].max()) for m, d in by_mode.items()})
    rows = rows_of(sp)
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
            f"Point for point (the same requests off and on), peak server RSS moved by {span(f'{min(rss):+.2f}', f'{max(rss):+.2f}')} GiB "
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
        same = f" (the same at {len(kv) - lower - higher})" if len(kv) > lower + higher else ""
        moved = f"peaked lower with the cache on at {lower} of {len(kv)} points and higher at {higher}{same}"
        moved = moved if lower + higher else "peaked at the same level off and on at every point"
        answer += (
            f" The KV-cache usage gauge {moved}: a shared prefix's blocks are held once for every request using them, "
            "while finished requests' blocks stay resident (counted as used) until evicted."
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
            f"{r['reuse_pct']}% reuse {fmt_x(r['ttft_speedup'])}" for r in rows_of(grp.sort("reuse_pct", descending=True))
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
    claimed = [r for r in rows_of(ranked) if helped(r)]
    if claimed:
        best = claimed[0]
        answer = (
            f"The largest claimed gain here was {best['regime']} ({best['prefix_len_tokens']} tokens, {best['workload']}) "
            f"at {best['reuse_pct']}% reuse and concurrency {best['concurrency']}: {judged(best)}. Claimed at "
            f"{len(claimed)} of the {ranked.filter(pl.col('reuse_pct') > 0).height} points with reuse: "
            + ", ".join(sorted({f"{r['regime']} ({r['workload']})" for r in claimed}))
            + "."
        )
    else:
        answer = (
            "No regime or workload shape showed a claimed gain on this run (ratios "
            f"{span(fmt_x(opt_num(ranked['ttft_speedup'].min())), fmt_x(opt_num(ranked['ttft_speedup'].max())))}); see each "
            "point's verdict."
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
    where = "In every regime the gain" if len(said) > 1 else "The gain"
    return f"{where} grew with the reuse level, beyond the intervals (" + "; ".join(said) + ")."


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
                for r in rows_of(grp.sort("prefix_len_tokens"))
            )
        )
        g = rows_of(measured(grp).sort("prefix_len_tokens"))
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
