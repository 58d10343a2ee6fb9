"""vLLM's Prometheus `/metrics`: parse with prometheus_client, take deltas around a measurement point."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
KV_USAGE = "vllm:kv_cache_usage_perc"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
HISTOGRAMS = ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds")
# The engine's own view of a point, where the server exports it: time waiting in the queue, in prefill and in
# decode per request, and the engine steps with the tokens each scheduled (count = steps, sum = tokens).
QUEUE = "vllm:request_queue_time_seconds"
PREFILL = "vllm:request_prefill_time_seconds"
DECODE = "vllm:request_decode_time_seconds"
STEP_TOKENS = "vllm:iteration_tokens_total"
PREEMPTIONS = "vllm:num_preemptions_total"
ENGINE_HISTOGRAMS = (QUEUE, PREFILL, DECODE, STEP_TOKENS)


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name -> value, summed over label sets (one server, one model)."""
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                continue
            out[sample.name] += float(sample.value)
    return dict(out)


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Deltas of the counters and histogram sums/counts that matter for one point."""
    names = [PREFIX_QUERIES, PREFIX_HITS, PREEMPTIONS]
    for h in HISTOGRAMS + ENGINE_HISTOGRAMS:
        names += [f"{h}_sum", f"{h}_count"]
    return {n: after.get(n, 0.0) - before.get(n, 0.0) for n in names if n in after or n in before}


def hit_rate(delta: dict[str, float]) -> float | None:
    q = delta.get(PREFIX_QUERIES, 0.0)
    return delta.get(PREFIX_HITS, 0.0) / q if q > 0 else None


def kv_cache_blocks(text: str) -> int | None:
    """The server's KV capacity in blocks, from `vllm:cache_config_info{num_gpu_blocks=...}` (None if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("vllm:cache_config_info") and sample.labels.get("num_gpu_blocks", "").isdigit():
                return int(sample.labels["num_gpu_blocks"])
    return None
