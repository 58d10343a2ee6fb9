"""The X-Session-ID a request carries behind a router: vllm-router's consistent_hash keys on it (without it, on the
unique X-Request-Id, which scatters a session), and the policy simulator keys on the same value. One definition for
the measuring code and the simulator, in a module of its own so that editing the simulator reruns no measurement."""

from __future__ import annotations

from collections.abc import Sequence


def trace_session_key(hash_ids: Sequence[object]) -> str:
    """The X-Session-ID standing for a trace request's conversation: its first two block ids. Every request of the
    Mooncake conversation trace starts with the same block 0 (a shared system prompt), so keying on the first block
    alone sends the whole trace to one replica; the second block is the conversation's own root (7,373 groups of up to
    43 requests, whose later turns extend the earlier ones)."""
    return "trace-" + "-".join(str(h) for h in hash_ids[:2])


def session_key(prompt: dict) -> str:
    """A prompt's X-Session-ID: a trace request's conversation (trace_session_key), else its prefix group (a
    multi-turn session, a pool's document, a regime's shared prefix or a unique one), else its first KV block's hash,
    else the request itself."""
    if prompt.get("trace_hash_ids"):
        return trace_session_key(prompt["trace_hash_ids"])
    if prompt.get("prefix_group"):
        return str(prompt["prefix_group"])
    if prompt.get("block_hashes"):
        return f"block-{prompt['block_hashes'][0]}"
    return f"request-{prompt['request_index']}"
