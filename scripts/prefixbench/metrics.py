"""An engine's Prometheus `/metrics`: parse with prometheus_client, take deltas around a measurement point.

Which samples matter is the engine's business (engines.MetricNames); this module knows only the format."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from .engines.base import MetricNames


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name -> value, summed over label sets (one server, one model)."""
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                continue
            out[sample.name] += float(sample.value)
    return dict(out)


def sum_metrics(pages: list[dict[str, float]]) -> dict[str, float]:
    """Several servers' samples as one target's: counters, histogram sums/counts and running/waiting gauges add up."""
    out: dict[str, float] = defaultdict(float)
    for page in pages:
        for name, value in page.items():
            out[name] += value
    return dict(out)


def counter_delta(before: dict[str, float], after: dict[str, float], names: MetricNames) -> dict[str, float]:
    """Deltas of the counters and histogram sums/counts that matter for one point."""
    return {n: after.get(n, 0.0) - before.get(n, 0.0) for n in names.counters if n in after or n in before}


def hit_rate(delta: dict[str, float], names: MetricNames) -> float | None:
    q = delta.get(names.prefix_queries, 0.0)
    return delta.get(names.prefix_hits, 0.0) / q if q > 0 else None
