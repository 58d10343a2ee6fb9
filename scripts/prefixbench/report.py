"""Render prefix_caching_results.md: every figure and every result sentence is computed from the run's data.

The functions here turn the summary into findings (numbers plus the sentence they support); the
Jinja template only arranges them. An off/on ratio whose 95% bootstrap CI includes 1 (or, where no CI
exists, that is within NOISE of 1) is called "no measurable difference" rather than a win or a loss.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import polars as pl

from .aggregate import SEED_COLUMNS, closed_loop, open_loop
from .ideal import Shape, ideal_rows, load_shape

NOISE = 0.05  # relative change treated as noise where no confidence interval is available
GAP_FLAG_S, GAP_FLAG_FRAC = 0.05, 0.25  # client-vs-server gap beyond loopback overhead: both exceeded
OFF, ON = "no_prefix_cache", "with_prefix_cache"


def fmt_s(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_x(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}×"


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def verdict(ratio: float | None, better: str = "faster", worse: str = "slower",
            ci: tuple[float | None, float | None] | None = None) -> str:
    """Words for an off/on ratio where >1 means the cache helped; a CI that includes 1 means noise."""
    if ratio is None:
        return "not measured"
    if ci and ci[0] is not None and ci[1] is not None:
        band = f"95% CI {ci[0]:.2f}–{ci[1]:.2f}"
        if ci[0] <= 1 <= ci[1]:
            return f"no measurable difference ({fmt_x(ratio)}, {band} includes 1)"
        if ratio > 1:
            return f"{fmt_x(ratio)} {better} ({band})"
        return f"{fmt_x(1 / ratio)} {worse} (95% CI {1 / ci[1]:.2f}–{1 / ci[0]:.2f})"
    if abs(ratio - 1) <= NOISE:
        return f"no measurable difference ({fmt_x(ratio)}, within ±{NOISE:.0%})"
    return f"{fmt_x(ratio)} {better}" if ratio > 1 else f"{fmt_x(1 / ratio)} {worse}"


def ci_of(row: dict, name: str) -> tuple[float | None, float | None] | None:
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    return (lo, hi) if lo is not None and hi is not None else None


def helped(row: dict, name: str = "ttft_speedup") -> bool:
    """The cache helped beyond noise: the CI lies above 1 (or, without a CI, the ratio beats NOISE)."""
    ci = ci_of(row, name)
    return ci[0] > 1 if ci else row[name] > 1 + NOISE


@dataclass
class Finding:
    answer: str
    details: list[str]


def _rows(df: pl.DataFrame) -> list[dict]:
    return list(df.iter_rows(named=True))


def ttft_finding(sp: pl.DataFrame) -> Finding:
    top = sp.filter(pl.col("reuse_pct") == sp["reuse_pct"].max())
    n_helped = sum(helped(r) for r in _rows(top))
    best = top.sort("ttft_speedup", descending=True).row(0, named=True)
    lo, hi = top["ttft_speedup"].min(), top["ttft_speedup"].max()
    if n_helped == top.height:
        answer = (f"Yes. At {best['reuse_pct']}% reuse the cache cut mean TTFT at every point, by {fmt_x(lo)} to "
                  f"{fmt_x(hi)}; the largest cut was {best['regime']} ({best['prefix_len_tokens']} tokens) at "
                  f"concurrency {best['concurrency']}: {fmt_s(best['mean_ttft_s_off'])} → {fmt_s(best['mean_ttft_s_on'])}.")
    elif n_helped == 0:
        answer = (f"No. At {best['reuse_pct']}% reuse, no point showed a TTFT cut beyond noise "
                  f"(ratios {fmt_x(lo)} to {fmt_x(hi)}).")
    else:
        answer = (f"Partly. At {best['reuse_pct']}% reuse the cache cut mean TTFT beyond noise at {n_helped} of {top.height} "
                  f"points (ratios {fmt_x(lo)} to {fmt_x(hi)}; best: {best['regime']} at concurrency "
                  f"{best['concurrency']}, {fmt_s(best['mean_ttft_s_off'])} → {fmt_s(best['mean_ttft_s_on'])}).")
    details = [
        f"{r['regime']} ({r['prefix_len_tokens']} tok), reuse {r['reuse_pct']}%, c={r['concurrency']}: "
        f"{fmt_s(r['mean_ttft_s_off'])} → {fmt_s(r['mean_ttft_s_on'])}, {verdict(r['ttft_speedup'], ci=ci_of(r, 'ttft_speedup'))}"
        for r in _rows(sp)
    ]
    if any(ci_of(r, "ttft_speedup") for r in _rows(sp)):
        answer += (" Intervals are 95% bootstrap CIs over the point's requests; a difference whose interval includes 1 "
                   "is reported as no measurable difference.")
    return Finding(answer, details)


def throughput_at_p95(summary: pl.DataFrame) -> list[dict]:
    """Per (regime, reuse): best tok/s of each mode with p95 E2E within the cache-off run's worst p95."""
    out = []
    for (regime, reuse), grp in summary.group_by(["regime", "reuse_pct"], maintain_order=True):
        off = grp.filter(pl.col("mode") == OFF)
        on = grp.filter(pl.col("mode") == ON)
        if off.is_empty() or on.is_empty():
            continue
        budget = off.sort("concurrency")["p95_e2e_s"][-1]
        best_off = off.filter(pl.col("p95_e2e_s") <= budget)["tok_s"].max()
        best_on_rows = on.filter(pl.col("p95_e2e_s") <= budget).sort("tok_s", descending=True)
        best_on = best_on_rows["tok_s"][0] if best_on_rows.height else None
        out.append({
            "regime": regime, "reuse_pct": reuse, "prefix_len_tokens": grp["prefix_len_tokens"][0],
            "p95_budget_s": budget, "tok_s_off": best_off, "tok_s_on": best_on,
            "conc_on": best_on_rows["concurrency"][0] if best_on_rows.height else None,
            "gain": (best_on / best_off) if best_on and best_off else None,
        })
    return out


