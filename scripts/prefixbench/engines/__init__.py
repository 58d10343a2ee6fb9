"""The engines prefixbench can drive, by the name `targets.*.engine` gives them (see engines/base.py)."""

from __future__ import annotations

from .base import Engine, MetricNames
from .vllm import VLLM

ENGINES: dict[str, Engine] = {"vllm": VLLM()}


def engine_for(name: str) -> Engine:
    """The engine a target names; the schema's enum lists the same names."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"engine {name!r}: not one of {sorted(ENGINES)}") from None


__all__ = ["ENGINES", "Engine", "MetricNames", "engine_for"]
