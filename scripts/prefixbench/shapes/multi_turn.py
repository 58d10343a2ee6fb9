"""Multi-turn chat: S sessions of T turns, each turn's prompt the whole conversation so far, so the history is the
cacheable prefix. Asks whether the benefit grows with the history (TTFT and hit rate by turn)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import OFF
from ..corpus import text_of_at_least
from ..prompts import PrefixMismatch, Tokenizer, exact_prefix
from .base import BuildContext, ReportKit, Sessions, Shape, ShapeEvidence, ShapeKind
from .common import record

if TYPE_CHECKING:
    import polars as pl


def scripted_answer(tok: Tokenizer, seed: str, n_tokens: int) -> str:
    """An assistant turn of about `n_tokens` tokens of corpus text (scripted: identical in both cache settings)."""
    text = text_of_at_least("chat_policy", seed, min_chars=n_tokens * 8)
    ids = tok.encode(text, add_special_tokens=False)[:n_tokens]
    return tok.decode(ids).strip()


def multi_turn(tok: Tokenizer, shape: Shape, questions: Sequence[str], block_size: int, seed: int) -> list[dict]:
    """S sessions of T turns: turn k = system prompt + the k-1 earlier turns (user and scripted assistant) + a new
    question. Sessions are sent interleaved (each worker runs a session's turns in order); turn k's ids must
    extend turn k-1's, or the history would not be a cacheable prefix."""
    p = shape.params
    system, _ = exact_prefix(tok, "chat_policy", f"{seed}:{shape.name}:system", p["system_tokens"], questions)
    rng = random.Random(f"{seed}:{shape.name}")
    records: list[dict] = []
    for s in range(p["sessions"]):
        history = system
        previous: list[int] | None = None
        for turn in range(1, p["turns"] + 1):
            question = questions[rng.randrange(len(questions))]
            prompt = f"{history}\nUser: {question}\nAssistant:"
            ids = tok.encode(prompt, add_special_tokens=True)
            if previous is not None and ids[: len(previous)] != previous:
                raise PrefixMismatch(
                    f"shape {shape.name!r}: session {s} turn {turn} does not start with turn {turn - 1}'s tokens "
                    "(a BPE merge where the history meets the new text)"
                )
            records.append(
                record(
                    ids,
                    prompt,
                    block_size,
                    session=s,
                    turn=turn,
                    question=question,
                    prefix_group=f"session-{s:03d}",
                    prefix_len_tokens=p["system_tokens"],
                    think_time_s=p.get("think_time_s", 0.0),
                )
            )
            answer = scripted_answer(tok, f"{seed}:{shape.name}:{s}:{turn}", p["answer_tokens"])
            history = f"{prompt} {answer}"
            previous = ids
    # Request order: round-robin over sessions (turn 1 of every session, then turn 2, ...), as c workers would.
    records.sort(key=lambda r: (r["turn"], r["session"]))
    return [{**r, "request_index": i} for i, r in enumerate(records)]


def by_turn(req: pl.DataFrame) -> pl.DataFrame:
    """Multi-turn: mean TTFT off and on, and the measured hit rate with the cache on, per turn index."""
    import polars as pl

    mt = req.filter((pl.col("workload") == MultiTurn.name) & (pl.col("status") == "ok"))
    if mt.is_empty():
        return pl.DataFrame()
    agg = mt.group_by(["regime", "concurrency", "turn", "mode"]).agg(
        pl.col("ttft_s").mean().alias("mean_ttft_s"),
        (pl.col("cached_tokens").sum() / pl.col("prompt_tokens").sum()).alias("hit_rate"),
        pl.col("prompt_tokens").mean().alias("mean_prompt_tokens"),
        pl.len().alias("requests"),
    )
    off = agg.filter(pl.col("mode") == OFF).drop("mode", "hit_rate").rename({"mean_ttft_s": "ttft_off_s"})
    on = agg.filter(pl.col("mode") != OFF).drop("mode", "mean_prompt_tokens", "requests").rename({"mean_ttft_s": "ttft_on_s"})
    return (
        off.join(on, on=["regime", "concurrency", "turn"], how="inner")
        .with_columns((pl.col("ttft_off_s") / pl.col("ttft_on_s")).alias("ttft_speedup"))
        .sort(["regime", "concurrency", "turn"])
    )


def turns_table(req: pl.DataFrame, kit: ReportKit) -> str:
    import polars as pl

    t = by_turn(req)
    if t.is_empty():
        return ""
    rows = [
        {
            "shape": r["regime"],
            "c": r["concurrency"],
            "turn": r["turn"],
            "prompt tokens": f"{r['mean_prompt_tokens']:.0f}",
            "hit rate (on)": kit.fmt_pct(r["hit_rate"]),
            "TTFT off": kit.fmt_s(r["ttft_off_s"]),
            "TTFT on": kit.fmt_s(r["ttft_on_s"]),
            "off/on": kit.fmt_x(r["ttft_speedup"]),
        }
        for r in t.iter_rows(named=True)
    ]
    return kit.markdown_table(pl.DataFrame(rows), list(rows[0]))


def turns_words(req: pl.DataFrame, kit: ReportKit) -> str:
    """Does the benefit grow with the history? Compared between the first and the last turn, from the data."""
    t = by_turn(req)
    if t.is_empty():
        return ""
    parts = []
    for (regime, conc), g in t.group_by(["regime", "concurrency"], maintain_order=True):
        g = g.sort("turn")
        first, last = g.row(0, named=True), g.row(-1, named=True)
        parts.append(
            f"{regime} at c={conc}: off/on TTFT {kit.fmt_x(first['ttft_speedup'])} at turn {first['turn']} and "
            f"{kit.fmt_x(last['ttft_speedup'])} at turn {last['turn']} (hit rate {kit.fmt_pct(first['hit_rate'])} → "
            f"{kit.fmt_pct(last['hit_rate'])})"
        )
    # Per-turn means come from a few requests each, with no interval: they show the trend, they do not claim one.
    return (
        "; ".join(parts) + ". Per-turn ratios rest on a few requests each and carry no interval, so whether the benefit "
        "grows with the history is shown here, not claimed."
    )


class MultiTurn(ShapeKind):
    name = "multi_turn"
    record_fields = ("session", "turn")
    table_fields = ("session", "turn")
    sections = ("turns_table", "turns")

    def check(self, shape: Shape, target: Mapping[str, Any], endpoint: bool) -> list[str]:
        return []

    def loads(self, shape: Shape, concurrency: Sequence[int], rates: Sequence[float]) -> list[tuple[int, float]]:
        """Closed loop at every concurrency: c workers, each running one session at a time."""
        return [(c, 0.0) for c in concurrency]

    def build(self, shape: Shape, ctx: BuildContext) -> list[dict]:
        return multi_turn(ctx.tok, shape, ctx.questions, ctx.block_size, ctx.seed)

    def traffic(self, prompts: Sequence[dict], request_rate: float) -> Sessions:
        """Session by session, turns in order; sessions start in the order of their first request."""
        by_session: dict[int, list[tuple[int, Any]]] = {}
        for p in sorted(prompts, key=lambda p: (p["session"], p["turn"])):
            by_session.setdefault(p["session"], []).append((p["request_index"], p["prompt"]))
        order = sorted(by_session, key=lambda s: min(i for i, _ in by_session[s]))
        return Sessions([by_session[s] for s in order], float(prompts[0].get("think_time_s", 0.0)))

    def describe(self, params: Mapping[str, Any], kv_blocks: int | None) -> str:
        p = params
        return (
            f"{p['sessions']} sessions x {p['turns']} turns, {p['system_tokens']}-token system prompt, "
            f"{p['answer_tokens']}-token scripted answers"
        )

    def findings(self, ev: ShapeEvidence, kit: ReportKit) -> dict[str, str]:
        """TTFT and hit rate by turn: does the benefit grow with the history?"""
        has = ev.requests.height > 0
        return {
            "turns_table": turns_table(ev.requests, kit) if has else "",
            "turns": turns_words(ev.requests, kit) if has else "",
        }
