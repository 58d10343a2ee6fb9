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


# --- A replicated target: two replicas behind a router, three policies, a prefix_pool shape (issue 23). ---

POLICIES = ("cache_aware", "round_robin", "consistent_hash")  # the first is the primary, as router.policies[0]
DOC_TOKENS, QUESTION_TOKENS, BLOCK = 64, 8, 16


def doc_ids(doc: int) -> list[int]:
    return [1000 + doc * 100 + t for t in range(DOC_TOKENS)]


def pool_prompts(documents: int, n: int, regime: str = "pool") -> list[dict]:
    """A prefix_pool shape's prompt records (block hashes as shapes/common.record writes them): `n` requests over
    `documents` documents of 4 blocks, skewed to the first (each draw from a seeded generator)."""
    import random

    from prefixbench.shapes.common import record, with_expected

    rng = random.Random(f"pool:{documents}:{n}")
    out = []
    for i in range(n):
        d = min(int(rng.expovariate(0.6)), documents - 1)
        ids = doc_ids(d) + [50_000 + i * QUESTION_TOKENS + t for t in range(QUESTION_TOKENS)]
        out.append(
            record(
                ids, ids, BLOCK, request_index=i, document=d, question=f"q{i}", prefix_group=f"doc-{d:03d}",
                prefix_len_tokens=DOC_TOKENS, regime=regime, workload="prefix_pool",
            )
        )  # fmt: skip
    return with_expected(out, BLOCK, 8)


def route(policy: str, prompts: list[dict], replicas: int) -> list[int]:
    """The synthetic router: round robin in send order; consistent hash on the document; cache-aware sends a document
    where it went before and a new one to the replica with fewer requests."""
    out: list[int] = []
    seen: dict[int, int] = {}
    for k, p in enumerate(prompts):
        if policy == "round_robin":
            out.append(k % replicas)
        elif policy == "consistent_hash":
            out.append(p["document"] % replicas)
        else:
            loads = [out.count(r) for r in range(replicas)]
            out.append(seen.setdefault(p["document"], loads.index(min(loads))))
    return out


