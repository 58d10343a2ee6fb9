"""Sizing the sweep to a time budget: the rate fit, the subset that keeps each point's reuse mix, the ETA."""

from __future__ import annotations

import pytest

from prefixbench.plan import Eta, Rates, choose, fit_rates, make_plan, plan_summary, point_seconds


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
    assert plan["over_budget"]
    assert len(plan["points"][0]["request_indices"]) == 4  # one full round at concurrency 4
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
    assert sizes == [32, 64]  # 8 rounds at c=4; at c=16 all 64 (8 rounds would need 128)
    assert plan["min_rounds"] == 8 and "at least 8 round(s)" in plan_summary(plan)