def throughput_finding(summary: pl.DataFrame) -> Finding:
    rows = throughput_at_p95(summary)
    details = [
        f"{r['regime']} ({r['prefix_len_tokens']} tok), reuse {r['reuse_pct']}%: within p95 E2E ≤ "
        f"{fmt_s(r['p95_budget_s'])}, off {r['tok_s_off']:.1f} tok/s, on "
        + (f"{r['tok_s_on']:.1f} tok/s (c={r['conc_on']}): {verdict(r['gain'], 'more', 'less')}"
           if r["tok_s_on"] is not None else "no point within that p95")
        for r in rows
    ]
    gains = [r["gain"] for r in rows if r["gain"] is not None]
    if not gains:
        return Finding("Not answerable from this run: no cache-on point stayed within the cache-off p95.", details)
    more = sum(g > 1 + NOISE for g in gains)
    if more == len(gains):
        answer = f"Yes: at the same p95 budget the cache sustained {fmt_x(min(gains))} to {fmt_x(max(gains))} the throughput."
    elif more == 0:
        answer = (f"No measurable gain: at the same p95 budget, throughput ratios were {fmt_x(min(gains))} to "
                  f"{fmt_x(max(gains))}.")
    else:
        answer = (f"In {more} of {len(gains)} regime/reuse cases: throughput ratios at the same p95 budget ranged "
                  f"{fmt_x(min(gains))} to {fmt_x(max(gains))}.")
    return Finding(answer + " (Budget: the cache-off run's p95 E2E at its highest concurrency.)", details)


