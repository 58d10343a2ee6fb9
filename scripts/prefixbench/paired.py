"""The cache's effect measured inside one server lifetime: hit and forced-miss sub-blocks, paired and counterbalanced.

Two lifetimes of one server can differ by 25-40% on identical work (an H200 host; 2-5% on a CPU), so a cache
effect measured across lifetimes drowns in that noise. Inside a cache-on lifetime, vLLM's per-request `cache_salt`
makes a request miss on purpose: a fresh salt shares no block with anything cached. So every point of a cache-on
lifetime runs as alternating sub-blocks of the *hit arm* (the traffic as designed) and the *miss arm* (the same
prompts, each with a unique salt), in a counterbalanced order (H M M H H M ...), as one closed loop at the point's
concurrency, so the level never drops between sub-blocks. Each pair of sub-blocks sends the same prompts in both
arms; its log-ratio miss/hit of mean TTFT is one observation, and lifetime-level shifts cancel inside it.

The contrast is the mean of the pairs' log-ratios with a t interval (pairs - 1 degrees of freedom), and every
contrast states its minimum detectable effect at 80% power from its own variance. With two salted arms (`miss_miss`)
the same machinery is an A/A test: it must claim nothing. The simulation in tests/unit/test_paired.py shows the interval
covers at the noise sizes measured on an H200 (lifetime, sub-block and request level).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HIT, MISS, MISS_B = "hit", "miss", "miss_b"
DESIGNS = {"hit_miss": (HIT, MISS), "miss_miss": (MISS, MISS_B)}  # benchmark.paired; `none` runs the point once
SALTED = (MISS, MISS_B)
LEVEL, POWER = 0.95, 0.80


def sub_block_size(concurrency: int) -> int:
    """Requests per sub-block: at c = 1, 2 (requests run one at a time, so nothing of one arm overlaps the other,
    and more, smaller pairs give the t interval more degrees of freedom for the same requests); above, two rounds
    (the first c - 1 of a sub-block overlap the previous arm's requests still in flight and are left out, so each
    sub-block keeps c + 1 clean requests)."""
    return 2 if concurrency <= 1 else 2 * concurrency


def min_paired_requests(concurrency: int) -> int:
    """The fewest prompts a paired point sends in each arm: 12 at c = 1 (6 pairs; the first request after idle
    leaves one of them short), 3 pairs above: a t interval needs a few degrees of freedom to say anything."""
    return 12 if concurrency <= 1 else 3 * sub_block_size(concurrency)


@dataclass(frozen=True)
class Send:
    """One request of a paired pass: which prompt, which arm, which sub-block and pair, and its salt (miss arms)."""

    request_index: int
    arm: str
    sub_block: int
    pair: int
    salt: str | None


def mixed_order(prompts: Sequence[dict]) -> list[int]:
    """The prompts' request indices with each prefix group spread evenly over the pass (shared and unique prompts of
    a 50%-reuse point alternate), each group in request order: every sub-block then carries the point's reuse mix,
    so pairs differ by noise, not by their share of hits."""
    groups: dict[bool, list[int]] = {}
    for p in sorted(prompts, key=lambda p: p["request_index"]):
        groups.setdefault(p.get("prefix_group") == "shared", []).append(p["request_index"])
    keyed = [((k + 0.5) / len(g), shared, i) for shared, g in groups.items() for k, i in enumerate(g)]
    return [i for *_, i in sorted(keyed, key=lambda x: (x[0], not x[1]))]


def schedule(request_indices: Sequence[int], concurrency: int, salt_prefix: str, design: str = "hit_miss") -> list[Send]:
    """The sends of one paired pass, in order: the prompts cut into chunks of `sub_block_size`, each chunk sent once
    in each arm, the arms' order alternating pair by pair (A B, B A, A B, ...): counterbalanced, so a drift over the
    pass favours neither arm. A last chunk shorter than half a sub-block joins the one before it."""
    arms = DESIGNS[design]
    b = sub_block_size(concurrency)
    idx = list(request_indices)
    chunks = [idx[i : i + b] for i in range(0, len(idx), b)]
    if len(chunks) > 1 and len(chunks[-1]) < b / 2:
        last = chunks.pop()
        chunks[-1] = chunks[-1] + last
    sends, block = [], 0
    for pair, chunk in enumerate(chunks):
        for arm in arms if pair % 2 == 0 else arms[::-1]:
            for i in chunk:
                salt = f"{salt_prefix}-{arm}-{block}-{i}" if arm in SALTED else None
                sends.append(Send(i, arm, block, pair, salt))
            block += 1
    return sends


def clean(arms: Sequence[str], sub_blocks: Sequence[int], send_order: Sequence[int], concurrency: int) -> list[bool]:
    """Which sends of a paired pass measure their own arm: not the first send of the pass (the first request after
    idle is slower), and not the first c - 1 sends of a sub-block after the first (requests of the previous arm are
    still in flight beside them). The pass's steady-state window (stats.steady_window) applies on top."""
    order = np.argsort(np.asarray(send_order), kind="stable")
    keep = [True] * len(order)
    seen: dict[int, int] = {}
    first_block = sub_blocks[order[0]] if len(order) else None
    for rank, i in enumerate(order):
        k = seen.get(sub_blocks[i], 0)
        seen[sub_blocks[i]] = k + 1
        if rank == 0 or (sub_blocks[i] != first_block and k < concurrency - 1):
            keep[i] = False
    return keep


