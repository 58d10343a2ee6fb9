"""A pool of prefixes: P documents (tenants' prompts, RAG documents) drawn with Zipf popularity, optionally behind
one system prompt all share (a two-level prefix). Asks how skew and pool size change the hit rate."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..corpus import text_of_at_least
from ..prompts import PrefixMismatch, Tokenizer, exact_prefix, format_prompt, survives_every_question
from .base import BuildContext, ReportKit, Shape, ShapeEvidence, ShapeKind
from .common import record


def zipf_draws(n: int, pool: int, alpha: float, rng: random.Random) -> list[int]:
    """`n` draws from ranks 0..pool-1 with P(rank k) proportional to 1 / (k + 1) ** alpha (alpha 0: uniform)."""
    weights = [1.0 / (k + 1) ** alpha for k in range(pool)]
    return rng.choices(range(pool), weights=weights, k=n)


def exact_extension(
    tok: Tokenizer, base: str, base_ids: list[int], workload: str, seed: str, n_tokens: int, questions: Sequence[str]
) -> tuple[str, list[int]]:
    """Text to put after `base` so that base + text is exactly len(base_ids) + n_tokens ids, starting with base_ids,
    and stays so in front of every question."""
    for attempt in range(64):
        body = text_of_at_least(workload, f"{seed}:{attempt}", min_chars=n_tokens * 8)
        candidate_ids = tok.encode(f"{base}\n\n{body}", add_special_tokens=True)
        if candidate_ids[: len(base_ids)] != base_ids or len(candidate_ids) < len(base_ids) + n_tokens:
            continue
        want = candidate_ids[: len(base_ids) + n_tokens]
        text = tok.decode(want[len(base_ids) :])
        full = f"{base}{text}" if text.startswith("\n") else None
        if full is None or full != full.rstrip() or tok.encode(full, add_special_tokens=True) != want:
            continue
        if survives_every_question(tok, full, want, questions):
            return full, want
    raise PrefixMismatch(f"could not build a {n_tokens}-token {workload} extension that survives re-tokenization")


def prefix_pool(tok: Tokenizer, shape: Shape, questions: Sequence[str], block_size: int, seed: int) -> list[dict]:
    """P documents (or tenants' prompts) drawn with Zipf(alpha) popularity, optionally behind one system prompt
    shared by all (a two-level prefix: a cold document still hits the system prompt)."""
    p = shape.params
    sys_tokens, doc_tokens = p.get("system_tokens", 0), p["doc_tokens"]
    if sys_tokens:
        base, base_ids = exact_prefix(tok, "chat_policy", f"{seed}:{shape.name}:system", sys_tokens, questions)
    else:
        base, base_ids = "", []
    docs = []
    for d in range(p["documents"]):
        if sys_tokens:
            docs.append(
                exact_extension(tok, base, base_ids, "rag_document", f"{seed}:{shape.name}:doc{d}", doc_tokens, questions)
            )
        else:
            docs.append(exact_prefix(tok, "rag_document", f"{seed}:{shape.name}:doc{d}", doc_tokens, questions))
    rng = random.Random(f"{seed}:{shape.name}:draws")
    records = []
    for i, d in enumerate(zipf_draws(p["requests"], p["documents"], p.get("zipf_alpha", 0.0), rng)):
        question = questions[rng.randrange(len(questions))]
        text, doc_ids = docs[d]
        prompt = format_prompt(text, question)
        ids = tok.encode(prompt, add_special_tokens=True)
        if ids[: len(doc_ids)] != doc_ids:
            raise PrefixMismatch(f"shape {shape.name!r}: request {i} does not start with document {d}'s tokens")
        records.append(
            record(
                ids,
                prompt,
                block_size,
                request_index=i,
                document=d,
                question=question,
                prefix_group=f"doc-{d:03d}",
                prefix_len_tokens=len(doc_ids),
            )
        )
    return records


class PrefixPool(ShapeKind):
    name = "prefix_pool"
    record_fields = ("document",)
    table_fields = ("document",)

    def check(self, shape: Shape, target: Mapping[str, Any], endpoint: bool) -> list[str]:
        return []

    def loads(self, shape: Shape, concurrency: Sequence[int], rates: Sequence[float]) -> list[tuple[int, float]]:
        """Closed loop at every concurrency."""
        return [(c, 0.0) for c in concurrency]

    def build(self, shape: Shape, ctx: BuildContext) -> list[dict]:
        return prefix_pool(ctx.tok, shape, ctx.questions, ctx.block_size, ctx.seed)

    def traffic(self, prompts: Sequence[dict], request_rate: float) -> None:
        """The point's own closed loop, in the drawn order."""
        return None

    def describe(self, params: Mapping[str, Any], kv_blocks: int | None) -> str:
        p = params
        two = f" behind a shared {p['system_tokens']}-token system prompt" if p.get("system_tokens") else ""
        return f"{p['requests']} requests over {p['documents']} documents of {p['doc_tokens']} tokens{two}, Zipf alpha {p['zipf_alpha']:g}"

    def findings(self, ev: ShapeEvidence, kit: ReportKit) -> dict[str, str]:
        """None of its own: the shapes table and the cache model's check say what a pool found."""
        return {}