def memory_finding(summary: pl.DataFrame, infos: dict[str, dict]) -> Finding:
    by_mode = {mode: summary.filter(pl.col("mode") == mode) for mode in (OFF, ON)}
    rss = {m: d["peak_server_rss_gib"].max() for m, d in by_mode.items()}
    kv = {m: d["peak_kv_cache_usage"].max() for m, d in by_mode.items()}
    gpu = {m: d["peak_gpu_mem_mib"].max() for m, d in by_mode.items()}
    if rss[OFF] is None or rss[ON] is None:
        return remote_memory_finding(kv)
    details = [f"Peak server RSS (process tree): off {rss[OFF]:.2f} GiB, on {rss[ON]:.2f} GiB."]
    if kv[OFF] is not None or kv[ON] is not None:
        details.append(f"Peak vLLM KV-cache usage gauge: off {fmt_pct(kv[OFF])}, on {fmt_pct(kv[ON])}.")
    if gpu[OFF] is not None and gpu[ON] is not None:
        details.append(f"Peak GPU memory used: off {gpu[OFF]:.0f} MiB, on {gpu[ON]:.0f} MiB.")
    diff = rss[ON] - rss[OFF]
    rel = diff / rss[OFF] if rss[OFF] else 0.0
    if abs(rel) <= NOISE:
        answer = (f"No measurable overhead in process memory: peak RSS {rss[OFF]:.2f} GiB off vs {rss[ON]:.2f} GiB on "
                  f"({diff:+.2f} GiB). vLLM preallocates its KV-cache pool either way; the cache only keeps freed "
                  "blocks reusable until they are needed.")
    else:
        answer = f"Peak RSS differed by {diff:+.2f} GiB ({rel:+.0%}) with the cache on ({rss[OFF]:.2f} → {rss[ON]:.2f} GiB)."
    if kv[OFF] is not None and kv[ON] is not None:
        answer += f" KV-cache usage peaked at {kv[ON]:.1%} of the pool with the cache on vs {kv[OFF]:.1%} off"
        if kv[ON] < kv[OFF] * (1 - NOISE) and kv[OFF] - kv[ON] >= 0.005:
            answer += ": shared blocks are held once for all the requests using them, so the same traffic used less of it."
        elif kv[ON] > kv[OFF] * (1 + NOISE) and kv[ON] - kv[OFF] >= 0.005:
            answer += ": cached blocks stay resident after their requests end, until evicted."
        else:
            answer += " (no measurable difference)."
    return Finding(answer, details)


def remote_memory_finding(kv: dict[str, float | None]) -> Finding:
    """Existing endpoints: no process memory to read; the KV-cache gauge where their /metrics has it."""
    answer = "Not measurable here: the servers are existing endpoints, not processes on this machine, so their memory was not read."
    details = []
    if kv[OFF] is not None and kv[ON] is not None:
        answer += f" Their KV-cache usage gauge peaked at {kv[OFF]:.1%} of the pool with the cache off and {kv[ON]:.1%} on."
        details.append("KV-cache usage from each endpoint's `vllm:kv_cache_usage_perc` gauge, sampled during every point.")
    return Finding(answer, details)


def reuse_finding(sp: pl.DataFrame) -> Finding:
    c1 = sp.filter(pl.col("concurrency") == sp["concurrency"].min())
    details = []
    for (regime,), grp in c1.group_by("regime", maintain_order=True):
        parts = ", ".join(f"{r['reuse_pct']}% reuse {fmt_x(r['ttft_speedup'])}" for r in _rows(grp.sort("reuse_pct", descending=True)))
        details.append(f"{regime} ({grp['prefix_len_tokens'][0]} tok, {_workload(grp)}) at c={grp['concurrency'][0]}: {parts}")
    u = unique_prefix_ratio(sp)
    if u is not None:
        details.append(f"Requests with a unique (never-shared) prefix, at concurrency {sp['concurrency'].min()} (no queueing "
                       f"behind cached requests): {verdict(u)} with the cache on.")
    best = sp.sort("ttft_speedup", descending=True).row(0, named=True)
    answer = (f"The gain tracks how much of each prompt is a prefix already in cache. The best case here was "
              f"{best['regime']} ({best['prefix_len_tokens']} tokens, {best['workload']}) at {best['reuse_pct']}% reuse "
              f"and concurrency {best['concurrency']}: {fmt_x(best['ttft_speedup'])}. "
              "Shapes that put the same long text in front of many requests benefit most: a fixed system prompt or tool "
              "policy (the chat_policy regime), a RAG document asked about repeatedly (rag_document), and multi-turn chat, "
              "where each turn's history is the next turn's prefix. Traffic whose long parts differ per request gains nothing.")
    return Finding(answer, details)


