"""Synthetic per-request records and point metadata, shaped like the measure step's output."""

from __future__ import annotations

import json
from pathlib import Path

from prefixbench.paired import Send, mixed_order, schedule
from prefixbench.point_meta import PointMeta

MODES = ("no_prefix_cache", "with_prefix_cache")


def ttft_for(mode: str, prefix: int, warm_hit: bool, conc: int) -> float:
    cold = prefix / 1000  # 1 ms per prefix token
    t = 0.05 if (mode == "with_prefix_cache" and warm_hit) else cold
    return t * (1 + 0.1 * (conc - 1))


def write_run(
    root: Path,
    regimes=(("medium", 512), ("large", 1024)),
    reuses=(100, 50),
    concs=(1, 4),
    n=10,
    failed_at=None,
    max_tokens=8,
    rates=(),
    instances=1,
    instance_speed=None,
    jitter=0.0,
    paired=None,
    arm_effect=None,
    engine=False,
) -> tuple[list[Path], list[Path]]:
    """`instance_speed` {instance: factor} slows a whole server lifetime; `jitter` adds seeded per-request noise;
    `paired` (hit_miss, miss_miss) runs the cache-on closed-loop points as the paired design does; `arm_effect`
    {arm: factor} slows one arm (an effect the A/A design must find)."""
    import random

    noise = random.Random(0)
    recs, metas = [], []
    for mode, instance in [(m, i) for i in range(1, instances + 1) for m in MODES]:
        speed = (instance_speed or {}).get(instance, 1.0)
        for regime, prefix in regimes:
            for reuse in reuses:
                for conc, rate in [(c, 0.0) for c in concs] + [(0, r) for r in rates]:
                    d = root / mode / f"i{instance}" / regime
                    d.mkdir(parents=True, exist_ok=True)
                    label = f"rate{rate:g}" if rate else f"c{conc}"
                    rp, mp = d / f"reuse{reuse}_{label}.jsonl", d / f"reuse{reuse}_{label}.meta.json"
                    load = rate / 2 if rate else conc  # open loop: latency grows with the offered rate
                    n_shared = round(n * reuse / 100)
                    lines, hits, queries, ok = [], 0, 0, 0
                    sends = [(i, None) for i in range(n)]
                    if paired and mode == "with_prefix_cache" and conc and not rate:
                        groups = [{"request_index": i, "prefix_group": "shared" if i < n_shared else "u"} for i in range(n)]
                        sends = schedule(mixed_order(groups), conc, f"s{instance}", paired)
                    for k, send in enumerate(sends):
                        i, arm = (send.request_index, send.arm) if isinstance(send, Send) else send
                        salted = arm in ("miss", "miss_b")
                        group = "shared" if i < n_shared else f"unique-{i:03d}"
                        warm = group == "shared" and i > 0 and not salted
                        arm_speed = (arm_effect or {}).get(arm, 1.0)
                        ttft = ttft_for(mode, prefix, warm, load) * speed * arm_speed * (1 + jitter * noise.uniform(-1, 1))
                        failed = failed_at == (mode, regime, reuse, conc) and i == 0 and arm in (None, "hit")
                        cached = prefix if warm and mode == "with_prefix_cache" else 0
                        hits += cached
                        queries += prefix + 12 if mode == "with_prefix_cache" else 0
                        ok += not failed
                        extra = {}
                        if isinstance(send, Send):
                            extra = {"arm": arm, "sub_block": send.sub_block, "pair": send.pair, "send_index": k}
                        lines.append(
                            {
                                "mode": mode,
                                "instance": instance,
                                "regime": regime,
                                "reuse_pct": reuse,
                                "concurrency": conc,
                                "request_rate": rate,
                                "prefix_len_tokens": prefix,
                                "workload": "chat_policy",
                                "prefix_group": group,
                                "expected_cached_tokens": prefix if warm else 0,
                                "request_index": i,
                                "status": "failed" if failed else "ok",
                                "error": "timeout after 1.0 s" if failed else None,
                                "http_status": 200,
                                "start_s": (k // max(conc, 1)) * (ttft + 0.02 * max_tokens) if not rate else i / rate,
                                "ttft_s": None if failed else ttft,
                                "e2e_s": 1.0 if failed else ttft + 0.02 * max_tokens,
                                "itl_s": [] if failed else [0.02] * (max_tokens - 1),
                                "prompt_tokens": None if failed else prefix + 12,
                                "completion_tokens": None if failed else max_tokens,
                                "cached_tokens": None if failed else cached,
                                "output_chunks": max_tokens,
                                **extra,
                            }
                        )
                    # A paired pass's wall is its own; the other points keep the fixed 2 s the older tests expect.
                    wall = max(x["start_s"] + x["e2e_s"] for x in lines) if len(sends) > n else 2.0
                    rp.write_text("".join(json.dumps(x) + "\n" for x in lines))
                    PointMeta(
                        mode=mode,
                        instance=instance,
                        regime=regime,
                        reuse_pct=reuse,
                        concurrency=conc,
                        request_rate=rate,
                        repeats=1,
                        requests_sent=len(sends),
                        requests_ok=ok,
                        requests_failed=len(sends) - ok,
                        wall_s=wall,
                        wall_s_per_repeat=[wall],
                        cache_reset="ok",
                        counters_delta={
                            "vllm:prefix_cache_queries_total": queries,
                            "vllm:prefix_cache_hits_total": hits,
                            "vllm:time_to_first_token_seconds_sum": 1.0,
                            "vllm:time_to_first_token_seconds_count": len(sends),
                            "vllm:e2e_request_latency_seconds_sum": 2.0,
                            "vllm:e2e_request_latency_seconds_count": len(sends),
                            **(
                                {
                                    "vllm:iteration_tokens_total_count": 10.0 * len(sends),
                                    "vllm:iteration_tokens_total_sum": float(prefix * len(sends)),
                                    "vllm:request_queue_time_seconds_sum": 0.001 * len(sends),
                                    "vllm:request_queue_time_seconds_count": len(sends),
                                    "vllm:request_prefill_time_seconds_sum": 0.01 * len(sends),
                                    "vllm:request_prefill_time_seconds_count": len(sends),
                                    "vllm:request_decode_time_seconds_sum": 0.02 * len(sends),
                                    "vllm:request_decode_time_seconds_count": len(sends),
                                }
                                if engine
                                else {}
                            ),
                        },
                        measured_hit_rate=hits / queries if queries else None,
                        peak_server_rss_gib=3.5,
                        peak_kv_cache_usage=0.1 if mode == "no_prefix_cache" else 0.05,
                        memory_samples=3,
                    ).write(mp)
                    recs.append(rp)
                    metas.append(mp)
    return recs, metas