@dataclass(frozen=True)
class Contrast:
    """miss/hit mean TTFT (> 1: the cache helped), its interval and the smallest effect the design could see."""

    ratio: float | None
    lo: float | None
    hi: float | None
    pairs: int
    sd_log: float | None  # SD of the pairs' log-ratios
    mde_pct: float | None  # minimum detectable effect at 80% power, two-sided 5%, in percent of the ratio


def t_quantile(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def contrast(log_ratios: Sequence[float]) -> Contrast:
    """The paired contrast from each pair's log(mean miss TTFT / mean hit TTFT).

    Mean log-ratio with a t interval on pairs - 1 degrees of freedom; MDE = exp((t_0.975 + t_0.80) x SE) - 1. With
    fewer than 2 pairs there is a ratio and nothing else; with an SD of 0 (identical pairs) the interval is the point."""
    d = np.asarray([x for x in log_ratios if x is not None and math.isfinite(x)], dtype=float)
    n = len(d)
    if n == 0:
        return Contrast(None, None, None, 0, None, None)
    mean = float(d.mean())
    if n < 2:
        return Contrast(math.exp(mean), None, None, n, None, None)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    t_level = t_quantile(1 - (1 - LEVEL) / 2, n - 1)
    half = t_level * se
    mde = (math.exp((t_level + t_quantile(POWER, n - 1)) * se) - 1) * 100
    return Contrast(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n, sd, mde)


MIN_COMMON = 2  # prompts a pair must have clean in both arms to count


def pair_log_ratios(
    ttft: Sequence[float],
    arms: Sequence[str],
    pairs: Sequence[tuple],
    design: str = "hit_miss",
    prompts: Sequence[int] | None = None,
) -> list[float]:
    """log(mean TTFT of arm B / mean TTFT of arm A) per pair (B = miss, A = hit; for A/A the second salted arm over
    the first), from the clean, successful requests of the prompts clean in *both* arms (with `prompts`, each
    request's prompt index): the drain and the overlap at a switch cut different prompts from the two arms, and a
    pair of different prompts would compare their mix, not the cache. A pair with fewer than MIN_COMMON such
    prompts is left out."""
    a, b = DESIGNS[design]
    by: dict[tuple, dict[str, dict[int, float]]] = {}
    for k, (t, arm, key) in enumerate(zip(ttft, arms, pairs)):
        if t is None:
            continue
        by.setdefault(key, {}).setdefault(arm, {})[prompts[k] if prompts is not None else k] = t
    out = []
    for arms_of in by.values():
        first, second = arms_of.get(a, {}), arms_of.get(b, {})
        if prompts is not None:
            common = set(first) & set(second)
            xs, ys = [first[i] for i in common], [second[i] for i in common]
            if len(common) < MIN_COMMON:
                continue
        else:
            xs, ys = list(first.values()), list(second.values())
        if xs and ys:
            out.append(math.log(np.mean(ys) / np.mean(xs)))
    return out


# --- The paired design in a run's records (polars): which requests count, and the contrast per point. ---

POINT = ["regime", "reuse_pct", "concurrency", "request_rate"]
ARM_COLUMNS = {"arm": "String", "sub_block": "Int64", "pair": "Int64", "send_index": "Int64"}


def with_arm_columns(records):
    """Records from before the paired design (or of unpaired points) get null arm columns."""
    import polars as pl

    missing = [c for c in ARM_COLUMNS if c not in records.columns]
    return records.with_columns(pl.lit(None, dtype=getattr(pl, ARM_COLUMNS[c])).alias(c) for c in missing)


def main_arm_filter():
    """The requests that stand for their point's setting in the summary: unpaired ones, and the first arm of a
    paired pass (hit; in an A/A pass, the first salted arm). The other arm enters only the paired contrast."""
    import polars as pl

    has_hit = (pl.col("arm") == HIT).any().over(["mode", *POINT])
    return pl.col("arm").is_null() | (pl.col("arm") == HIT) | (~has_hit & (pl.col("arm") == MISS))


def arm_walls(records, meta):
    """For paired points, the main arm's share of the pass's wall time, in place of the whole of it, so its
    throughput is the main arm's own; and its hit rate from the main arm's per-request cached tokens (the server's
    counters cover both arms of the pass).

    Both arms run in one closed loop, so their sub-blocks overlap at every switch: the main arm's share of the wall
    is its share of the requests' busy time (summed end-to-end latencies), not the sum of its sub-blocks' spans."""
    import polars as pl

    paired_points = records.filter(pl.col("arm").is_not_null())
    if paired_points.is_empty():
        return meta
    on = ["mode", *POINT, "instance"]
    main = paired_points.filter(main_arm_filter())
    busy = paired_points.group_by(on).agg(
        (pl.col("e2e_s").filter(main_arm_filter()).sum() / pl.col("e2e_s").sum()).alias("arm_share")
    )
    ok = main.filter(pl.col("status") == "ok")
    hits = ok.group_by(on).agg(
        (pl.col("cached_tokens").cast(pl.Float64).sum() / pl.col("prompt_tokens").cast(pl.Float64).sum()).alias("arm_hit"),
        pl.col("prompt_tokens").cast(pl.Float64).sum().alias("arm_queries"),
    )
    sent = main.group_by(on).agg(pl.len().alias("arm_sent"))
    out = meta.join(busy, on=on, how="left").join(hits, on=on, how="left").join(sent, on=on, how="left")
    shares = out["arm_share"].fill_null(1.0).to_list()
    return out.with_columns(
        pl.coalesce("arm_sent", "requests_sent").alias("requests_sent"),
        pl.Series("wall_s", [w * f for w, f in zip(out["wall_s"].to_list(), shares)], dtype=pl.Float64),
        pl.Series(
            "wall_s_per_repeat",
            [[w * f for w in ws] for ws, f in zip(out["wall_s_per_repeat"].to_list(), shares)],
            dtype=pl.List(pl.Float64),
        ),
        pl.coalesce("arm_hit", "measured_hit_rate").alias("measured_hit_rate"),
        # The server's hits (a salted request hits nothing) over the hit arm's prompt tokens: its hit rate.
        pl.when(pl.col("arm_queries").is_not_null() & pl.col("query_tokens").is_not_null())
        .then(pl.col("arm_queries"))
        .otherwise(pl.col("query_tokens"))
        .alias("query_tokens"),
    ).drop("arm_share", "arm_hit", "arm_sent", "arm_queries")


def paired_table(records):
    """One row per paired point: the contrast (miss/hit mean TTFT, > 1 = the cache helped) over every pair of every
    pass and lifetime, its t interval and MDE, and what the salted arm hit (must be 0)."""
    import polars as pl

    paired = records.filter(pl.col("arm").is_not_null() & (pl.col("mode") == "with_prefix_cache"))
    schema = {
        "regime": pl.String,
        "reuse_pct": pl.Int64,
        "concurrency": pl.Int64,
        "request_rate": pl.Float64,
        "paired_design": pl.String,
        "paired_ratio": pl.Float64,
        "paired_lo": pl.Float64,
        "paired_hi": pl.Float64,
        "paired_pairs": pl.Int64,
        "paired_sd_log": pl.Float64,
        "mde_ttft_pct": pl.Float64,
        "paired_mean_hit_s": pl.Float64,
        "paired_mean_miss_s": pl.Float64,
        "salted_cached_tokens": pl.Int64,
        "salted_requests": pl.Int64,
        "salted_failed": pl.Int64,
    }
    rows = []
    for key, grp in paired.group_by(POINT, maintain_order=True):
        arms = set(grp["arm"].drop_nulls().to_list())
        design = "hit_miss" if HIT in arms else "miss_miss"
        ok = grp.filter((pl.col("status") == "ok") & pl.col("in_window"))
        pairs = list(zip(ok["instance"].to_list(), ok["repeat"].to_list(), ok["pair"].to_list()))
        prompts = ok["request_index"].to_list()
        c = contrast(pair_log_ratios(ok["ttft_s"].to_list(), ok["arm"].to_list(), pairs, design, prompts))
        salted = grp.filter(pl.col("arm").is_in(list(SALTED)) & (pl.col("status") == "ok"))
        second_arm = grp.filter(pl.col("arm") == DESIGNS[design][1])  # ok or failed: the summary counts the first
        first, second = DESIGNS[design]
        rows.append(
            dict(zip(POINT, key))
            | {
                "paired_design": design,
                "paired_ratio": c.ratio,
                "paired_lo": c.lo,
                "paired_hi": c.hi,
                "paired_pairs": c.pairs,
                "paired_sd_log": c.sd_log,
                "mde_ttft_pct": c.mde_pct,
                "paired_mean_hit_s": ok.filter(pl.col("arm") == first)["ttft_s"].mean(),
                "paired_mean_miss_s": ok.filter(pl.col("arm") == second)["ttft_s"].mean(),
                "salted_cached_tokens": int(salted["cached_tokens"].fill_null(0).sum()),
                "salted_requests": second_arm.height,
                "salted_failed": int((second_arm["status"] != "ok").sum()),
            }
        )
    return pl.DataFrame(rows, schema=schema)


def flag_cost_table(main):
    """What enabling the flag costs, per 0%-reuse point: mean TTFT with the cache on over off, where nothing can hit
    (the main arm of a 0%-reuse point shares no prefix), with server lifetimes as the unit: lifetime k of one
    setting against lifetime k of the other (they run interleaved, ABBA), a t interval on k - 1 degrees of freedom.
    One lifetime per setting gives a ratio and no interval: the noise between lifetimes is then unmeasured."""
    import polars as pl

    zero = main.filter((pl.col("reuse_pct") == 0) & (pl.col("status") == "ok") & pl.col("in_window"))
    schema = {
        "regime": pl.String,
        "reuse_pct": pl.Int64,
        "concurrency": pl.Int64,
        "request_rate": pl.Float64,
        "flag_cost_ratio": pl.Float64,
        "flag_cost_lo": pl.Float64,
        "flag_cost_hi": pl.Float64,
        "flag_cost_lifetimes": pl.Int64,
        "flag_cost_mde_pct": pl.Float64,
    }
    if zero.is_empty():
        return pl.DataFrame(schema=schema)
    means = zero.group_by([*POINT, "mode", "instance"]).agg(pl.col("ttft_s").mean().alias("m"))
    on = means.filter(pl.col("mode") == "with_prefix_cache").drop("mode").rename({"m": "on"})
    off = means.filter(pl.col("mode") == "no_prefix_cache").drop("mode").rename({"m": "off"})
    both = on.join(off, on=[*POINT, "instance"], how="inner")
    rows = []
    for key, grp in both.group_by(POINT, maintain_order=True):
        c = contrast([math.log(a / b) for a, b in zip(grp["on"].to_list(), grp["off"].to_list()) if a and b])
        rows.append(
            dict(zip(POINT, key))
            | {
                "flag_cost_ratio": c.ratio,
                "flag_cost_lo": c.lo,
                "flag_cost_hi": c.hi,
                "flag_cost_lifetimes": c.pairs,
                "flag_cost_mde_pct": c.mde_pct,
            }
        )
    return pl.DataFrame(rows, schema=schema)
