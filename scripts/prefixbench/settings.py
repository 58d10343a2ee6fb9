"""Benchmark settings as plain types, with no runtime imports: the config, the rules and every step share them."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchSettings:
    max_tokens: int = 32
    request_timeout_s: float = 300.0
    stall_timeout_s: float = 120.0
    warmup_requests: int = 2
    reset_cache: bool = True
    sample_interval_s: float = 1.0
    max_failed_fraction: float = 0.5
    repeats: int = 1
    burstiness: float = 1.0
    seed: int = 0
    api_key_env: str | None = None  # name of the environment variable holding the API key, never the key


def api_key(settings: BenchSettings) -> str | None:
    """The API key, read from the environment at the moment it is needed; it goes nowhere but a header."""
    return os.environ.get(settings.api_key_env) if settings.api_key_env else None
