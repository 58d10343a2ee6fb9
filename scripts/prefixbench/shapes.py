"""Workload shapes beyond one shared prefix: multi-turn chat, a pool of prefixes with skewed popularity, a
working set swept through the KV capacity, and a replayed production trace.

Every shape is built from the served model's own token ids: each prompt is tokenized once, its full KV
blocks are hashed as vLLM hashes them (kvcache.block_hashes), and the sharing the shape intends is
verified on those ids (a BPE merge at a join would silently shorten it). Each prompt record carries its
block hashes, so the cache model can predict, request by request, which tokens should hit; and an
`expected_cached_tokens` for one request at a time with an unlimited cache (kvcache.replay), the
ceiling the measured hits are compared with.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import text_of_at_least
from .kvcache import Request, block_hashes, replay
from .prompts import PrefixMismatch, Tokenizer, exact_prefix, format_prompt, survives_every_question

SINGLE_PREFIX = ("chat_policy", "rag_document")  # the one-shared-prefix workloads (prompts.py)
SHAPES = ("multi_turn", "prefix_pool", "kv_overflow", "trace")
UNLIMITED_BLOCKS = 1 << 20


@dataclass(frozen=True)
class Shape:
    """One shape regime, as the config gives it (`params` holds the kind's own keys)."""

    name: str
    kind: str
    params: dict = field(default_factory=dict)


def _record(tok_ids: list[int], prompt: str | list[int], block_size: int, **fields) -> dict:
    return {
        "prompt": prompt,
        "prompt_len_tokens": len(tok_ids),
        "block_hashes": block_hashes(tok_ids, block_size),
        "reuse_pct": 100,
        **fields,
    }


def with_expected(records: list[dict], block_size: int, max_tokens: int) -> list[dict]:
    """`expected_cached_tokens`: one request at a time in `request_index` order, with an unlimited cache."""
    reqs = [
        Request(r["request_index"], tuple(r["block_hashes"]), r["prompt_len_tokens"], max_tokens, 2.0 * i, 2.0 * i + 1)
        for i, r in enumerate(records)
    ]
    hits = replay(reqs, UNLIMITED_BLOCKS, block_size)
    return [{**r, "expected_cached_tokens": hits[r["request_index"]]} for r in records]


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
                _record(
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
            _record(
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


def overflow_documents(capacity_blocks: int, block_size: int, doc_tokens: int, ratio: float) -> int:
    """Documents whose distinct prefix tokens are `ratio` x the usable KV capacity (vLLM keeps one null block)."""
    return max(1, round(ratio * (capacity_blocks - 1) * block_size / doc_tokens))


def kv_overflow(tok: Tokenizer, shape: Shape, questions: Sequence[str], block_size: int, seed: int) -> list[dict]:
    """A pool drawn uniformly whose working set is `working_set` x the KV capacity (set small on purpose)."""
    p = shape.params
    docs = overflow_documents(p["capacity_blocks"], block_size, p["doc_tokens"], p["working_set"])
    pool = Shape(shape.name, "prefix_pool", {"doc_tokens": p["doc_tokens"], "documents": docs, "requests": p["requests"]})
    return [
        {**r, "working_set": p["working_set"], "documents": docs} for r in prefix_pool(tok, pool, questions, block_size, seed)
    ]


def load_trace(path: Path, start: int, count: int) -> list[dict]:
    """`count` requests of a Mooncake-format trace (timestamp ms, input/output lengths, 512-token hash_ids) from `start`."""
    out = []
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as fh:
        for n, line in enumerate(fh):
            if n >= start + count:
                break
            if n >= start:
                out.append(json.loads(line))
    if len(out) < count:
        raise ValueError(f"{path}: only {len(out)} requests from line {start}, {count} asked")
    return out


def trace_chunk(hash_id: int, n_tokens: int, vocab: tuple[int, int]) -> list[int]:
    """The deterministic token ids standing for one trace block (the same id always gives the same tokens)."""
    rng = random.Random(f"trace-block:{hash_id}")
    return [rng.randrange(*vocab) for _ in range(n_tokens)]


def trace_replay(shape: Shape, block_size: int, max_model_len: int, max_tokens: int, vocab_size: int) -> list[dict]:
    """A window of a production trace with its sharing intact: each 512-token hash id becomes `chunk_tokens` token
    ids (a whole number of KV blocks, so equal ids mean equal cached blocks), plus one unique last token; arrival
    times are kept in pattern and scaled to a mean of `rate` requests/s; prompts are capped to fit the context."""
    p = shape.params
    chunk = p["chunk_tokens"]
    if chunk % block_size:
        raise ValueError(f"trace chunk_tokens ({chunk}) must be a multiple of the KV block size ({block_size})")
    rows = load_trace(Path(p["path"]), p.get("start", 0), p["requests"])
    max_chunks = max(1, (max_model_len - max_tokens - 1) // chunk)
    if p.get("max_chunks"):
        max_chunks = min(max_chunks, p["max_chunks"])
    vocab = (1000, max(1001, vocab_size - 1000))
    t0, t1 = rows[0]["timestamp"], rows[-1]["timestamp"]
    span = max(t1 - t0, 1) / 1000
    scale = (len(rows) / p["rate"]) / span if len(rows) > 1 else 1.0
    records = []
    for i, row in enumerate(rows):
        ids_used = row["hash_ids"][:max_chunks]
        ids = [t for h in ids_used for t in trace_chunk(h, chunk, vocab)]
        ids.append(vocab[0] - 1 - (i % 500))  # a last token of its own: the recomputed one never decides a hit
        records.append(
            _record(
                ids,
                ids,
                block_size,
                request_index=i,
                arrival_s=(row["timestamp"] - t0) / 1000 * scale,
                trace_hash_ids=ids_used,
                trace_blocks_cut=len(row["hash_ids"]) - len(ids_used),
                prefix_group=f"trace-{ids_used[0]}",
                prefix_len_tokens=0,
                question="",
            )
        )
    return records


def trace_capacity_curve(path: Path, capacities: Sequence[int], limit: int | None = None) -> dict[int, float]:
    """Prefix hit rate of a block-level LRU over the whole trace (in its own 512-token blocks), per capacity: leading
    blocks found in cache count as hits, then every block of the request is touched (most recent last)."""
    from collections import OrderedDict

    rows = load_trace(path, 0, limit) if limit else _all_rows(path)
    out = {}
    for cap in capacities:
        lru: OrderedDict[int, None] = OrderedDict()
        hit = total = 0
        for row in rows:
            ids = row["hash_ids"]
            n = 0
            for h in ids:
                if h not in lru:
                    break
                n += 1
            hit, total = hit + n, total + len(ids)
            for h in ids:
                lru[h] = None
                lru.move_to_end(h)
            while len(lru) > cap:
                lru.popitem(last=False)
        out[cap] = hit / total if total else 0.0
    return out


def _all_rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
    if shape.kind == "multi_turn":
        recs = multi_turn(tok, shape, questions, block_size, seed)
    elif shape.kind == "prefix_pool":
        recs = prefix_pool(tok, shape, questions, block_size, seed)
    elif shape.kind == "kv_overflow":
        recs = kv_overflow(tok, shape, questions, block_size, seed)
    elif shape.kind == "trace":
        recs = trace_replay(shape, block_size, max_model_len, max_tokens, vocab_size)
    else:
        raise ValueError(f"unknown workload shape {shape.kind!r}")
    too_long = [r for r in recs if r["prompt_len_tokens"] + max_tokens > max_model_len]
    if too_long:
        raise ValueError(
            f"shape {shape.name!r}: {len(too_long)} prompt(s) of up to {max(r['prompt_len_tokens'] for r in too_long)} "
            f"tokens do not fit max_model_len {max_model_len} with {max_tokens} output tokens; shorten the shape"
        )
    return [{**r, "regime": shape.name, "workload": shape.kind} for r in with_expected(recs, block_size, max_tokens)]
