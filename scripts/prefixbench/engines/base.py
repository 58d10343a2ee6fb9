"""What the pipeline needs from an inference engine, in one place: how to start its server, what its cache flags
and metrics are called, where its cache reset and version live, and how a response says what it found cached.

A second engine is one module beside `vllm.py` that satisfies `Engine`, one line in `ENGINES` and one value in the
schema's `targets.*.engine` enum; nothing else names an engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..settings import ServerSpec


@dataclass(frozen=True)
class MetricNames:
    """The Prometheus sample names an engine exports, by what they mean to prefixbench (histograms without the
    `_sum`/`_count` suffix)."""

    prefix_queries: str  # counter: prompt tokens looked up in the prefix cache
    prefix_hits: str  # counter: of those, tokens found cached
    kv_usage: str  # gauge 0-1: share of the KV pool in use
    running: str  # gauge: requests running
    waiting: str  # gauge: requests waiting
    ttft: str  # histogram: server-side time to first token
    e2e: str  # histogram: server-side request latency
    queue: str  # histogram: time waiting in the queue, per request
    prefill: str  # histogram: time in prefill, per request
    decode: str  # histogram: time in decode, per request
    step_tokens: str  # histogram: engine steps (count) and the tokens each scheduled (sum)
    preemptions: str  # counter
    cache_config: str  # info metric whose labels state the KV capacity

    @property
    def histograms(self) -> tuple[str, str]:
        """Server-side TTFT and E2E: the client's timings are cross-checked against them."""
        return (self.ttft, self.e2e)

    @property
    def engine_histograms(self) -> tuple[str, ...]:
        """The engine's own view of a point (where the time went inside it)."""
        return (self.queue, self.prefill, self.decode, self.step_tokens)

    @property
    def counters(self) -> tuple[str, ...]:
        """Every sample whose change around a point is kept: counters, and histogram sums and counts."""
        names = [self.prefix_queries, self.prefix_hits, self.preemptions]
        for h in self.histograms + self.engine_histograms:
            names += [f"{h}_sum", f"{h}_count"]
        return tuple(names)


class Engine(Protocol):
    """One inference engine as the pipeline sees it (see engines/vllm.py for the one that exists)."""

    name: str  # the schema's targets.*.engine value
    label: str  # how prose names it ("vLLM")
    metrics: MetricNames
    cache_flags: Mapping[str, str]  # cache setting (no_prefix_cache, with_prefix_cache) -> its server flag
    capacity_flag: str  # the flag that sets the KV pool's size in blocks
    api_key_var: str  # the environment variable the server reads its API key from
    health_path: str  # answers 200 once the server is ready
    cache_reset_path: str  # POST: forget every cached prefix (the server must be idle)
    version_path: str  # GET: {"version": ...}
    cache_salt_field: str  # request field: a salt keys a request's cached blocks, so a fresh one hits nothing

    def server_argv(self, spec: ServerSpec, mode: str, port: str) -> list[str]:
        """The server's command line for one cache setting."""
        ...

    def model_args(self, source: str, tokenizer: str | None, given: Sequence[str]) -> list[str]:
        """Server arguments for a model of `source` (a dummy: random weights) and a separate tokenizer, beyond `given`."""
        ...

    def server_env(self, spec: ServerSpec) -> dict[str, str]:
        """Environment overrides of the server process."""
        ...

    def capacity_args(self, blocks: int) -> tuple[str, ...]:
        """Server arguments that size the KV pool to `blocks` blocks."""
        ...

    def parse_metrics(self, text: str) -> dict[str, float]:
        """Sample name -> value of a `/metrics` page."""
        ...

    def kv_blocks(self, text: str) -> int | None:
        """The KV capacity in blocks that a `/metrics` page states (None when it does not)."""
        ...

    def cached_tokens(self, usage: dict) -> int | None:
        """Prompt tokens a response's usage says were served from the cache (None when it does not say)."""
        ...

    def version_of(self, python: str) -> str:
        """The engine's version installed in the environment of `python` ("unknown" when it cannot tell)."""
        ...