def unique_prefix_ratio(sp: pl.DataFrame) -> float | None:
    """Off/on mean TTFT of never-shared-prefix requests at the lowest concurrency: the cost of caching a miss."""
    rows = sp.filter(pl.col("concurrency") == sp["concurrency"].min()).drop_nulls("unique_prefix_ttft_speedup")
    return rows["unique_prefix_ttft_speedup"].mean() if rows.height else None


def _workload(grp: pl.DataFrame) -> str:
    return grp["workload"][0]


def prefix_length_finding(sp: pl.DataFrame) -> Finding:
    """Speed-up and time saved per request from the shortest to the longest prefix, at each concurrency."""
    top = sp.filter((pl.col("reuse_pct") == sp["reuse_pct"].max()))
    details, trends = [], []
    for (conc,), grp in top.group_by("concurrency", maintain_order=True):
        g = grp.sort("prefix_len_tokens")
        saved = [(r["prefix_len_tokens"], r["ttft_speedup"], r["mean_ttft_s_off"] - r["mean_ttft_s_on"]) for r in _rows(g)]
        details.append(f"c={conc}: " + "; ".join(f"{n} tok {fmt_x(x)} (saves {fmt_s(s)})" for n, x, s in saved))
        if len(saved) >= 2:
            trends.append((conc, saved[0], saved[-1]))
    if not trends:
        return Finding("Only one prefix length was measured, so the trend is not answerable from this run.", details)

    def direction(a: float, b: float) -> str:
        return "grew" if b > a * (1 + NOISE) else "shrank" if b < a * (1 - NOISE) else "stayed about the same"

    parts = [f"at c={c} the speed-up {direction(x0, x1)} from {fmt_x(x0)} at {n0} tokens to {fmt_x(x1)} at {n1} "
             f"(time saved per request {fmt_s(s0)} → {fmt_s(s1)})" for c, (n0, x0, s0), (n1, x1, s1) in trends]
    grew = sum(s1 > s0 * (1 + NOISE) for _, (_, _, s0), (_, _, s1) in trends)
    if grew == len(trends):
        tail = "At every concurrency the longer prefix saved more time per request: the cache skips more prefill."
    elif grew == 0:
        tail = ("At no concurrency did the longer prefix save more time per request: on this setup prefill of these "
                "lengths is not what dominates TTFT (fixed per-request overhead does).")
    else:
        tail = (f"The longer prefix saved more time per request at {grew} of {len(trends)} concurrency levels; where it "
                "did not, fixed per-request overhead, not prefill, dominates TTFT.")
    answer = f"At {top['reuse_pct'][0]}% reuse, " + "; ".join(parts) + ". " + tail
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
    answer = (f"Reuse levels tested: {', '.join(f'{r}%' for r in reuses)} of requests sharing the prefix "
              f"(measured token hit rates with the cache on: {fmt_pct(on['measured_hit_rate'].min())} to "
              f"{fmt_pct(on['measured_hit_rate'].max())}).")
    # Mixed traffic: mean TTFT ≈ f·TTFT(warm) + (1−f)·TTFT(cold); test it on the measured points.
    preds = []
    c_min = summary["concurrency"].min()
    for regime in summary["regime"].unique(maintain_order=True).to_list():
        full = on.filter((pl.col("regime") == regime) & (pl.col("reuse_pct") == 100) & (pl.col("concurrency") == c_min))
        cold = off.filter((pl.col("regime") == regime) & (pl.col("reuse_pct") == 100) & (pl.col("concurrency") == c_min))
        for r in _rows(on.filter((pl.col("regime") == regime) & (pl.col("reuse_pct") < 100) & (pl.col("concurrency") == c_min))):
            if full.is_empty() or cold.is_empty():
                continue
            f = r["reuse_pct"] / 100
            pred = f * full["mean_ttft_s"][0] + (1 - f) * cold["mean_ttft_s"][0]
            preds.append((regime, r["reuse_pct"], pred, r["mean_ttft_s"]))
    for regime, reuse, pred, meas in preds:
        details.append(f"{regime} at {reuse}% reuse, c={c_min}: model predicts mean TTFT {fmt_s(pred)}, measured {fmt_s(meas)} "
                       f"({(meas / pred - 1):+.0%}).")
    if preds:
        err = max(abs(m / p - 1) for *_, p, m in preds)
        answer += (f" Mixed traffic behaves like a blend: mean TTFT ≈ f·TTFT(warm) + (1−f)·TTFT(cold), with f the share of "
                   f"requests that reuse a cached prefix; on this run that model was within {err:.0%} of the measured "
                   "mixed-traffic TTFT. The benefit shrinks in proportion to the misses.")
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
    return summary.filter((on & (diff > block_size * pl.col("requests_sent")))
                          | (~on & (pl.col("hit_tokens").fill_null(0) > 0)))


