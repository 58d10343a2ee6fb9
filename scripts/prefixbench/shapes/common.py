"""What every kind's prompt builder shares: a prompt record with its KV block hashes, and the unlimited-cache
expectation each record carries."""

from __future__ import annotations

from ..kvcache import Request, block_hashes, replay

UNLIMITED_BLOCKS = 1 << 20


def record(tok_ids: list[int], prompt: str | list[int], block_size: int, **fields) -> dict:
    """A prompt record: its text (or token ids), length, the hashes of its full KV blocks, and the kind's fields."""
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
