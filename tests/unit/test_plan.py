"""Sizing the sweep to a time budget: the rate fit, the subset that keeps each point's reuse mix, the ETA."""

from __future__ import annotations

import pytest

from prefixbench.plan import (
    Eta,
    Rates,
    choose,
    drop_order,
    fit_rates,
    make_plan,
    min_requests,
    plan_summary,
    point_seconds,
)


def prompts_of(regime: str, reuse: int, n: int, prefix: int = 512, block: int = 128) -> list[dict]:
    shared = set(range(0, n, 2)) if reuse == 50 else (set(range(n)) if reuse == 100 else set())
    out, seen = [], False
    for i in range(n):
        group = "shared" if i in shared else f"unique-{i:03d}"
        warm = group == "shared" and seen
        seen = seen or group == "shared"
        out.append(
            {
                "regime": regime,
                "reuse_pct": reuse,
                "request_index": i,
                "prefix_group": group,
                "prefix_len_tokens": prefix,
                "prompt_len_tokens": prefix + 10,
                "expected_cached_tokens": prefix if warm else 0,
            }
        )
    return out


def test_fit_recovers_fixed_and_per_token_cost():
    rates = Rates(0.05, 0.002, 0.01)
    samples = [
        (n, rates.fixed_s + rates.prefill_s_per_token * n, rates.fixed_s + rates.prefill_s_per_token * n + 0.01 * 15, 16)
        for n in (16, 16, 512, 512, 1024, 1024)
    ]
    fit = fit_rates(samples)
    assert fit.fixed_s == pytest.approx(0.05)
    assert fit.prefill_s_per_token == pytest.approx(0.002)
    assert fit.decode_s_per_token == pytest.approx(0.01)


def test_fit_needs_two_lengths():
    with pytest.raises(ValueError, match="two prompt lengths"):
        fit_rates([(100, 0.1, 0.2, 8), (100, 0.1, 0.2, 8)])


def test_choose_keeps_the_reuse_mix_and_the_cold_first_shared():
    pool = prompts_of("m", 50, 24)
    picked = choose(pool, 6, 50)
    assert len(picked) == 6
    assert sum(p["prefix_group"] == "shared" for p in picked) == 3
    first_shared = next(p for p in picked if p["prefix_group"] == "shared")
    assert first_shared["expected_cached_tokens"] == 0  # still the cold one
    assert [p["request_index"] for p in picked] == sorted(p["request_index"] for p in picked)
    assert choose(pool, 2, 50)[0]["prefix_group"] != choose(pool, 2, 50)[1]["prefix_group"]  # one of each
    assert len(choose(pool, 99, 50)) == 24


def test_cache_on_estimate_is_cheaper_by_the_cached_tokens():
    rates = Rates(0.0, 0.01, 0.0)
    pool = prompts_of("m", 100, 4)
    off = point_seconds(rates, pool, "no_prefix_cache", 1, 0.0, 1)
    on = point_seconds(rates, pool, "with_prefix_cache", 1, 0.0, 1)
    assert off == pytest.approx(4 * 522 * 0.01)
    assert on == pytest.approx((522 + 3 * 10) * 0.01)
    assert point_seconds(rates, pool, "no_prefix_cache", 0, 0.1, 1) == pytest.approx(40.0)  # arrivals take 40 s


def test_plan_fits_the_budget_and_sends_the_same_requests_in_both_modes():
    rates = Rates(0.1, 0.005, 0.02)
    prompts = {"m": prompts_of("m", 100, 24) + prompts_of("m", 50, 24)}
    points = [("m", 100, 1, 0.0), ("m", 100, 4, 0.0), ("m", 50, 1, 0.0), ("m", 50, 4, 0.0)]
    full = make_plan(rates, points, prompts, None, 16, 1, min_rounds=1)
    assert not full["trimmed"] and full["fraction"] == 1.0
    budget = max(full["estimated_s"].values()) / 3
    plan = make_plan(rates, points, prompts, budget, 16, 1, min_rounds=1)
    assert plan["trimmed"] and not plan["over_budget"]
    assert max(plan["estimated_s"].values()) <= budget
    assert plan["requests_planned"] < plan["requests_full"] == 96
    for p in plan["points"]:
        assert len(p["request_indices"]) >= max(2, p["concurrency"])
    assert "budget" in plan_summary(plan) and "trimmed" not in plan_summary(full)


