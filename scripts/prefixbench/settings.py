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
