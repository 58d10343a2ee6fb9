"""The engines prefixbench can drive, by the name `targets.*.engine` gives them (see engines/base.py)."""

from __future__ import annotations

from typing import cast

from .base import Engine, MetricNames
from .vllm import VLLM

# cast: VLLM is a frozen dataclass, so mypy sees its fields as read-only where the Protocol's plain attributes ask for
# settable ones; the pipeline only reads them (tests/test_engines.py checks VLLM has every member of the Protocol).
ENGINES: dict[str, Engine] = {"vllm": cast(Engine, VLLM())}


def engine_for(name: str) -> Engine:
    """The engine a target names; the schema's enum lists the same names."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"engine {name!r}: not one of {sorted(ENGINES)}") from None


__all__ = ["ENGINES", "Engine", "MetricNames", "engine_for"]