def test_a_budget_too_small_keeps_the_minimum_and_says_so():
    rates = Rates(1.0, 0.01, 0.1)
    prompts = {"m": prompts_of("m", 100, 24)}
    plan = make_plan(rates, [("m", 100, 4, 0.0)], prompts, 1.0, 16, 1, min_rounds=1)
    assert plan["over_budget"] and not plan["dropped"]  # the only concurrency level is never dropped
    assert len(plan["points"][0]["request_indices"]) == 12  # one round inside the window: 1 + the burst and the drain
    assert "still exceeds" in plan_summary(plan)


def test_eta_scales_the_rest_by_the_pace_so_far():
    eta = Eta([10.0, 10.0, 20.0])
    assert eta.remaining_s() == 40.0
    eta.point_done(20.0)  # twice as slow as estimated
    assert eta.remaining_s() == pytest.approx(60.0)
    eta.point_done(20.0)
    eta.point_done(40.0)
    assert eta.remaining_s() == 0.0


def test_min_rounds_keeps_a_level_not_a_burst():
    rates = Rates(1.0, 0.01, 0.1)
    prompts = {"m": prompts_of("m", 100, 64)}
    plan = make_plan(rates, [("m", 100, 4, 0.0), ("m", 100, 16, 0.0)], prompts, 1.0, 16, 1, min_rounds=8)
    sizes = [len(p["request_indices"]) for p in plan["points"]]
    assert sizes == [40, 0]  # 8 rounds inside the window at c=4 (10 sent); c=16 would need 160 of its 64: not sent
    assert plan["min_rounds"] == 8 and "at least 8 round(s) inside its steady-state window" in plan_summary(plan)
    assert plan["dropped"] == [
        {
            "regime": "m",
            "reuse_pct": 100,
            "concurrency": 16,
            "reason": "8 round(s) inside a steady-state window at c=16 need 160 requests; the point has 64",
        }
    ]
    assert "Not measured: m reuse 100% c=16 (8 round(s) inside a steady-state window" in plan_summary(plan)


