"""The bootstrap CI of an off/on ratio: covers the truth, includes 1 when nothing changed, is reproducible."""

from __future__ import annotations

import numpy as np

from prefixbench.report import verdict
from prefixbench.stats import bootstrap_ratio_ci


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
    a, b = np.array([1.0, 1.1, 0.9]), np.array([0.5, 0.6, 0.4])
    assert bootstrap_ratio_ci(a, b) == bootstrap_ratio_ci(a, b)
    assert bootstrap_ratio_ci(np.array([1.0]), b) is None
    assert bootstrap_ratio_ci(np.array([1.0, np.nan, 2.0]), b) is not None


def test_verdict_uses_the_interval():
    assert verdict(1.3, ci=(0.9, 1.6)).startswith("no measurable difference (1.30×, 95% CI 0.90–1.60 includes 1)")
    assert verdict(1.3, ci=(1.1, 1.5)) == "1.30× faster (95% CI 1.10–1.50)"
    assert verdict(0.5, ci=(0.4, 0.6)) == "2.00× slower (95% CI 1.67–2.50)"