def cross_checks(summary: pl.DataFrame, block_size: int) -> Finding:
    details = []
    timed = summary.drop_nulls("server_mean_ttft_s")
    if timed.height:
        details.append(
            f"Client minus server mean TTFT (server: `vllm:time_to_first_token_seconds`, deltas around each point): "
            f"{fmt_s(timed['ttft_gap_s'].min())} to {fmt_s(timed['ttft_gap_s'].max())}; end-to-end "
            f"(`vllm:e2e_request_latency_seconds`): {fmt_s(timed['e2e_gap_s'].min())} to {fmt_s(timed['e2e_gap_s'].max())}.")
        tf = timing_flags(timed)
        details.append("No point's gap exceeds loopback overhead (flag: over both "
                       f"{fmt_s(GAP_FLAG_S)} and {GAP_FLAG_FRAC:.0%} of the server's figure)." if tf.is_empty() else
                       f"Flagged, gap beyond loopback overhead (over both {fmt_s(GAP_FLAG_S)} and {GAP_FLAG_FRAC:.0%}): " +
                       ", ".join(f"{r['mode']} {r['regime']} reuse {r['reuse_pct']}% {load_label(r)} "
                                 f"(TTFT gap {fmt_s(r['ttft_gap_s'])})" for r in _rows(tf)) +
                       ". Queueing in the API server before the engine sees a request counts for the client only.")
    else:
        details.append("The server exposed no latency histograms, so client timings could not be cross-checked.")
    on = summary.filter(pl.col("mode") == ON)
    if summary["hit_tokens"].is_null().all():
        client_cached = int(on["cached_tokens"].fill_null(0).sum())
        details.append("No server-side prefix-cache counters (`/metrics` without `vllm:prefix_cache_hits_total`): hits "
                       f"could not be counted by the server. Per-request `cached_tokens` sum to {client_cached} with the "
                       f"cache on and {int(summary.filter(pl.col('mode') == OFF)['cached_tokens'].fill_null(0).sum())} "
                       "with it off.")
        return Finding("Cross-checks were limited to what the endpoints expose (see below).", details)
    hf = hit_flags(summary, block_size)
    details.append(
        f"Cache hits, server counters vs the prompt generator's expectation (whole {block_size}-token blocks of the shared "
        "prefix, last prompt token recomputed, first request of a prefix a miss): " +
        ("every point within a block per request." if hf.is_empty() else
         "disagreeing at " + ", ".join(f"{r['mode']} {r['regime']} reuse {r['reuse_pct']}% {load_label(r)} "
                                       f"({r['hit_tokens']:.0f} vs {r['expected_cached_tokens']})" for r in _rows(hf)) + "."))
    client_cached = int(on["cached_tokens"].fill_null(0).sum())
    server_hits = int(on["hit_tokens"].fill_null(0).sum())
    details.append(f"Per-request `cached_tokens` reported to the client sum to {client_cached} with the cache on; the "
                   f"server's hit counter moved by {server_hits}" + (" (equal)." if client_cached == server_hits else "."))
    off_hits = summary.filter(pl.col("mode") == OFF)["hit_tokens"].fill_null(0).sum()
    details.append(f"With the cache off the server counted {off_hits:.0f} hit tokens" + (" (as it must)." if off_hits == 0 else ": a defect."))
    ok = timing_flags(timed).is_empty() if timed.height else False
    answer = ("All cross-checks agree." if ok and hf.is_empty() and off_hits == 0 else
              "Some cross-checks disagree; the flagged points are listed below.")
    return Finding(answer, details)


