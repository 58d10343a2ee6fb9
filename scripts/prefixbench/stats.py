"""Confidence intervals for off/on ratios: a seeded percentile bootstrap over requests."""

from __future__ import annotations

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def bootstrap_ratio_ci(off: np.ndarray, on: np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL,
                       seed: int = 0) -> tuple[float, float] | None:
    """CI of mean(off) / mean(on), resampling each side's requests with replacement; None if too few."""
    off, on = np.asarray(off, dtype=float), np.asarray(on, dtype=float)
    off, on = off[~np.isnan(off)], on[~np.isnan(on)]
    if len(off) < 2 or len(on) < 2:
        return None
    rng = np.random.default_rng(seed)
    m_off = off[rng.integers(0, len(off), (n_boot, len(off)))].mean(axis=1)
    m_on = on[rng.integers(0, len(on), (n_boot, len(on)))].mean(axis=1)
    ratios = m_off / m_on
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return float(lo), float(hi)
