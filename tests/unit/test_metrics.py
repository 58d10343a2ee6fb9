"""vLLM's `/metrics` text: the counters and histograms a point's deltas are taken from."""

from __future__ import annotations

from prefixbench import metrics as m
from prefixbench.engines import engine_for

N = engine_for("vllm").metrics

BEFORE = """# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100.0
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 400.0
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{engine="0",model_name="m"} 0.0
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_bucket{engine="0",le="1.0",model_name="m"} 3.0
vllm:iteration_tokens_total_bucket{engine="0",le="+Inf",model_name="m"} 10.0
vllm:iteration_tokens_total_count{engine="0",model_name="m"} 10.0
vllm:iteration_tokens_total_sum{engine="0",model_name="m"} 2000.0
# TYPE vllm:request_queue_time_seconds histogram
vllm:request_queue_time_seconds_bucket{engine="0",le="+Inf",model_name="m"} 4.0
vllm:request_queue_time_seconds_count{engine="0",model_name="m"} 4.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="m"} 0.5
"""


def test_engine_histograms_and_preemptions_are_in_the_deltas():
    after_text = (
        BEFORE.replace('hits_total{engine="0",model_name="m"} 100.0', 'hits_total{engine="0",model_name="m"} 356.0')
        .replace(
            'iteration_tokens_total_count{engine="0",model_name="m"} 10.0',
            'iteration_tokens_total_count{engine="0",model_name="m"} 40.0',
        )
        .replace(
            'iteration_tokens_total_sum{engine="0",model_name="m"} 2000.0',
            'iteration_tokens_total_sum{engine="0",model_name="m"} 5000.0',
        )
        .replace(
            'queue_time_seconds_count{engine="0",model_name="m"} 4.0', 'queue_time_seconds_count{engine="0",model_name="m"} 12.0'
        )
        .replace('queue_time_seconds_sum{engine="0",model_name="m"} 0.5', 'queue_time_seconds_sum{engine="0",model_name="m"} 2.5')
        .replace('preemptions_total{engine="0",model_name="m"} 0.0', 'preemptions_total{engine="0",model_name="m"} 2.0')
    )
    delta = m.counter_delta(m.parse_metrics(BEFORE), m.parse_metrics(after_text), N)
    assert delta[N.prefix_hits] == 256.0
    assert delta[f"{N.step_tokens}_count"] == 30.0  # engine steps during the point
    assert delta[f"{N.step_tokens}_sum"] == 3000.0  # tokens they scheduled
    assert delta[f"{N.queue}_count"] == 8.0 and delta[f"{N.queue}_sum"] == 2.0
    assert delta[N.preemptions] == 2.0
    assert f"{N.prefill}_sum" not in delta  # a histogram the server did not export is left out, not zero


def test_several_servers_add_up():
    page = m.parse_metrics(BEFORE)
    both = m.sum_metrics([page, page])
    assert both[N.prefix_hits] == 200.0 and both[N.prefix_queries] == 800.0