def write_replicated_run(
    root: Path,
    policies=POLICIES,
    replicas: int = 2,
    documents: int = 6,
    n: int = 24,
    concs=(1, 4),
    repeats: int = 2,
    kv_blocks: int = 12,
    max_tokens: int = 8,
    policy_ttft_s=None,
    unattributed: int = 0,
    jitter: float = 0.05,
) -> tuple[list[Path], list[Path], Path]:
    """A replicated run as the measuring step writes it (records with policy, replica, session_key, request_id and the
    serving replica's kv_blocks; point meta with replica_passes): one cache-off lifetime (the primary policy), one
    cache-on lifetime with every policy per repeat in a rotated order. Measured cached tokens are the cache model's,
    per replica, over the synthetic times (so predicted = measured); TTFT grows with the uncached tokens, plus
    `policy_ttft_s` {policy: seconds} (cache_aware's tokenize calls, say). `unattributed`: the last so many
    requests of each cache-on pass have no known replica; `jitter`: seeded relative noise on every TTFT."""
    import random

    from prefixbench.kvcache import Request, replay

    noise = random.Random("replicated")
    extra = policy_ttft_s or {}
    prompts = pool_prompts(documents, n)
    prompt_path = root / "prompts" / "pool.jsonl"
    prompt_path.parent.mkdir(parents=True, exist_ok=True)
    prompt_path.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    recs, metas = [], []
    for mode in MODES:
        on = mode == "with_prefix_cache"
        for conc in concs:
            d = root / mode / "i1" / "pool"
            d.mkdir(parents=True, exist_ok=True)
            rp, mp = d / f"reuse100_c{conc}.jsonl", d / f"reuse100_c{conc}.meta.json"
            lines, passes = [], []
            for repeat in range(repeats):
                order = [policies[(repeat + j) % len(policies)] for j in range(len(policies))] if on else [policies[0]]
                for position, policy in enumerate(order):
                    where = route(policy, prompts, replicas)
                    times = [((k // conc) * 0.5, (k // conc) * 0.5 + 0.3) for k in range(n)]
                    cached = [0] * n
                    if on:
                        for r in range(replicas):
                            mine = [k for k in range(n) if where[k] == r]
                            reqs = [
                                Request(
                                    k, tuple(prompts[k]["block_hashes"]), prompts[k]["prompt_len_tokens"], max_tokens, *times[k]
                                )
                                for k in mine
                            ]
                            cached = [replay(reqs, kv_blocks, BLOCK).get(k, c) for k, c in enumerate(cached)]
                    for k, p in enumerate(prompts):
                        uncached = p["prompt_len_tokens"] - cached[k]
                        ttft = 0.001 * uncached * (1 + 0.1 * (conc - 1)) + extra.get(policy, 0.0)
                        ttft *= 1 + jitter * noise.uniform(-1, 1)
                        known = not (on and k >= n - unattributed)
                        lines.append(
                            {
                                "mode": mode, "instance": 1, "regime": "pool", "reuse_pct": 100, "concurrency": conc,
                                "request_rate": 0.0, "repeat": repeat, "prefix_len_tokens": DOC_TOKENS,
                                "workload": "prefix_pool", "prefix_group": p["prefix_group"], "document": p["document"],
                                "expected_cached_tokens": p["expected_cached_tokens"], "request_index": k,
                                "status": "ok", "error": None, "http_status": 200, "start_s": times[k][0],
                                "ttft_s": ttft, "e2e_s": times[k][1] - times[k][0], "itl_s": [0.02] * (max_tokens - 1),
                                "prompt_tokens": p["prompt_len_tokens"], "completion_tokens": max_tokens,
                                "cached_tokens": cached[k], "output_chunks": max_tokens,
                                "request_id": f"{mode}-c{conc}-r{repeat}-{policy}-{k}", "policy": policy,
                                "replica": where[k] if known else None,
                                "replica_unknown": None if known else "not in any replica's request log",
                                "session_key": p["prefix_group"], "kv_blocks": kv_blocks if known else None,
                            }
                        )  # fmt: skip
                    served = [where.count(r) for r in range(replicas)]
                    passes.append(
                        {
                            "repeat": repeat, "policy": policy, "order": position,
                            "wall_s": (n // conc) * 0.5 * (1 + jitter * noise.uniform(-1, 1)),
                            "counters_delta_per_replica": [
                                {
                                    "vllm:prefix_cache_queries_total": float(sum(prompts[k]["prompt_len_tokens"] for k in range(n) if where[k] == r)),
                                    "vllm:prefix_cache_hits_total": float(sum(cached[k] for k in range(n) if where[k] == r)),
                                }
                                for r in range(replicas)
                            ],
                            "router_counters_delta": {"vllm_router_processed_requests_total": float(n)},
                            "attributed": n - (unattributed if on else 0), "unattributed": unattributed if on else 0,
                            "peak_kv_cache_usage_per_replica": [round(0.2 + 0.01 * s, 3) for s in served],
                            "worker_order": list(range(replicas)),
                        }
                    )  # fmt: skip
            rp.write_text("".join(json.dumps(x) + "\n" for x in lines))
            primary = [x for x in lines if x["policy"] == policies[0]]
            hits = sum(x["cached_tokens"] for x in primary)
            queries = sum(x["prompt_tokens"] for x in primary) if on else 0
            walls = [p["wall_s"] for p in passes if p["policy"] == policies[0]]
            PointMeta(
                mode=mode, instance=1, regime="pool", reuse_pct=100, concurrency=conc, request_rate=0.0,
                repeats=repeats, requests_sent=len(primary), requests_ok=len(primary), requests_failed=0,
                wall_s=sum(walls), wall_s_per_repeat=walls, cache_reset="ok",
                counters_delta={"vllm:prefix_cache_queries_total": queries, "vllm:prefix_cache_hits_total": hits},
                measured_hit_rate=hits / queries if queries else None, peak_kv_cache_usage=0.3, memory_samples=3,
            ).write(mp)  # fmt: skip
            meta = json.loads(mp.read_text())
            meta["replica_passes"] = passes
            mp.write_text(json.dumps(meta, indent=2))
            recs.append(rp)
            metas.append(mp)
    return recs, metas, prompt_path
