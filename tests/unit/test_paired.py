"""The paired design (prefixbench.paired): its schedule, which requests count, and intervals that cover."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefixbench.paired import (
    HIT,
    MISS,
    clean,
    contrast,
    min_paired_requests,
    mixed_order,
    pair_log_ratios,
    schedule,
    sub_block_size,
)


def test_schedule_is_counterbalanced_and_every_prompt_runs_once_in_each_arm():
    sends = schedule(range(12), 1, "p")
    assert [s.arm for s in sends[::2]][:6] == [HIT, MISS, MISS, HIT, HIT, MISS]  # A B, B A, A B (2 a sub-block at c=1)
    for arm in (HIT, MISS):
        assert sorted(s.request_index for s in sends if s.arm == arm) == list(range(12))
    for pair in range(6):  # a pair sends the same prompts in both arms
        mine = [s for s in sends if s.pair == pair]
        assert {s.request_index for s in mine if s.arm == HIT} == {s.request_index for s in mine if s.arm == MISS}
    salts = [s.salt for s in sends if s.arm == MISS]
    assert all(salts) and len(set(salts)) == len(salts) and all(s.salt is None for s in sends if s.arm == HIT)
    assert all(len(x) <= 128 and not set("@/\\\0") & set(x) for x in salts)  # vLLM's cache_salt rules
    assert sub_block_size(1) == 2 and sub_block_size(4) == 8 and sub_block_size(16) == 32


def test_a_short_last_chunk_joins_the_one_before():
    sends = schedule(range(9), 2, "p")  # 4 + 4 + 1: the 1 joins the second chunk
    assert max(s.pair for s in sends) == 1 and len(sends) == 18


def test_mixed_order_spreads_the_reuse_mix_over_the_pass():
    prompts = [{"request_index": i, "prefix_group": "shared" if i < 6 else f"u{i}"} for i in range(12)]
    order = mixed_order(prompts)
    assert sorted(order) == list(range(12)) and order[0] == 0  # the cold shared prompt stays first
    for k in range(0, 12, 4):  # every sub-block of 4 carries half shared, half unique
        assert sum(i < 6 for i in order[k : k + 4]) == 2


def test_clean_drops_the_first_send_and_each_sub_blocks_overlap():
    sends = schedule(range(16), 4, "p")
    keep = clean([s.arm for s in sends], [s.sub_block for s in sends], list(range(len(sends))), 4)
    assert keep[0] is False and all(keep[1:8])  # the first sub-block: only the pass's first send
    assert keep[8:11] == [False] * 3 and all(keep[11:16])  # the next: c - 1 = 3 overlap the previous arm
    one = schedule(range(8), 1, "p")
    assert clean([s.arm for s in one], [s.sub_block for s in one], list(range(16)), 1) == [False] + [True] * 15
    assert min_paired_requests(1) == 12 and min_paired_requests(4) == 24


def test_contrast_recovers_a_known_ratio_with_an_mde():
    rng = np.random.default_rng(1)
    c = contrast(list(math.log(2.0) + rng.normal(0, 0.05, 12)))
    assert c.pairs == 12 and c.lo < 2.0 < c.hi and 1.9 < c.ratio < 2.1
    assert 0 < c.mde_pct < 10
    assert contrast([]).ratio is None and contrast([0.1]).lo is None and contrast([0.1]).ratio == pytest.approx(math.exp(0.1))


def test_pair_log_ratios_pair_within_lifetime_and_pass():
    ttft = [1.0, 1.0, 3.0, 3.0, 2.0, 6.0]
    arms = [HIT, HIT, MISS, MISS, HIT, MISS]
    pairs = [(1, 0, 0)] * 4 + [(2, 0, 0)] * 2
    assert pair_log_ratios(ttft, arms, pairs) == pytest.approx([math.log(3.0), math.log(3.0)])


def simulate(k: int, pairs: int, per_block: int, true_ratio: float, rng, lifetime_sd=0.3, ratio_sd=0.008, block_sd=0.05,
             request_sd=0.14) -> tuple[float, float]:  # fmt: skip
    """One run: k lifetimes, each `pairs` hit/miss sub-block pairs of `per_block` requests; log-normal noise at the
    lifetime level (a level shift, SD 0.3: the 25-40% between H200 lifetimes), the lifetime's own ratio (SD 0.008,
    measured), the sub-block (0.05) and the request (0.14, SmolLM2 at c=1 on an H200). Returns the interval."""
    logs = []
    for _ in range(k):
        level = rng.normal(0, lifetime_sd)
        delta = math.log(true_ratio) + rng.normal(0, ratio_sd)
        for _ in range(pairs):
            hit = np.exp(level + rng.normal(0, block_sd) + rng.normal(0, request_sd, per_block))
            miss = np.exp(level + delta + rng.normal(0, block_sd) + rng.normal(0, request_sd, per_block))
            logs.append(math.log(miss.mean() / hit.mean()))
    c = contrast(logs)
    return c.lo, c.hi


@pytest.mark.parametrize("k,pairs,per_block", [(1, 6, 8), (3, 12, 8), (4, 4, 8), (1, 5, 2)])
def test_the_intervals_cover_and_an_aa_design_claims_nothing(k, pairs, per_block):
    """Issue 20: the paired interval covers the true ratio at >= 93% with lifetime-, sub-block- and request-level
    noise of the measured sizes, and where there is no effect (A/A) it claims one at most 5% of the time."""
    rng = np.random.default_rng(20 + k)
    runs = 1500
    covered = sum(lo <= 1.6 <= hi for lo, hi in (simulate(k, pairs, per_block, 1.6, rng) for _ in range(runs)))
    false_claims = sum(not lo <= 1.0 <= hi for lo, hi in (simulate(k, pairs, per_block, 1.0, rng) for _ in range(runs)))
    assert covered / runs >= 0.93, covered / runs
    assert false_claims / runs <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs), false_claims / runs


def test_the_cross_lifetime_design_would_not_cover():
    """The reason for the paired design: two lifetimes per setting, compared across lifetimes, give an interval that
    misses the truth far more often than 5% when lifetimes differ by a level shift of SD 0.2 (issue 20: ~76%)."""
    from prefixbench.stats import cluster_ratio_ci

    rng = np.random.default_rng(5)
    covered, runs = 0, 300
    for _ in range(runs):
        off, on, g_off, g_on, c_off, c_on = [], [], [], [], [], []
        for life in range(2):
            lv_off, lv_on = rng.normal(0, 0.2), rng.normal(0, 0.2)
            for r in range(6):
                off += list(np.exp(lv_off + math.log(1.6) + rng.normal(0, 0.14, 8)))
                on += list(np.exp(lv_on + rng.normal(0, 0.14, 8)))
                g_off += [life] * 8
                g_on += [life] * 8
                c_off += [f"{life}:{r}"] * 8
                c_on += [f"{life}:{r}"] * 8
        ci = cluster_ratio_ci(np.array(off), c_off, np.array(on), c_on, n_boot=400, off_groups=g_off, on_groups=g_on)
        covered += ci is not None and ci[0] <= 1.6 <= ci[1]
    assert covered / runs < 0.9


def test_a_pair_compares_only_the_prompts_clean_in_both_arms():
    # Pair 0: the hit arm lost prompts 2 and 3 to the drain; only 0 and 1 compare. Pair 1 keeps one common prompt.
    ttft = [1.0, 1.0, 9.0, 9.0, 2.0, 2.0, 3.0, 3.0]
    arms = [HIT, HIT, MISS, MISS, MISS, MISS, HIT, MISS]
    pairs = [(1, 0, 0)] * 6 + [(1, 0, 1)] * 2
    prompts = [0, 1, 2, 3, 0, 1, 5, 5]
    assert pair_log_ratios(ttft, arms, pairs, prompts=prompts) == pytest.approx([math.log(2.0)])


def test_the_hit_arms_throughput_is_its_share_of_the_busy_time():
    """Both arms share one closed loop: the hit arm's time is its share of the summed latencies, not the sum of its
    sub-blocks' spans (which overlap the miss arm's at every switch)."""
    import polars as pl

    from prefixbench.paired import arm_walls

    recs = pl.DataFrame(
        {
            "mode": ["with_prefix_cache"] * 4,
            "regime": ["r"] * 4,
            "reuse_pct": [100] * 4,
            "concurrency": [2] * 4,
            "request_rate": [0.0] * 4,
            "instance": [1] * 4,
            "repeat": [0] * 4,
            "arm": [HIT, HIT, MISS, MISS],
            "status": ["ok"] * 4,
            "e2e_s": [1.0, 1.0, 3.0, 3.0],
            "cached_tokens": [90, 90, 0, 0],
            "prompt_tokens": [100] * 4,
        }
    )
    meta = (
        recs.select("mode", "regime", "reuse_pct", "concurrency", "request_rate", "instance")
        .unique()
        .with_columns(
            pl.lit(8.0).alias("wall_s"),
            pl.lit([8.0]).alias("wall_s_per_repeat"),
            pl.lit(4).alias("requests_sent"),
            pl.lit(None, dtype=pl.Float64).alias("measured_hit_rate"),
            pl.lit(180.0).alias("query_tokens"),
        )
    )
    out = arm_walls(recs, meta).row(0, named=True)
    assert out["wall_s"] == pytest.approx(2.0) and out["wall_s_per_repeat"] == [pytest.approx(2.0)]
    assert out["requests_sent"] == 2 and out["measured_hit_rate"] == pytest.approx(0.9) and out["query_tokens"] == 200
