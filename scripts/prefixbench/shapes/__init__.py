"""Workload shapes beyond one shared prefix: multi-turn chat, a pool of prefixes with skewed popularity, a
working set swept through the KV capacity, and a replayed production trace; one module per kind (base.ShapeKind
says what a kind owns), found through `KINDS`, the only place that lists them.

Every shape is built from the served model's own token ids: each prompt is tokenized once, its full KV
blocks are hashed as vLLM hashes them (kvcache.block_hashes), and the sharing the shape intends is
verified on those ids (a BPE merge at a join would silently shorten it). Each prompt record carries its
block hashes, so the cache model can predict, request by request, which tokens should hit; and an
`expected_cached_tokens` for one request at a time with an unlimited cache (kvcache.replay), the
ceiling the measured hits are compared with.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..prompts import Tokenizer
from .base import SINGLE_PREFIX, Arrivals, BuildContext, Sessions, Shape, ShapeKind, Traffic
from .common import with_expected
from .kv_overflow import KvOverflow
from .multi_turn import MultiTurn
from .prefix_pool import PrefixPool
from .trace import Trace

# The registry: the schema's `kind` -> what that kind does. A new kind is one module and one entry here.
KINDS: dict[str, ShapeKind] = {k.name: k for k in (MultiTurn(), PrefixPool(), KvOverflow(), Trace())}
SHAPES = tuple(KINDS)

__all__ = [
    "KINDS",
    "SHAPES",
    "SINGLE_PREFIX",
    "Arrivals",
    "BuildContext",
    "Sessions",
    "Shape",
    "ShapeKind",
    "Traffic",
    "build_shape_prompts",
    "kind_of",
]


def kind_of(prompts: Sequence[dict]) -> ShapeKind | None:
    """The shape kind a point's prompts were built by (their `workload`); None for a single shared prefix."""
    return KINDS.get(prompts[0].get("workload", "")) if prompts else None


def build_shape_prompts(
    tok: Tokenizer,
    shape: Shape,
    questions: Sequence[str],
    block_size: int,
    seed: int,
    max_model_len: int,
    max_tokens: int,
    vocab_size: int,
) -> list[dict]:
    """Every prompt record of one shape regime, with its block hashes and its unlimited-cache expectation."""
    if shape.kind not in KINDS:
        raise ValueError(f"unknown workload shape {shape.kind!r}")
    ctx = BuildContext(tok, questions, block_size, seed, max_model_len, max_tokens, vocab_size)
    recs = KINDS[shape.kind].build(shape, ctx)
    too_long = [r for r in recs if r["prompt_len_tokens"] + max_tokens > max_model_len]
    if too_long:
        raise ValueError(
            f"shape {shape.name!r}: {len(too_long)} prompt(s) of up to {max(r['prompt_len_tokens'] for r in too_long)} "
            f"tokens do not fit max_model_len {max_model_len} with {max_tokens} output tokens; shorten the shape"
        )
    return [{**r, "regime": shape.name, "workload": shape.kind} for r in with_expected(recs, block_size, max_tokens)]
