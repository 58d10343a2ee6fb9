"""What a replicated target measured, as the workflow needs it when it is parsed: its routing policies, replica count,
the simulator's policy parameters and the trace the curve is drawn for. Kept apart from replicas_analysis (polars) so
that Snakemake parses the workflow on a machine with only the measuring dependencies (the registry-less GPU host)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RouterRun:
    """What a replicated target measured: its policies (the first carries the run), how many replicas, the policy
    parameters the router ran with (the simulator's too), and the trace the curve is drawn for."""

    policies: tuple[str, ...]
    replicas: int
    params: Mapping[str, Any]
    trace_path: Path | None = None

    @property
    def primary(self) -> str:
        return self.policies[0]


SIM_PARAMS = ("cache_threshold", "balance_abs_threshold", "balance_rel_threshold")


# The production trace the simulator's curve is drawn for: the Mooncake conversation trace vendored with the code.
TRACE = Path(__file__).resolve().parents[2] / "resources" / "traces" / "mooncake" / "conversation_trace.jsonl.gz"


def router_run(target: Mapping[str, Any], trace_path: Path | None = TRACE) -> RouterRun | None:
    """The target's router with every default from the schema (config.router_spec), or None for one server."""
    from .config import replica_count, router_spec

    spec = router_spec(dict(target))
    if spec is None:
        return None
    params = {k: getattr(spec, k) for k in SIM_PARAMS}
    return RouterRun(spec.policies, replica_count(dict(target)), params, trace_path)