def goodput_rows(summary: pl.DataFrame, slo: dict) -> list[dict]:
    """Per (regime, reuse, mode): the highest offered open-loop rate met within the SLO with no failed request."""
    ttft_t, e2e_t = slo.get("p95_ttft_s", 1.0), slo.get("p95_e2e_s", 10.0)
    out = []
    for (regime, reuse, mode), grp in open_loop(summary).group_by(["regime", "reuse_pct", "mode"], maintain_order=True):
        meets = grp.filter((pl.col("p95_ttft_s") <= ttft_t) & (pl.col("p95_e2e_s") <= e2e_t) & (pl.col("requests_failed") == 0))
        best = meets.sort("request_rate", descending=True).row(0, named=True) if meets.height else None
        out.append({"regime": regime, "reuse_pct": reuse, "mode": mode, "prefix_len_tokens": grp["prefix_len_tokens"][0],
                    "rates": grp["request_rate"].sort().to_list(),
                    "goodput_rate": best["request_rate"] if best else 0.0,
                    "achieved_req_s": best["req_s"] if best else None})
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
        details.append(f"{regime} ({off['prefix_len_tokens']} tok), reuse {reuse}%: cache off {show(off)}, on {show(on)}"
                       + (f", {fmt_x(ratio)}" if ratio else "") + f"; offered {', '.join(f'{x:g}' for x in off['rates'])} req/s")
    target = f"p95 TTFT ≤ {fmt_s(slo.get('p95_ttft_s', 1.0))} and p95 E2E ≤ {fmt_s(slo.get('p95_e2e_s', 10.0))}"
    higher = sum(on > off for off, on, _ in pairs)
    capped = sum(on == off == top for off, on, top in pairs)
    answer = (f"Goodput here is the highest offered request rate (open loop, gamma arrivals) a mode served within {target} "
              f"with no failed request. The cache raised it in {higher} of {len(pairs)} regime/reuse cases")
    answer += (f"; in {capped} both modes met the target at the highest rate offered, so higher rates are needed to "
               "separate them." if capped else ".")
    return Finding(answer, details)


def ideal_finding(summary: pl.DataFrame, shape: Shape | None, block_size: int) -> Finding:
    """Measured warm TTFT against the FLOPs ideal, per regime, at full reuse and the lowest concurrency."""
    if shape is None:
        return Finding("Not computed: the model's config.json is not available locally (a hub model).", [])
    rows = ideal_rows(summary, shape, block_size)
    details = [
        f"{r['regime']}: cold TTFT {fmt_s(r['cold_s'])} (cache off, {r['tokens']:.0f} prompt tokens); with "
        f"{r['cached']:.0f} tokens cached {r['flops_left']:.1%} of the prefill FLOPs remain, so the ideal is "
        f"{fmt_s(r['ideal_s'])}; measured warm {fmt_s(r['warm_s'])}"
        + (f": {r['share']:.0%} of the ideal saving, {fmt_s(r['warm_s'] - r['ideal_s'])} above the ideal."
           if r["share"] is not None else ".")
        for r in rows
    ]
    valid = [r["share"] for r in rows if r["share"] is not None]
    if not rows:
        return Finding("Not computed: no regime has both cache settings at full reuse.", details)
    answer = (f"From the model's shape ({shape.layers} layers, width {shape.hidden}, {shape.params / 1e6:.0f} M matmul "
              f"parameters), caching the shared prefix removes most prefill FLOPs; if TTFT were all prefill compute, warm "
              f"requests would be that much faster. At concurrency {rows[0]['concurrency']} the engine delivered "
              + (f"{min(valid):.0%} to {max(valid):.0%}" if valid else "an unmeasurable share")
              + " of that ideal saving. What remains above the ideal is work the FLOPs model leaves out: request "
              "handling and scheduling, the recomputed last block, and the first token's decode step.")
    return Finding(answer, details)


