"""Inside the engine at the highest concurrency: why a cache effect is as large (or small) as it is.

From vLLM's own histograms, as deltas around each point and summed over its lifetimes (aggregate.ENGINE_METRICS):
per request the time queued, in prefill and in decode; per engine step the tokens it scheduled; and the wall time
per step (the point's wall time over its steps: at full load the engine is never idle). Every sentence is a
comparison of those numbers; nothing is typed in by hand.
"""

from __future__ import annotations

import polars as pl

from . import OFF, ON
from .aggregate import closed_loop
from .formatting import markdown_table
from .scalars import whole

COLUMNS = ("tokens_per_step", "step_s", "server_mean_queue_s", "server_mean_prefill_s", "server_mean_decode_s")


def engine_rows(summary: pl.DataFrame) -> pl.DataFrame:
    """The closed-loop points at the highest concurrency that have the engine's histograms."""
    if "tokens_per_step" not in summary.columns or summary["tokens_per_step"].is_null().all():
        return summary.clear()
    closed = closed_loop(summary)
    if closed.is_empty():
        return closed
    top = closed["concurrency"].max()
    return closed.filter((pl.col("concurrency") == top) & pl.col("tokens_per_step").is_not_null())


def _lifetimes(row: dict) -> int:
    return row.get("instances") or 1


def _ms(x: float | None) -> str:
    return "" if x is None else f"{x * 1e3:.1f}"


def engine_table(rows: pl.DataFrame) -> str:
    out = []
    for r in rows.sort(["prefix_len_tokens", "reuse_pct", "mode"], descending=[False, True, False]).iter_rows(named=True):
        spread = f" ({_ms(r['step_s_min'])}–{_ms(r['step_s_max'])})" if _lifetimes(r) > 1 else ""
        out.append(
            {
                "regime": r["regime"],
                "reuse": f"{r['reuse_pct']}%",
                "mode": r["mode"],
                "engine steps": int(r["server_steps_count"]),
                "tokens / step": f"{r['tokens_per_step']:.0f}",
                "ms / step (lifetimes)": _ms(r["step_s"]) + spread,
                "queue ms": _ms(r["server_mean_queue_s"]),
                "prefill ms": _ms(r["server_mean_prefill_s"]),
                "decode ms": _ms(r["server_mean_decode_s"]),
                "server TTFT ms": _ms(r.get("server_mean_ttft_s")),
                "preemptions": int(r["server_preemptions"] or 0),
            }
        )
    return markdown_table(pl.DataFrame(out), list(out[0])) if out else ""


def engine_words(rows: pl.DataFrame) -> list[str]:
    """Per regime at its highest reuse: what the cache changed inside the engine, and what that explains."""
    words = []
    for regime in rows.sort("prefix_len_tokens")["regime"].unique(maintain_order=True):
        grp = rows.filter(pl.col("regime") == regime)
        reuse = whole(grp["reuse_pct"].max())
        pair = {r["mode"]: r for r in grp.filter(pl.col("reuse_pct") == reuse).iter_rows(named=True)}
        if OFF not in pair or ON not in pair or any(pair[m][c] is None for m in (OFF, ON) for c in COLUMNS):
            continue
        off, on = pair[OFF], pair[ON]
        tok_x = off["tokens_per_step"] / on["tokens_per_step"] if on["tokens_per_step"] else None
        step_x = off["step_s"] / on["step_s"] if on["step_s"] else None
        text = (
            f"{regime} at {reuse}% reuse, c={off['concurrency']}: with the cache on an engine step scheduled "
            f"{on['tokens_per_step']:.0f} tokens instead of {off['tokens_per_step']:.0f}"
        )
        if tok_x and tok_x > 1:
            text += f" ({tok_x:.1f}× fewer: the cached prefix was not prefilled again)"
        text += f", and took {_ms(on['step_s'])} ms instead of {_ms(off['step_s'])} ms"
        if tok_x and step_x and tok_x >= 3 and step_x < 1.5:
            text += (
                f". Removing {1 - 1 / tok_x:.0%} of the tokens removed {1 - 1 / step_x:.0%} of the step time: most of a "
                "step's cost here does not grow with the tokens it schedules (kernel launches, scheduling, sampling), "
                "so the cache has little compute to take away"
            )
        elif step_x and step_x >= 1.5:
            text += f" ({step_x:.1f}× shorter): prefill compute was a large part of every step, and the cache removed it"
        text += (
            f". Per request, queueing went {_ms(off['server_mean_queue_s'])} → {_ms(on['server_mean_queue_s'])} ms and "
            f"prefill {_ms(off['server_mean_prefill_s'])} → {_ms(on['server_mean_prefill_s'])} ms"
        )
        if off.get("server_mean_ttft_s") is not None and on.get("server_mean_ttft_s") is not None:
            text += f"; the server's own mean TTFT went {_ms(off['server_mean_ttft_s'])} → {_ms(on['server_mean_ttft_s'])} ms"
        preempt = int((off["server_preemptions"] or 0) + (on["server_preemptions"] or 0))
        if preempt:
            text += f"; {preempt} preemptions (KV cache full)"
        text += "."
        spreads = [
            (m, r["step_s_min"], r["step_s_max"])
            for m, r in pair.items()
            if _lifetimes(r) > 1 and r["step_s_min"] and r["step_s_max"]
        ]
        widest = max((hi / lo for _, lo, hi in spreads), default=1.0)
        if widest > 1.1:
            parts = ", ".join(f"{'off' if m == OFF else 'on'} {_ms(lo)}–{_ms(hi)} ms" for m, lo, hi in spreads)
            text += (
                f" Between server lifetimes of one setting the time per step differed by up to {widest - 1:.0%} ({parts}):"
                " lifetime-to-lifetime noise of this size is what the A/A floor's lifetime controls measure, and what"
                " a cache effect must clear."
            )
        words.append(text)
    return words
