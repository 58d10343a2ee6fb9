"""What the pipeline needs from an inference engine, in one place: how to start its server, what its cache flags
and metrics are called, where its cache reset and version live, and how a response says what it found cached.

A second engine is one module beside `vllm.py` that satisfies `Engine`, one line in `ENGINES` and one value in the
schema's `targets.*.engine` enum; nothing else names an engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ..metrics import MetricNames
from ..settings import ServerSpec


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
    cache_reset_params: Mapping[str, str]  # its query parameters (vLLM: the CPU offload tier too)
    version_path: str  # GET: {"version": ...}
    cache_salt_field: str  # request field: a salt keys a request's cached blocks, so a fresh one hits nothing
    gpu_memory_flag: str  # the flag that sets the fraction of GPU memory a server takes
    gpu_memory_default: float  # the engine's own default for it (replicas sharing a GPU split this)
    cpu_bind_var: str  # the environment variable that binds a CPU server's threads to cores (each replica its own)

    def server_argv(self, spec: ServerSpec, mode: str, port: str) -> list[str]:
        """The server's command line for one cache setting."""
        ...

    def replica_args(self, spec: ServerSpec) -> list[str]:
        """Server arguments a replica behind a router needs (request log, tokenizing endpoint, memory share), and the
        KV offload tier's, as the spec asks."""
        ...

    def logged_request_id(self, line: bytes) -> str | None:
        """The client's request id a line of the server's log names as received, or None (replicas.attribute)."""
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

    def cache_reset_ok(self, status: int, body: str) -> bool:
        """Whether a cache reset's answer (HTTP status and body) says it happened."""
        ...

    def cached_tokens(self, usage: dict) -> int | None:
        """Prompt tokens a response's usage says were served from the cache (None when it does not say)."""
        ...

    def version_of(self, python: str) -> str:
        """The engine's version installed in the environment of `python` ("unknown" when it cannot tell)."""
        ...