def cold_warm_table(summary: pl.DataFrame) -> str:
    on = summary.filter(pl.col("mode") == ON).select(
        "regime", "reuse_pct", "concurrency", "mean_ttft_cold_s", "mean_ttft_warm_s", "mean_ttft_unique_s")
    return markdown_table(on, on.columns)


def consulting_bullets(summary: pl.DataFrame, sp: pl.DataFrame, block_size: int) -> list[str]:
    top_reuse = sp["reuse_pct"].max()
    c_min, c_max = sp["concurrency"].min(), sp["concurrency"].max()
    big = sp.filter((pl.col("reuse_pct") == top_reuse) & (pl.col("concurrency") == c_min)).sort("prefix_len_tokens").row(-1, named=True)
    u = unique_prefix_ratio(sp)
    on = summary.filter(pl.col("mode") == ON)
    hr = lambda c: on.filter((pl.col("reuse_pct") == top_reuse) & (pl.col("concurrency") == c) & (pl.col("regime") == big["regime"]))["measured_hit_rate"][0]  # noqa: E731
    h1, hmax = hr(c_min), hr(c_max)
    bullets = [
        f"**When to enable it:** whenever many requests start with the same long text. Here, with a "
        f"{big['prefix_len_tokens']}-token shared prefix and {top_reuse}% reuse, first-token latency went from "
        f"{fmt_s(big['mean_ttft_s_off'])} to {fmt_s(big['mean_ttft_s_on'])} ({fmt_x(big['ttft_speedup'])}); requests with "
        f"no shared prefix (c={c_min}) saw {verdict(u)}" + (", so leaving it on costs little when nothing is shared."
                                                     if u is not None and u > 1 - NOISE else "."),
        f"**How to tell it is working:** watch `vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total` on "
        f"`/metrics` (this run: {fmt_pct(h1)} for {big['regime']} at {top_reuse}% reuse, c={c_min}) and per-request "
        "`usage.prompt_tokens_details.cached_tokens` (server flag `--enable-prompt-tokens-details`). A rate near zero "
        "despite a shared prompt means the prefix is not token-identical (a timestamp or user id near the top) or is being evicted.",
    ]
    if hmax is not None and h1 is not None and hmax < h1 * (1 - NOISE):
        bullets.append(
            f"**Failure mode:** a burst of requests for a prefix that is not cached yet all miss together, because "
            f"blocks become reusable only once computed: at c={c_max} the same prompts hit {fmt_pct(hmax)} vs "
            f"{fmt_pct(h1)} at c={c_min}. Warm the prefix (one request) before a burst, and keep it hot.")
    else:
        bullets.append(
            f"**Failure mode:** only whole KV blocks ({block_size} tokens here) are reused and the last prompt token is "
            "always recomputed, so a prefix that changes anywhere early (a timestamp in the system prompt) caches nothing, "
            "and under memory pressure cached blocks are evicted. Concurrent first requests of a cold prefix can also miss "
            f"together; this run did not show it (hit rate {fmt_pct(hmax)} at c={c_max} vs {fmt_pct(h1)} at c={c_min}).")
    bullets.append(
        f"**For a product/SRE audience:** the server remembers the work it did reading a shared beginning of a prompt "
        f"(system prompt, policy, document) and skips it for the next request that starts the same way; on this run that "
        f"made the first token arrive {fmt_x(big['ttft_speedup'])} sooner for a {big['prefix_len_tokens']}-token shared prefix.")
    return bullets


def markdown_table(df: pl.DataFrame, columns: Sequence[str]) -> str:
    def cell(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(r[c]) for c in columns) + " |\n" for r in df.iter_rows(named=True))


