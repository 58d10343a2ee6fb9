"""The report's workload-shape section: what each shape gained, and how well the cache model called every hit.

"What workload shapes benefit most?" is answered from measurements side by side (hit rates expected,
predicted and measured; the TTFT ratio with its interval, judged against the A/A floor), and the caveat
about memory pressure from the measured capacity cliff and the trace's position on its capacity curve.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .findings import judged
from .formatting import fmt_pct, fmt_s, fmt_x, markdown_table
from .shape_results import by_turn
from .shapes import trace_capacity_curve

TRACE_BLOCK_TOKENS = 512  # the Mooncake trace's hash-id block
CURVE_CAPACITIES = (1_000, 3_000, 10_000, 30_000, 100_000)


def describe(shape: dict, kv_blocks: int | None) -> str:
    """One line of what a shape regime sends."""
    p, kind = shape["params"], shape["kind"]
    if kind == "multi_turn":
        return (
            f"{p['sessions']} sessions x {p['turns']} turns, {p['system_tokens']}-token system prompt, "
            f"{p['answer_tokens']}-token scripted answers"
        )
    if kind == "prefix_pool":
        two = f" behind a shared {p['system_tokens']}-token system prompt" if p.get("system_tokens") else ""
        return f"{p['requests']} requests over {p['documents']} documents of {p['doc_tokens']} tokens{two}, Zipf alpha {p['zipf_alpha']:g}"
    if kind == "kv_overflow":
        cap = f"{p['capacity_blocks']} KV blocks" + (f" (server: {kv_blocks})" if kv_blocks else "")
        return f"working set {p['working_set']:g}x the KV capacity ({cap}), {p['requests']} requests, one at a time"
    if kind == "trace":
        return (
            f"Mooncake trace, requests {p.get('start', 0)}-{p.get('start', 0) + p['requests'] - 1}, each 512-token block as "
            f"{p['chunk_tokens']} tokens, arrivals scaled to {p['rate']:g} req/s"
        )
    return kind


def shapes_table(sp: pl.DataFrame, check: pl.DataFrame, shapes: dict[str, dict]) -> str:
    """Shape -> hit rate (expected, predicted, measured) and TTFT off/on with its verdict, per point; shapes in
    the config's order (a sweep's working sets ascending, not as their names sort: ws50 after ws400)."""
    order = {name: i for i, name in enumerate(shapes)}
    points = sp.filter(pl.col("regime").is_in(list(shapes))).sort(
        pl.col("regime").replace_strict(order, return_dtype=pl.Int64), maintain_order=True
    )
    rows = []
    for r in points.iter_rows(named=True):
        c = check.filter(
            (pl.col("regime") == r["regime"])
            & (pl.col("concurrency") == r["concurrency"])
            & (pl.col("request_rate") == r["request_rate"])
        )
        cr = c.row(0, named=True) if c.height else {}
        rows.append(
            {
                "shape": r["regime"],
                "kind": shapes[r["regime"]]["kind"],
                "load": f"{r['request_rate']:g} req/s" if r["request_rate"] else f"c={r['concurrency']}",
                "hit rate: expected": fmt_pct(cr.get("expected_hit_rate")),
                "predicted": fmt_pct(cr.get("predicted_hit_rate")),
                "measured": fmt_pct(cr.get("measured_hit_rate")),
                "TTFT off → on": f"{fmt_s(r['mean_ttft_s_off'])} → {fmt_s(r['mean_ttft_s_on'])}",
                "verdict": judged(r),
                "tok/s on/off": fmt_x(r.get("throughput_gain")),
            }
        )
    return markdown_table(pl.DataFrame(rows), list(rows[0])) if rows else ""


def prediction_words(check: pl.DataFrame, block_size: int) -> str:
    """How many shape requests the cache model called exactly, and the worst miss."""
    if check.is_empty():
        return "No shape request reported its cached tokens, so the cache model could not be checked."
    n, exact = int(check["requests"].sum()), int(check["exact"].sum())
    off = int(check["off_by_more_than_a_block"].sum())
    worst = check.sort("max_diff_tokens", descending=True).row(0, named=True)
    text = (
        f"The cache model (whole {block_size}-token blocks, vLLM's LRU order, replayed over each pass's actual send and "
        f"end times and the server's KV capacity) predicted the cached tokens of {exact} of {n} shape requests with the "
        f"cache on exactly"
    )
    if "unpredicted" in check.columns and check["unpredicted"].sum():
        lost = check.filter(pl.col("unpredicted") > 0)
        text += (
            f" ({int(check['unpredicted'].sum())} further request(s) it could not place: "
            + "; ".join(
                f"{r['regime']} c={r['concurrency']}: {r['unpredicted']}, {r['unpredicted_reason']}"
                for r in lost.iter_rows(named=True)
            )
            + ")"
        )
    if off:
        return (
            text + f"; {off} differ by more than one block, the largest by {worst['max_diff_tokens']} tokens "
            f"({worst['regime']} at c={worst['concurrency']}). Concurrent admissions are where the model's assumption "
            "(a request is scheduled when it is sent) is weakest."
        )
    return text + (
        f"; none differs by more than one block (largest difference {worst['max_diff_tokens']} tokens)." if exact < n else "."
    )


def turns_table(req: pl.DataFrame) -> str:
    t = by_turn(req)
    if t.is_empty():
        return ""
    rows = [
        {
            "shape": r["regime"],
            "c": r["concurrency"],
            "turn": r["turn"],
            "prompt tokens": f"{r['mean_prompt_tokens']:.0f}",
            "hit rate (on)": fmt_pct(r["hit_rate"]),
            "TTFT off": fmt_s(r["ttft_off_s"]),
            "TTFT on": fmt_s(r["ttft_on_s"]),
            "off/on": fmt_x(r["ttft_speedup"]),
        }
        for r in t.iter_rows(named=True)
    ]
    return markdown_table(pl.DataFrame(rows), list(rows[0]))


def turns_words(req: pl.DataFrame) -> str:
    """Does the benefit grow with the history? Compared between the first and the last turn, from the data."""
    t = by_turn(req)
    if t.is_empty():
        return ""
    parts = []
    for (regime, conc), g in t.group_by(["regime", "concurrency"], maintain_order=True):
        g = g.sort("turn")
        first, last = g.row(0, named=True), g.row(-1, named=True)
        parts.append(
            f"{regime} at c={conc}: off/on TTFT {fmt_x(first['ttft_speedup'])} at turn {first['turn']} and "
            f"{fmt_x(last['ttft_speedup'])} at turn {last['turn']} (hit rate {fmt_pct(first['hit_rate'])} → "
            f"{fmt_pct(last['hit_rate'])})"
        )
    # Per-turn means come from a few requests each, with no interval: they show the trend, they do not claim one.
    return (
        "; ".join(parts) + ". Per-turn ratios rest on a few requests each and carry no interval, so whether the benefit "
        "grows with the history is shown here, not claimed."
    )


def overflow_table(check: pl.DataFrame, sp: pl.DataFrame) -> str:
    ov = check.filter(pl.col("workload") == "kv_overflow").sort("working_set")
    if ov.is_empty():
        return ""
    rows = []
    for r in ov.iter_rows(named=True):
        s = sp.filter(pl.col("regime") == r["regime"])
        sr = s.row(0, named=True) if s.height else {}
        rows.append(
            {
                "working set / capacity": f"{r['working_set']:g}",
                "hit rate predicted": fmt_pct(r["predicted_hit_rate"]),
                "measured": fmt_pct(r["measured_hit_rate"]),
                "requests exact": f"{r['exact']}/{r['requests']}",
                "TTFT off → on": f"{fmt_s(sr.get('mean_ttft_s_off'))} → {fmt_s(sr.get('mean_ttft_s_on'))}",
                "verdict": judged(sr) if sr else "n/a",
            }
        )
    return markdown_table(pl.DataFrame(rows), list(rows[0]))


def overflow_words(check: pl.DataFrame) -> str:
    ov = check.filter(pl.col("workload") == "kv_overflow").sort("working_set")
    if ov.height < 2:
        return ""
    lo, hi = ov.row(0, named=True), ov.row(-1, named=True)
    text = (
        f"As the working set grew from {lo['working_set']:g}x to {hi['working_set']:g}x the KV capacity, the measured hit "
        f"rate went from {fmt_pct(lo['measured_hit_rate'])} to {fmt_pct(hi['measured_hit_rate'])} (predicted "
        f"{fmt_pct(lo['predicted_hit_rate'])} → {fmt_pct(hi['predicted_hit_rate'])})"
    )
    if hi["measured_hit_rate"] is not None and lo["measured_hit_rate"] and hi["measured_hit_rate"] < lo["measured_hit_rate"]:
        text += (
            ": past the capacity, least-recently-used prefixes are evicted before they come back, so fewer prompt "
            "tokens are served from the cache (what that does to latency is each working set's verdict in the table)"
        )
    return text + "."


def trace_words(check: pl.DataFrame, shapes: dict[str, dict], block_size: int) -> str:
    """The trace replay: predicted vs measured hits, and where the served capacity sits on the trace's curve."""
    tr = check.filter(pl.col("workload") == "trace")
    if tr.is_empty():
        return ""
    r = tr.row(0, named=True)
    shape = shapes[r["regime"]]
    p = shape["params"]
    text = (
        f"{r['regime']}: the replayed window's hit rate was predicted {fmt_pct(r['predicted_hit_rate'])} and measured "
        f"{fmt_pct(r['measured_hit_rate'])} ({r['exact']} of {r['requests']} requests exact; with an unlimited cache "
        f"and one request at a time it would be {fmt_pct(r['expected_hit_rate'])})."
    )
    if r["kv_blocks"] and Path(p["path"]).is_file():
        cap_tokens = int(r["kv_blocks"]) * block_size
        native = cap_tokens // TRACE_BLOCK_TOKENS
        scaled = cap_tokens // p["chunk_tokens"]
        curve = trace_capacity_curve(Path(p["path"]), sorted({*CURVE_CAPACITIES, max(native, 1), max(scaled, 1)}))
        points = ", ".join(f"{c:,} blocks {fmt_pct(v)}" for c, v in curve.items() if c in CURVE_CAPACITIES)
        text += (
            f" The whole trace's capacity curve (block-level LRU, hit rate by cache size in its 512-token blocks): {points}. "
            f"This server's KV cache ({r['kv_blocks']} blocks of {block_size} = {cap_tokens:,} tokens) holds "
            f"{native:,} of the trace's blocks at their real size, where the curve gives {fmt_pct(curve[max(native, 1)])}; "
            f"scaled as replayed ({p['chunk_tokens']} tokens a block) it holds {scaled:,}, where it gives "
            f"{fmt_pct(curve[max(scaled, 1)])}. The scaling keeps which requests share which blocks and their order, "
            "but shrinks every prefix (so prefill savings per hit are smaller than in production), caps prompts to the "
            f"model's context ({int(tr['requests'].sum())} requests; blocks cut where a prompt did not fit), and replaces "
            "output lengths with the fixed benchmark length."
        )
    return text
