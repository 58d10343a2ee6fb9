"""Size the sweep to a time budget from the server's measured speed, and estimate what remains.

A 2-core machine may be an AVX-512 Xeon or an AVX2-only EPYC: the same sweep takes minutes on one and
an hour on the other. So a calibration (a server start before the measured ones, which also warms the
compile caches) measures the served model's fixed cost per request, prefill seconds per token and decode
seconds per token, and this module turns that into a plan: how many of each point's requests to send so
the slower cache setting fits `benchmark.time_budget_s`. Every point keeps its reuse mix, and cache off
and on send exactly the same requests, so the comparison stays paired; the report says what was trimmed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from . import MODES, OFF, ON
from .paired import min_paired_requests, sub_block_size


@dataclass(frozen=True)
class Rates:
    """The served model's speed, fitted from cold requests of several lengths (TTFT = fixed + prefill x tokens)."""

    fixed_s: float
    prefill_s_per_token: float
    decode_s_per_token: float

    def request_s(self, uncached_tokens: int, max_tokens: int) -> float:
        """One request alone on the server: its uncached prefill, then max_tokens - 1 decode steps."""
        return self.fixed_s + self.prefill_s_per_token * uncached_tokens + self.decode_s_per_token * max(max_tokens - 1, 0)


def fit_rates(samples: Sequence[tuple[int, float, float, int]]) -> Rates:
    """Least-squares TTFT = fixed + a * prompt_tokens, and the median decode time per token.

    `samples` are (prompt_tokens, ttft_s, e2e_s, completion_tokens) of cold requests sent one at a time."""
    if len({s[0] for s in samples}) < 2:
        raise ValueError("calibration needs cold requests of at least two prompt lengths")
    xs = [float(s[0]) for s in samples]
    ys = [s[1] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    slope = max(slope, 0.0)
    fixed = max(my - slope * mx, 0.0)
    per_token = sorted((e2e - ttft) / (n - 1) for _, ttft, e2e, n in samples if n and n > 1)
    decode = per_token[len(per_token) // 2] if per_token else 0.0
    return Rates(fixed, slope, decode)


def uncached_tokens(prompt: dict, mode: str) -> int:
    cached = (prompt.get("expected_cached_tokens") or 0) if mode == ON else 0
    return prompt["prompt_len_tokens"] - cached


def point_seconds(
    rates: Rates, prompts: Sequence[dict], mode: str, concurrency: int, request_rate: float, max_tokens: int
) -> float:
    """Estimated duration of one pass over `prompts`.

    Prefill work adds up (a CPU engine computes one batch at a time); decode steps are shared by the
    requests in flight; an open-loop point lasts at least as long as its arrivals."""
    if not prompts:
        return 0.0
    prefill = sum(rates.fixed_s + rates.prefill_s_per_token * uncached_tokens(p, mode) for p in prompts)
    width = concurrency if concurrency else max(1, len(prompts))
    decode = rates.decode_s_per_token * max(max_tokens - 1, 0) * math.ceil(len(prompts) / min(width, len(prompts)))
    work = prefill + decode
    return max(work, len(prompts) / request_rate) if request_rate else work


def choose(prompts: Sequence[dict], n: int, reuse_pct: int) -> list[dict]:
    """The first `n` prompts of a reuse level that keep its mix (shared vs unique prefixes), in request order.

    The first shared prompt stays first among the shared ones, so the cold/warm expectation holds."""
    if n >= len(prompts):
        return list(prompts)
    shared = [p for p in prompts if p.get("prefix_group") == "shared"]
    unique = [p for p in prompts if p.get("prefix_group") != "shared"]
    n_shared = min(len(shared), round(n * reuse_pct / 100))
    if 0 < reuse_pct < 100 and n >= 2:
        n_shared = min(max(n_shared, 1), n - 1, len(shared))
    n_unique = min(len(unique), n - n_shared)
    n_shared = min(len(shared), n - n_unique)
    picked = shared[:n_shared] + unique[:n_unique]
    return sorted(picked, key=lambda p: p["request_index"])


@dataclass(frozen=True)
class PlannedPoint:
    regime: str
    reuse_pct: int
    concurrency: int
    request_rate: float
    available: int
    request_indices: tuple[int, ...]
    estimated_s: dict[str, float]  # per cache setting, all repeats
    dropped: str | None = None  # why the point is not measured (too small for a window, or the time budget)


# Rounds a closed-loop pass spends outside its steady-state window (stats.steady_window): the opening burst of c
# requests, sent together, and the drain, whose requests finish after the first worker ran out of work.
OUTSIDE_WINDOW_ROUNDS = 2


def min_requests(concurrency: int, min_rounds: int) -> int:
    """The fewest requests that give a point `min_rounds` rounds inside its steady-state window.

    At c = 1 every request but the first after idle is in the window (so min_rounds + 1, at least 2); at c > 1 the
    first and the last round fall outside it, so min_rounds + 2 rounds; open loop: 4 arrivals."""
    if not concurrency:
        return 4
    if concurrency == 1:
        return max(2, min_rounds + 1)
    return concurrency * (min_rounds + OUTSIDE_WINDOW_ROUNDS)


def drop_order(
    points: Sequence[tuple[str, int, int, float]], prefix_len: dict[str, int], shapes: frozenset[str] = frozenset()
) -> list[int]:
    """Which points a budget too small for every point's window gives up first (indices into `points`).

    Closed-loop points above the lowest concurrency go first: the mixed reuse levels, then 0% reuse, then full
    reuse; within each, the highest concurrency and the shortest prefix first. Then, at the lowest concurrency, the
    mixed reuse levels, then the shorter prefixes whole (a regime: its 0% point, then its full-reuse one; workload
    shapes, which answer a question of their own, after the single-prefix regimes). The
    longest prefix at full reuse (the headline) and its 0%-reuse control (both arms of the paired design miss) at
    the lowest concurrency always stay."""
    closed = [c for _, _, c, rate in points if c and not rate]
    if not closed:
        return []
    c_min, top = min(closed), max(r for _, r, _, _ in points)
    longest = max((prefix_len.get(r, 0) for r, _, c, rate in points if c == c_min and not rate), default=0)
    above = [i for i, (_, _, c, rate) in enumerate(points) if c > c_min and not rate]
    low = [i for i, (_, _, c, rate) in enumerate(points) if c == c_min and not rate]
    mixed = [i for i in low if 0 < points[i][1] < top]
    shorter = [i for i in low if i not in mixed and prefix_len.get(points[i][0], 0) < longest]

    def key(i: int) -> tuple:
        regime, reuse, conc, _ = points[i]
        return (reuse == top, reuse == 0, -conc, prefix_len.get(regime, 0))

    def regime_key(i: int) -> tuple:
        regime, reuse, _, _ = points[i]
        return (regime in shapes, prefix_len.get(regime, 0), regime, reuse == top)

    return sorted(above, key=key) + sorted(mixed, key=key) + sorted(shorter, key=regime_key)


def too_small(point: tuple[str, int, int, float], available: int, shape: bool, min_rounds: int) -> str | None:
    """Why a closed-loop point's questions cannot fill its steady-state window (None: they can)."""
    _, _, conc, rate = point
    need = min_requests(conc, min_rounds)
    if shape or rate or conc <= 1 or available >= need:
        return None
    return f"{min_rounds} round(s) inside a steady-state window at c={conc} need {need} requests; the point has {available}"


def fit_budget(
    points: Sequence[tuple[str, int, int, float]],
    shape: Sequence[bool],
    prefix_len: dict[str, int],
    budget_s: float | None,
    dropped: dict[int, str],
    planned: Callable[[float, dict[int, str]], list[PlannedPoint]],
    fits: Callable[[list[PlannedPoint]], bool],
    steps: int,
) -> tuple[float, list[PlannedPoint]]:
    """make_plan's fit to the budget: the common fraction of every kept point's requests, with the plan at it; the
    points it had to drop are added to `dropped`."""
    chosen = planned(1.0, dropped)
    if budget_s is None or fits(chosen):
        return 1.0, chosen
    why = f"the {fmt_duration(budget_s)} time budget cannot hold every point at its minimum"
    names = frozenset(r for i, (r, _, _, _) in enumerate(points) if shape[i])
    order = [i for i in drop_order(points, prefix_len, names) if i not in dropped]
    # 1. Drop points in drop_order until every remaining point fits at its minimum size.
    budget_drops = []
    for i in order:
        if fits(planned(1 / steps, dropped)):
            break
        dropped[i] = why
        budget_drops.append(i)
    # 2. Take back, most valuable first, every dropped point that still fits at its minimum: a point costs its
    # minimum, so a cheap one dropped before an expensive one may fit once the expensive one is gone.
    for i in reversed(budget_drops):
        del dropped[i]
        if not fits(planned(1 / steps, dropped)):
            dropped[i] = why
    # 3. The largest common share of every kept point's requests that fits.
    for k in range(steps, 0, -1):
        fraction, chosen = k / steps, planned(k / steps, dropped)
        if fits(chosen):
            break
    return fraction, chosen


def make_plan(
    rates: Rates,
    points: Sequence[tuple[str, int, int, float]],
    prompts_by_regime: dict[str, list[dict]],
    budget_s: float | None,
    max_tokens: int,
    repeats: int,
    min_rounds: int,
    instances: int = 1,
    steps: int = 100,
    paired: bool = False,
) -> dict:
    """The largest common fraction of every point's requests whose slower cache setting fits `budget_s`.

    No closed-loop point is trimmed below `min_rounds` rounds inside its steady-state window (min_requests): a point
    whose questions cannot fill that window is dropped, and where even every point's minimum does not fit the
    budget, points are dropped in `drop_order` until it does. Dropped points are listed with their reason. The
    budget covers all `instances` lifetimes of a setting; a point's `estimated_s` is one lifetime's.

    With `paired`, a cache-on lifetime sends every single-prefix closed-loop point twice (hits, and the same prompts
    as forced misses: prefixbench.paired), so its estimate adds a cache-off pass, such a point keeps at least
    paired.min_paired_requests of its prompts, and the fraction scales a pair count common to the paired points
    rather than each one's prompts (`share`)."""
    pools = [[p for p in prompts_by_regime[regime] if p["reuse_pct"] == reuse] for regime, reuse, _, _ in points]
    shape = [bool(pool) and "block_hashes" in pool[0] for pool in pools]
    both_arms = [paired and not shape[i] and c > 0 and not rate for i, (_, _, c, rate) in enumerate(points)]

    def floor(i: int) -> int:
        conc = points[i][2]
        return max(min_requests(conc, min_rounds), min_paired_requests(conc) if both_arms[i] else 0)

    def seconds(i: int, chosen: list[dict], mode: str) -> float:
        _, _, conc, rate = points[i]
        one = point_seconds(rates, chosen, mode, conc, rate, max_tokens)
        miss = point_seconds(rates, chosen, OFF, conc, rate, max_tokens) if both_arms[i] and mode == ON else 0.0
        return repeats * (one + miss)

    prefix_len = {r: ps[0].get("prefix_len_tokens", 0) for r, ps in prompts_by_regime.items() if ps}
    # A paired point's precision is its number of hit/miss sub-block pairs (its MDE shrinks with their square root),
    # and a sub-block holds 2 requests at c = 1 but 2c above: a common share of every pool would leave c = 16 with a
    # sixteenth of c = 1's pairs. So paired points share a common pair count instead (fraction x the most pairs any
    # of them could run, capped by each one's prompts): the cheap, pair-rich c = 1 points give way first.
    unit = [sub_block_size(c) if both_arms[i] else 1 for i, (_, _, c, _) in enumerate(points)]
    most_pairs = max((len(pools[i]) // unit[i] for i in range(len(points)) if both_arms[i]), default=0)

    def share(i: int, fraction: float) -> int:
        if both_arms[i]:
            return min(len(pools[i]), unit[i] * math.ceil(fraction * most_pairs))
        return math.ceil(fraction * len(pools[i]))

    def planned(fraction: float, dropped: dict[int, str]) -> list[PlannedPoint]:
        out = []
        for i, (regime, reuse, conc, rate) in enumerate(points):
            pool = pools[i]
            if i in dropped:
                out.append(PlannedPoint(regime, reuse, conc, rate, len(pool), (), {m: 0.0 for m in MODES}, dropped[i]))
                continue
            n = max(min(len(pool), floor(i)), share(i, fraction))
            if shape[i]:  # a workload shape is never trimmed: its sessions and order are the test
                n = len(pool)
            chosen = choose(pool, n, reuse)
            est = {m: seconds(i, chosen, m) for m in MODES}
            out.append(PlannedPoint(regime, reuse, conc, rate, len(pool), tuple(p["request_index"] for p in chosen), est))
        return out

    def total(pts: list[PlannedPoint]) -> dict[str, float]:
        return {m: instances * sum(p.estimated_s[m] for p in pts) for m in MODES}

    def fits(pts: list[PlannedPoint]) -> bool:
        return budget_s is None or max(total(pts).values()) <= budget_s

    dropped = {i: why for i in range(len(points)) if (why := too_small(points[i], len(pools[i]), shape[i], min_rounds))}
    fraction, chosen = fit_budget(points, shape, prefix_len, budget_s, dropped, planned, fits, steps)
    est = total(chosen)
    measured = [p for p in chosen if p.dropped is None]
    trimmed = any(len(p.request_indices) < p.available for p in measured)
    return {
        "budget_s": budget_s,
        "min_rounds": min_rounds,
        "rates": asdict(rates),
        "fraction": fraction,
        "trimmed": trimmed,
        "over_budget": budget_s is not None and max(est.values()) > budget_s,
        "estimated_s": est,
        "full_estimated_s": total(planned(1.0, {})),
        "instances": instances,
        "requests_planned": sum(len(p.request_indices) for p in measured) * repeats * instances,
        "requests_full": sum(p.available for p in chosen) * repeats * instances,
        "points": [asdict(p) for p in chosen],
        "paired_pairs": math.ceil(fraction * most_pairs) if any(both_arms) else None,
        "dropped": [
            {"regime": p.regime, "reuse_pct": p.reuse_pct, "concurrency": p.concurrency, "reason": p.dropped}
            for p in chosen
            if p.dropped
        ],
    }


def plan_summary(plan: dict) -> str:
    """One sentence for the console and the report: what the budget did, and the speed it was planned from."""
    r = plan["rates"]
    speed = (
        f"; calibrated on cold requests: {r['fixed_s'] * 1e3:.0f} ms fixed + {r['prefill_s_per_token'] * 1e3:.2f} ms "
        f"per prompt token, {r['decode_s_per_token'] * 1e3:.0f} ms per output token"
    )
    return _budget_sentence(plan) + speed + dropped_sentence(plan.get("dropped", []))


def dropped_sentence(dropped: Sequence[dict]) -> str:
    """The points the plan gave up, grouped by reason: measured noise would read as a result, so they are not sent."""
    if not dropped:
        return ""
    by_reason: dict[str, list[str]] = {}
    for d in dropped:
        by_reason.setdefault(d["reason"], []).append(f"{d['regime']} reuse {d['reuse_pct']}% c={d['concurrency']}")
    return ". Not measured: " + "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())


def _budget_sentence(plan: dict) -> str:
    est, full = plan["estimated_s"], plan["full_estimated_s"]
    slow = max(full.values())
    if plan["budget_s"] is None:
        return f"no time budget: every request is sent (about {fmt_duration(slow)} for the slower cache setting)"
    if not plan["trimmed"]:
        return (
            f"the full sweep fits the {fmt_duration(plan['budget_s'])} budget (about {fmt_duration(slow)} "
            "for the slower cache setting): nothing trimmed"
        )
    over = " (the smallest honest sweep still exceeds the budget)" if plan["over_budget"] else ""
    kept = [p for p in plan["points"] if not p.get("dropped")]
    at_floor = plan["fraction"] * max((p["available"] for p in kept), default=0) < min(
        (len(p["request_indices"]) for p in kept), default=0
    )
    if plan.get("paired_pairs"):  # plans written before paired points shared a pair count lack the key
        at_floor = plan["fraction"] <= 0.01
    # The share of requests sent is the plan's whole: each point keeps the larger of the common fraction and its
    # minimum, so the fraction alone (1% when most points sit at their minimum) is not what was sent.
    sent = plan["requests_planned"] / plan["requests_full"] if plan["requests_full"] else 1.0
    how = (
        "each point at its minimum"
        if at_floor
        else f"each point the larger of {plan['fraction']:.0%} of its requests and its minimum"
    )
    pairs = ""
    if plan.get("paired_pairs") and not at_floor:
        pairs = f"; a paired point up to {plan['paired_pairs']} hit/miss pairs, the same for every one"
    return (
        f"the full sweep would take about {fmt_duration(slow)} for the slower cache setting, over the "
        f"{fmt_duration(plan['budget_s'])} budget, so the points send {plan['requests_planned']} of their "
        f"{plan['requests_full']} requests ({sent:.0%}: {how}, at least {plan.get('min_rounds', 1)} round(s) inside "
        f"its steady-state window and, where it runs paired, 3 hit/miss pairs{pairs}; the same requests in both settings, "
        f"each point's reuse mix kept): about {fmt_duration(max(est.values()))}{over}"
    )


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    h, minutes = divmod(minutes, 60)
    return f"{h} h {minutes:02d} min"


@dataclass
class Eta:
    """Elapsed time and an estimate of the rest, corrected by how the estimates have fared so far."""

    estimates_s: list[float]  # one per point, in the order they run
    done_s: float = 0.0
    done_estimated_s: float = 0.0
    finished: int = 0

    def point_done(self, actual_s: float) -> None:
        self.done_estimated_s += self.estimates_s[self.finished]
        self.done_s += actual_s
        self.finished += 1

    def remaining_s(self) -> float:
        rest = sum(self.estimates_s[self.finished :])
        scale = self.done_s / self.done_estimated_s if self.done_estimated_s > 0 else 1.0
        return rest * scale