def prompt_strategy(prompt_paths: Sequence[Path]) -> list[dict]:
    out = []
    for path in prompt_paths:
        recs = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        shared = next(r for r in recs if r["prefix_group"] == "shared") if any(r["prefix_group"] == "shared" for r in recs) else recs[0]
        by_reuse: dict[int, list[dict]] = {}
        for r in recs:
            by_reuse.setdefault(r["reuse_pct"], []).append(r)
        out.append({
            "regime": recs[0]["regime"], "workload": recs[0]["workload"], "prefix_len_tokens": recs[0]["prefix_len_tokens"],
            "prompt_tokens_min": min(r["prompt_len_tokens"] for r in recs),
            "prompt_tokens_max": max(r["prompt_len_tokens"] for r in recs),
            "reuse": {k: (sum(r["prefix_group"] == "shared" for r in v), len(v)) for k, v in sorted(by_reuse.items(), reverse=True)},
            "excerpt": shared["prompt"].split("\nQ: ")[0][:240].replace("\n", " ") + " …",
            "example_question": shared["question"],
        })
    return out


def not_measured(endpoints: dict[str, dict]) -> list[str]:
    """What the endpoints kept the run from measuring, each item once, naming the settings it applies to."""
    where: dict[str, list[str]] = {}
    for mode, info in endpoints.items():
        for item in info.get("not_measured", []):
            where.setdefault(item, []).append(mode)
    return [item if len(modes) == len(endpoints) else f"{item} ({', '.join(modes)} only)" for item, modes in where.items()]


def render(template: Path, out: Path, summary_csv: Path, speedup_csv: Path, info_paths: Sequence[Path],
           script_paths: Sequence[Path], prompt_paths: Sequence[Path], model: dict, target: str, max_tokens: int,
           block_size: int, slo: dict | None = None) -> None:
    everything = pl.read_csv(summary_csv)
    if "request_rate" not in everything.columns:
        everything = everything.with_columns(pl.lit(0.0).alias("request_rate"))
    summary = closed_loop(everything)  # the seed's questions are about the concurrency sweep
    sp = closed_loop(pl.read_csv(speedup_csv))
    infos = {i["mode"]: i for i in (json.loads(Path(p).read_text()) for p in info_paths)}
    info = infos.get(ON) or next(iter(infos.values()))
    endpoints = {mode: i for mode, i in infos.items() if not i.get("started_by_prefixbench", True)}
    dummy = model.get("source") == "dummy"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template.parent)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    text = env.get_template(template.name).render(
        info=info, infos=infos, target=target, model=model, dummy=dummy, max_tokens=max_tokens,
        block_size=block_size, strategy=prompt_strategy(prompt_paths),
        scripts={Path(p).name: Path(p).read_text() for p in script_paths},
        endpoints=endpoints, not_measured=not_measured(endpoints),
        seed_table=markdown_table(everything, SEED_COLUMNS),
        extra_table=markdown_table(everything, ["mode", "regime", "reuse_pct", "concurrency", "requests_ok", "requests_failed",
                                             "p50_ttft_s", "p95_ttft_s", "p99_e2e_s", "mean_itl_s", "measured_hit_rate",
                                             "expected_hit_rate", "peak_server_rss_gib", "peak_kv_cache_usage"]),
        ttft=ttft_finding(sp), throughput=throughput_finding(summary), memory=memory_finding(summary, infos),
        shapes=reuse_finding(sp.join(summary.select("regime", "workload").unique(), on="regime", how="left")),
        length=prefix_length_finding(sp), hitrate=hit_rate_model(summary),
        bullets=consulting_bullets(summary, sp, block_size),
        checks=cross_checks(everything, block_size), cold_warm=cold_warm_table(summary),
        goodput=goodput_finding(everything, slo or {}),
        ideal=ideal_finding(summary, load_shape(model.get("path", "")), block_size),
        n_points=everything.height, n_requests=int(everything["requests_sent"].sum()),
        n_failed=int(everything["requests_failed"].sum()), fmt_s=fmt_s,
    )
    out.write_text(text)
