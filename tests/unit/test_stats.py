"""The bootstrap CI of an off/on ratio: covers the truth, includes 1 when nothing changed, is reproducible."""

from __future__ import annotations

import numpy as np

from prefixbench.findings import verdict
from prefixbench.stats import (
    bootstrap_ratio_ci,
    busy_periods,
    closed_loop_rounds,
    cluster_ratio_ci,
    outside_floor,
    steady_window,
)


def test_ci_excludes_one_for_a_real_difference():
    rng = np.random.default_rng(1)
    off, on = rng.normal(1.0, 0.05, 40), rng.normal(0.5, 0.05, 40)
    lo, hi = bootstrap_ratio_ci(off, on)
    assert 1.8 < lo < 2.0 < hi < 2.2


def test_ci_includes_one_when_nothing_changed():
    rng = np.random.default_rng(2)
    misses = 0
    for _ in range(20):
        lo, hi = bootstrap_ratio_ci(rng.normal(1.0, 0.2, 24), rng.normal(1.0, 0.2, 24), n_boot=500)
        misses += not (lo <= 1 <= hi)
    assert misses <= 3  # a 95% interval may miss now and then, not often


def test_seeded_and_guarded():
    a, b = np.array([1.0, 1.1, 0.9, 1.05]), np.array([0.5, 0.6, 0.4, 0.55])
    ci = bootstrap_ratio_ci(a, b)
    assert ci is not None and ci == bootstrap_ratio_ci(a, b)
    assert bootstrap_ratio_ci(np.array([1.0, 1.1, 0.9]), b) is None  # three rounds: no interval
    assert bootstrap_ratio_ci(np.array([1.0, np.nan, 2.0, 1.5, 1.2]), b) is not None


def test_verdict_uses_the_interval():
    assert verdict(1.3, ci=(0.9, 1.6)).startswith("no measurable difference (1.30×, 95% CI 0.90–1.60 includes 1)")
    assert verdict(1.3, ci=(1.1, 1.5)) == "1.30× faster (95% CI 1.10–1.50)"
    assert verdict(0.5, ci=(0.4, 0.6)) == "2.00× slower (95% CI 1.67–2.50)"


def test_a_wave_is_one_cluster_so_the_interval_widens():
    """Requests of one round share their TTFT: resampling requests as if independent overstates certainty."""
    rng = np.random.default_rng(3)
    waves_off = np.repeat(rng.normal(1.0, 0.15, 6), 8)  # 6 rounds of 8 requests, one TTFT per round
    waves_on = np.repeat(rng.normal(1.0, 0.15, 6), 8)
    clusters = np.repeat(np.arange(6), 8)
    naive = bootstrap_ratio_ci(waves_off, waves_on)
    honest = cluster_ratio_ci(waves_off, clusters, waves_on, clusters)
    assert honest[1] - honest[0] > 2 * (naive[1] - naive[0])
    assert honest[0] <= 1 <= honest[1]


def test_too_few_clusters_give_no_interval():
    assert cluster_ratio_ci(np.ones(4), [0] * 4, np.ones(4), [0, 1, 2, 3]) is None
    assert cluster_ratio_ci(np.ones(6), [0, 0, 1, 1, 2, 2], np.ones(4), [0, 1, 2, 3]) is None  # 3 rounds of 2


def test_rounds_and_busy_periods():
    assert closed_loop_rounds([0.3, 0.0, 0.1, 0.2, 0.5], 2) == [1, 0, 0, 1, 2]
    assert busy_periods([0.0, 0.5, 3.0, 3.1], [1.0, 2.0, 3.5, 3.2]) == [0, 0, 1, 1]


def test_outside_floor():
    assert not outside_floor(None, None)
    assert not outside_floor((0.9, 1.2), None)
    assert outside_floor((1.1, 1.3), None)
    assert not outside_floor((1.1, 1.3), (0.8, 1.15))
    assert outside_floor((1.2, 1.3), (0.8, 1.15)) and outside_floor((0.5, 0.7), (0.8, 1.15))
    # Issue 20: a gain of 1.05-1.25 under a floor of 1.29-1.53 (a floor that excludes 1) is inside the noise, not
    # clear of it; the old rule called any interval below the floor clear.
    assert not outside_floor((1.05, 1.25), (1.29, 1.53))
    assert outside_floor((1.6, 1.9), (1.29, 1.53))
    assert not outside_floor((0.75, 0.95), (0.7, 0.9)) and outside_floor((0.5, 0.65), (0.7, 0.9))


def test_steady_window_drops_the_ramp_up_burst_and_the_drain():
    # c=2, 6 requests of 1 s each, sent as workers free up: sends at 0,0,1,1,2,2; ends at 1,1,2,2,3,3.
    start = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    e2e = [1.0] * 6
    # Opening at the first completion (t=1): the burst of two is out. Closing at the first completion after the
    # last send (t=3): requests ending by then are in.
    assert steady_window(start, e2e, 2) == [False, False, True, True, True, True]
    # The drain: a slow last request keeps one worker busy after the other ran dry.
    start = [0.0, 0.0, 1.0, 1.0, 2.0, 2.5]
    e2e = [1.0, 1.0, 1.0, 1.6, 0.5, 2.0]  # the second worker runs dry at 2.6
    assert steady_window(start, e2e, 2) == [False, False, True, True, True, False]
    assert steady_window([0.0, 1.0], [1.0, 1.0], 1) == [True, True]  # one at a time: no ramp, no drain
