"""An engine's Prometheus `/metrics`: parse with prometheus_client, take deltas around a measurement point.

Which samples matter is the engine's business: each engine fills a MetricNames with its own names; this module
knows only the format."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


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
    # A second KV tier (vLLM's CPU offload); "" where the engine exports no such sample.
    external_prefix_queries: str = ""  # counter: tokens looked up in the second tier after the GPU hit
    external_prefix_hits: str = ""  # counter: of those, tokens found there
    offload_load_bytes: str = ""  # counter: bytes loaded back from the second tier
    offload_load_time: str = ""  # counter: seconds spent loading them
    offload_store_bytes: str = ""  # counter: bytes stored to the second tier
    offload_store_time: str = ""  # counter: seconds spent storing them

    @property
    def tier_counters(self) -> tuple[str, ...]:
        """The second tier's counters this engine names."""
        names = (self.external_prefix_queries, self.external_prefix_hits, self.offload_load_bytes,
                 self.offload_load_time, self.offload_store_bytes, self.offload_store_time)  # fmt: skip
        return tuple(n for n in names if n)

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
        return (*names, *self.tier_counters)


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name -> value, summed over label sets (one server, one model)."""
    from prometheus_client.parser import text_string_to_metric_families  # here: the workflow imports no parser

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
