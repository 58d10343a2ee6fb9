"""Intervals that respect how requests are correlated, and the A/A rule that decides what is a real effect.

Requests of one point are not independent: at concurrency c the requests admitted together share a
wave (their TTFTs agree within a fraction of a millisecond on a GPU), every repeat starts from its
own cache state, and every server lifetime (instance) has its own speed. So the bootstrap resamples
*clusters*, never single requests: a cluster is one round of c consecutive sends within one repeat
(closed loop), or one busy period of overlapping requests (open loop); with several instances it
resamples instances first, then clusters within each drawn instance (a two-stage bootstrap). With too
few clusters on a side there is no interval, and no claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
MIN_CLUSTERS = 4  # fewer independent rounds than this make a percentile bootstrap a guess


def bootstrap_ratio_ci(
    off: np.ndarray, on: np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float] | None:
    """CI of mean(off) / mean(on) for independent requests (each its own cluster)."""
    off, on = np.asarray(off, dtype=float), np.asarray(on, dtype=float)
    return cluster_ratio_ci(off, np.arange(len(off)), on, np.arange(len(on)), n_boot, level, seed)


def _cluster_sums(values: np.ndarray, clusters: Sequence) -> tuple[np.ndarray, np.ndarray]:
    labels = {c: i for i, c in enumerate(dict.fromkeys(list(clusters)))}
    idx = np.fromiter((labels[c] for c in clusters), dtype=int, count=len(values))
    sums = np.bincount(idx, weights=values, minlength=len(labels))
    return sums, np.bincount(idx, minlength=len(labels)).astype(float)


def _cluster_means(
    values: np.ndarray, clusters: Sequence | np.ndarray, rng: np.random.Generator, n_boot: int, groups: Sequence | None = None
) -> np.ndarray | None:
    """Bootstrap means of `values`: clusters resampled with replacement, or with more than one group (server
    instance), groups resampled first and then the clusters of each drawn group."""
    values = np.asarray(values, dtype=float)
    keep = ~np.isnan(values)
    values, clusters = values[keep], cast(np.ndarray, np.asarray(clusters, dtype=object)[keep])  # a mask keeps an array
    if len(set(clusters.tolist())) < MIN_CLUSTERS:
        return None
    group_ids = np.asarray(groups, dtype=object)[keep] if groups is not None else np.zeros(len(values), dtype=object)
    names = list(dict.fromkeys(group_ids.tolist()))
    if len(names) == 1:
        sums, counts = _cluster_sums(values, clusters.tolist())
        draw = rng.integers(0, len(sums), (n_boot, len(sums)))
        return sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    per_group = [_cluster_sums(values[group_ids == g], clusters[group_ids == g].tolist()) for g in names]
    total, n = np.zeros(n_boot), np.zeros(n_boot)
    picks = rng.integers(0, len(names), (n_boot, len(names)))
    for slot in range(len(names)):
        for g, (sums, counts) in enumerate(per_group):
            rows = picks[:, slot] == g
            draw = rng.integers(0, len(sums), (int(rows.sum()), len(sums)))
            total[rows] += sums[draw].sum(axis=1)
            n[rows] += counts[draw].sum(axis=1)
    return total / n


def cluster_ratio_ci(
    off: np.ndarray,
    off_clusters: Sequence | np.ndarray,
    on: np.ndarray,
    on_clusters: Sequence | np.ndarray,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
    off_groups: Sequence | None = None,
    on_groups: Sequence | None = None,
) -> tuple[float, float] | None:
    """Percentile CI of mean(off) / mean(on), resampling each side's clusters (within its instances) with replacement.

    None when either side has fewer than MIN_CLUSTERS clusters: a few waves cannot say how the next would go."""
    rng = np.random.default_rng(seed)
    m_off = _cluster_means(off, off_clusters, rng, n_boot, off_groups)
    m_on = _cluster_means(on, on_clusters, rng, n_boot, on_groups)
    if m_off is None or m_on is None:
        return None
    alpha = (1 - level) / 2
    lo, hi = np.quantile(m_off / m_on, [alpha, 1 - alpha])
    return float(lo), float(hi)


def closed_loop_rounds(start_s: Sequence[float], concurrency: int) -> list[int]:
    """Round of each request (by send order): the first c sends are round 0, the next c round 1, ..."""
    order = np.argsort(np.asarray(start_s, dtype=float), kind="stable")
    rounds = np.empty(len(order), dtype=int)
    rounds[order] = np.arange(len(order)) // max(concurrency, 1)
    return rounds.tolist()


def busy_periods(start_s: Sequence[float], end_s: Sequence[float]) -> list[int]:
    """Open loop: requests whose lifetimes overlap, directly or through others, share a period."""
    start, end = np.asarray(start_s, dtype=float), np.asarray(end_s, dtype=float)
    order = np.argsort(start, kind="stable")
    period = np.empty(len(order), dtype=int)
    current, horizon = -1, -np.inf
    for i in order:
        if start[i] > horizon:
            current += 1
        horizon = max(horizon, end[i])
        period[i] = current
    return period.tolist()


def outside_floor(ci: tuple[float, float] | None, floor: tuple[float, float] | None) -> bool:
    """Whether a ratio's interval excludes 1 *and* clears the A/A interval (the noise two identical setups show) on
    the side of 1 it lies: a gain must lie above the floor's top (and above 1), a loss below its bottom (and below 1).
    An interval above 1 but below a floor that itself lies above 1 is inside the noise, not clear of it.

    Without an A/A interval the rule falls back to excluding 1."""
    if ci is None:
        return False
    lo, hi = ci
    if lo <= 1 <= hi:
        return False
    if floor is None:
        return True
    if lo > 1:
        return lo > max(1.0, floor[1])
    return hi < min(1.0, floor[0])


def steady_window(
    start_s: Sequence[float], e2e_s: Sequence[float | None], concurrency: int, skip_first: bool = False
) -> list[bool]:
    """Which requests of one closed-loop pass ran at the full concurrency level.

    Ramp-up: the first c requests leave together (a burst, not a level), so the window opens at the first
    completion. Drain: once the queue is empty, workers stop and the level decays, so the window closes at the
    first completion after the last send. A request is in the window if it was sent after the opening and
    finished before the close. At c = 1 every request is, but with `skip_first` the first request after idle,
    which runs slower (3.7-5.2 ms on an H200), is out as the opening burst is at c > 1 (a pass of one request keeps
    it)."""
    n = len(start_s)
    if concurrency <= 1 or n == 0:
        flags = [True] * n
        if skip_first and n > 1:
            flags[int(np.argmin(np.asarray(start_s, dtype=float)))] = False
        return flags
    ends = [s + e for s, e in zip(start_s, e2e_s) if e is not None]
    if not ends:
        return [False] * n
    opening = min(ends)
    last_send = max(start_s)
    after = [e for e in ends if e > last_send]
    closing = min(after) if after else max(ends)
    return [s >= opening and e is not None and s + e <= closing for s, e in zip(start_s, e2e_s)]