def test_no_point_is_trimmed_below_its_window():
    """Issue 25: an AVX2 CPU's budget kept 6 requests at c=4, and no steady-state window opened."""
    from prefixbench.stats import steady_window

    for n in range(2, 40):
        for conc in (2, 4, 8):
            for rounds in (1, 2, 3):
                if n < min_requests(conc, rounds):
                    continue
                # Requests in lock-step rounds: the window must hold at least `rounds` rounds.
                start = [(i // conc) * 1.0 for i in range(n)]
                e2e = [1.0 - 0.001 * (i % conc) for i in range(n)]
                assert sum(steady_window(start, e2e, conc)) >= rounds * conc, (n, conc, rounds)
    rates = Rates(0.046, 0.00346, 0.0677)  # the emulated AVX2 run's calibration
    prompts = {r: prompts_of(r, reuse, 24, prefix) for r, prefix in (("medium", 512), ("large", 1024)) for reuse in (100,)}
    for r, prefix in (("medium", 512), ("large", 1024)):
        prompts[r] += prompts_of(r, 50, 24, prefix) + prompts_of(r, 0, 24, prefix)
    points = [(r, reuse, c, 0.0) for r in ("medium", "large") for reuse in (100, 50, 0) for c in (1, 4)]
    plan = make_plan(rates, points, prompts, 280.0, 16, 1, min_rounds=2)  # 360 s less the shapes' ~80 s
    for p in plan["points"]:
        assert p["dropped"] or len(p["request_indices"]) >= min_requests(p["concurrency"], 2)
    assert max(plan["estimated_s"].values()) <= 280.0 and not plan["over_budget"]
    dropped = [(d["regime"], d["reuse_pct"], d["concurrency"]) for d in plan["dropped"]]
    assert dropped and all(c == 4 for _, _, c in dropped)  # c=1 is cheap and never dropped
    assert ("large", 100, 4) not in dropped  # the headline goes last
    assert dropped == [("medium", 50, 4), ("large", 50, 4)]


def test_drop_order_spares_the_headline_and_the_lowest_concurrency():
    points = [(r, reuse, c, 0.0) for r in ("medium", "large") for reuse in (100, 50, 0) for c in (1, 4, 16)]
    order = [points[i] for i in drop_order(points, {"medium": 512, "large": 1024})]
    above, last = order[:12], order[12:]
    assert all(c > 1 for _, _, c, _ in above) and len(above) == 12
    assert above[0] == ("medium", 50, 16, 0.0) and above[-1] == ("large", 100, 4, 0.0)
    assert [p[1] for p in above[:4]] == [50] * 4 and [p[1] for p in above[-4:]] == [100] * 4
    # then the mixed reuse at c=1, then the shorter prefix whole; the longest prefix's full reuse (the headline) and
    # 0% reuse (its control) at c=1 are never dropped
    assert last == [("medium", 50, 1, 0.0), ("large", 50, 1, 0.0), ("medium", 0, 1, 0.0), ("medium", 100, 1, 0.0)]
    with_shape = points + [("chat", 100, 1, 0.0)]
    order = [with_shape[i] for i in drop_order(with_shape, {"medium": 512, "large": 1024, "chat": 256}, frozenset({"chat"}))]
    assert order[-1] == ("chat", 100, 1, 0.0)  # a workload shape goes after the single-prefix regimes


def test_a_paired_point_costs_both_arms_and_keeps_three_pairs():
    rates = Rates(0.0, 0.004, 0.05)
    prompts = {"m": prompts_of("m", 100, 24, 1024)}
    one = make_plan(rates, [("m", 100, 1, 0.0)], prompts, None, 8, 1, min_rounds=1)
    two = make_plan(rates, [("m", 100, 1, 0.0)], prompts, None, 8, 1, min_rounds=1, paired=True)
    off, on = (two["estimated_s"][m] for m in ("no_prefix_cache", "with_prefix_cache"))
    assert off == one["estimated_s"]["no_prefix_cache"] and on == pytest.approx(one["estimated_s"]["with_prefix_cache"] + off)
    tight = make_plan(rates, [("m", 100, 1, 0.0)], prompts, 1.0, 8, 1, min_rounds=1, paired=True)
    assert len(tight["points"][0]["request_indices"]) == 12  # 3 pairs of 4-request sub-blocks at c=1


def test_paired_points_share_a_pair_count_so_high_concurrency_keeps_its_pairs():
    """A common share of every pool would leave c=16 (32-request sub-blocks) a sixteenth of c=1's pairs (2-request
    sub-blocks); the budget trims the pair-rich c=1 point first and both end with the same number of pairs."""
    rates = Rates(0.017, 0.00004, 0.003)
    prompts = {"large": prompts_of("large", 100, 256, 1024, 16)}
    points = [("large", 100, 1, 0.0), ("large", 100, 16, 0.0)]
    full = make_plan(rates, points, prompts, None, 32, 1, min_rounds=4, paired=True)
    budget = 0.5 * max(full["estimated_s"].values())
    plan = make_plan(rates, points, prompts, budget, 32, 1, min_rounds=4, paired=True)
    c1, c16 = (len(p["request_indices"]) for p in plan["points"])
    assert c16 == 256, "c=16's 8 pairs are fewer than the common pair count: it keeps every prompt"
    assert c1 // 2 >= c16 // 32 and c1 < 256, "c=1 gives way first, but never below c=16's pairs"
    assert plan["paired_pairs"] == c1 // 2
    assert "hit/miss pairs, the same for every one" in plan_summary(plan)
    unpaired = make_plan(rates, points, prompts, budget, 32, 1, min_rounds=4)
    assert unpaired["paired_pairs"] is None
