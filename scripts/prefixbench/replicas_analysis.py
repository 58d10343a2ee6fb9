"""Across replicas (issue 23): every request of every routing policy with the cache model replayed per replica, the
three hit rates of each policy and point, the policies' contrasts, and the policy simulator beside the measurement.

Behind a router each replica is one vLLM server with its own KV pool, so a request can hit only what the router
sent to the same replica before it. Per pass (one policy, one repeat of one lifetime) three hit rates, token-weighted,
tell apart where reuse is lost:

- *in the traffic*: one unlimited cache over every request of the pass: the reuse the workload offers;
- *kept by the routing*: each replica's own unlimited cache over the requests the router sent it;
- *delivered*: measured (the replicas' `cached_tokens`) and predicted (each replica's requests replayed with its real
  KV capacity and the requests' actual send and end times: shapes.results.with_predictions, as for one server).

A replica's cache (kept and predicted) is replayed in the order that replica received its requests (the records'
`replica_seq`, from its request log; shapes.results.arrival_starts), not the order they were sent: the router can
swap two requests sent a millisecond apart (cache_aware has every worker tokenize each request first), and then the
later-sent one computes the shared blocks. The traffic's one cache keeps the send order.

Every replay is kvcache's model. An "unlimited" cache is one with a block for every block the pass's requests hold:
it never evicts (a cached block reaches the head of the free queue only after every other block was taken once), so
it equals kvcache.replay with shapes.common.UNLIMITED_BLOCKS at a cost in proportion to the pass, not to a million.

The policy simulator (prefixbench.routing) predicts each request's replica from the same requests; its hit rates go
beside the measured ones, and its curve over 1 to 64 replicas on the Mooncake trace is labelled a simulation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl

from . import ON
from .findings.claims import interval_gap, judge
from .paired import LEVEL, contrast, main_arm_filter, t_quantile
from .router_run import SIM_PARAMS, TRACE, RouterRun, router_run  # noqa: F401  (re-exported: the edges import them here)
from .shapes.results import PASS, replayed, with_predictions

PASS_KEYS = [*PASS, "policy"]  # one pass: one repeat of one lifetime at one point under one routing policy
CACHE_KEYS = [*PASS_KEYS, "replica"]  # one cache: a replica's KV pool during a pass
POINT_KEYS = ["regime", "workload", "reuse_pct", "concurrency", "request_rate"]
HASH_KEY = ("regime", "reuse_pct", "request_index")  # a regime's prompt file has one prompt per reuse level and index
RATES = ("traffic", "kept", "predicted", "measured")  # the three hit rates, delivered as predicted and as measured
CURVE_REPLICAS = (1, 2, 4, 8, 16, 32, 64)  # the simulator's curve on the trace
REQUEST_COLUMNS = [
    *PASS_KEYS,
    "workload",
    "request_index",
    "request_id",
    "replica",
    "replica_seq",
    "replica_unknown",
    "session_key",
    "kv_blocks",
    "status",
    "in_window",
    "arm",
    "start_s",
    "ttft_s",
    "e2e_s",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "traffic_cached_tokens",
    "kept_cached_tokens",
    "predicted_cached_tokens",
    "unpredicted",
]


# --- Every request, with the three replays ---


def load_point_hashes(prompt_paths: Iterable[Path]) -> dict[tuple, list[str]]:
    """(regime, reuse_pct, request_index) -> the prompt's block hashes, for regime and shape prompt files alike."""
    out: dict[tuple, list[str]] = {}
    for path in prompt_paths:
        for line in Path(path).read_text().splitlines():
            if line.strip() and "block_hashes" in (rec := json.loads(line)):
                out[(rec["regime"], rec.get("reuse_pct", 100), rec["request_index"])] = rec["block_hashes"]
    return out


def unlimited_blocks(grp: pl.DataFrame, block_size: int) -> int:
    """A cache with a block for every block the requests hold at once or in turn: it never evicts (module docstring)."""
    tokens = grp["prompt_tokens"].fill_null(0) + (grp["completion_tokens"].fill_null(1) - 1).clip(lower_bound=0)
    return int(((tokens + block_size - 1) // block_size).sum()) + 2


def per_group(df: pl.DataFrame, keys: Sequence[str], values: Callable[[pl.DataFrame], list]) -> list:
    """`values` of each group of `keys`, put back in the rows' order (df carries a `_row` column)."""
    out: list = [None] * df.height
    for _, grp in df.group_by(list(keys), maintain_order=True):
        for row, value in zip(grp["_row"].to_list(), values(grp)):
            out[row] = value
    return out


def replica_requests(records: pl.DataFrame, hashes: Mapping[tuple, Sequence[str]], block_size: int) -> pl.DataFrame:
    """Every request of every policy behind the router (records with a policy; empty without a router), with its
    cached tokens in the traffic, kept by the routing and predicted for its replica (module docstring)."""
    routed = records.filter(pl.col("policy").is_not_null()) if "policy" in records.columns else records.clear()
    if routed.is_empty():
        return pl.DataFrame()
    for col, dtype in (("replica", pl.Int64), ("replica_unknown", pl.String), ("session_key", pl.String)):
        if col not in routed.columns:
            routed = routed.with_columns(pl.lit(None, dtype=dtype).alias(col))
    routed = routed.with_row_index("_row")

    def unlimited(grp: pl.DataFrame, arrival: bool = False) -> list:
        return replayed(grp, hashes, block_size, unlimited_blocks(grp, block_size), HASH_KEY, arrival)[0]

    traffic = per_group(routed, PASS_KEYS, unlimited)  # one cache in front of the router: the send order
    kept = per_group(routed, CACHE_KEYS, lambda g: [None] * g.height if g["replica"][0] is None else unlimited(g, True))
    out = (
        with_predictions(routed, hashes, block_size, CACHE_KEYS, HASH_KEY)
        .sort("_row")
        .with_columns(
            pl.Series("traffic_cached_tokens", traffic, dtype=pl.Int64),
            pl.Series("kept_cached_tokens", kept, dtype=pl.Int64),
        )
    )
    return out.select([c for c in REQUEST_COLUMNS if c in out.columns])


# --- Per policy and point: the three hit rates, latency, throughput, load ---


def mean_interval(values: Sequence[float]) -> tuple[float | None, float | None]:
    """The 95% t interval of the mean of per-pass values (passes - 1 degrees of freedom); none from one pass."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) < 2:
        return None, None
    half = t_quantile(1 - (1 - LEVEL) / 2, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean()) - half, float(v.mean()) + half


def read_passes(meta_paths: Iterable[Path]) -> pl.DataFrame:
    """Each policy pass the point metadata recorded (`replica_passes`): its wall time, the replicas' counters (under
    the engine's metric names) and peak KV usage (per replica where the sampler kept it, and the highest of any), the
    router's worker order; empty for single servers."""
    from .engines import engine_for

    rows = []
    for path in meta_paths:
        meta = json.loads(Path(path).read_text())
        names = engine_for(meta.get("engine") or "vllm").metrics
        for p in meta.get("replica_passes") or []:
            counters = p.get("counters_delta_per_replica") or []
            order = p.get("worker_order")
            rows.append(
                {
                    "mode": meta["mode"],
                    "instance": meta.get("instance", 1),
                    **{k: meta[k] for k in ("regime", "reuse_pct", "concurrency")},
                    "request_rate": float(meta.get("request_rate") or 0.0),
                    "repeat": p["repeat"],
                    "policy": p["policy"],
                    "order": p.get("order"),
                    "wall_s": p.get("wall_s"),
                    "hit_counter": sum(c.get(names.prefix_hits, 0.0) for c in counters) if counters else None,
                    "query_counter": sum(c.get(names.prefix_queries, 0.0) for c in counters) if counters else None,
                    # each replica's own hit counter: the attribution check compares it with its requests' cached tokens
                    "hit_counter_per_replica": "/".join(f"{c.get(names.prefix_hits, 0.0):.0f}" for c in counters) or None,
                    "peak_kv": "/".join(f"{x:.3g}" for x in p.get("peak_kv_cache_usage_per_replica") or []) or None,
                    "peak_kv_max": p.get("peak_kv_cache_usage"),  # the highest any replica reached (the sampler's peak)
                    "worker_order": "/".join(map(str, order)) if order else None,  # the router's GET /workers order
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def pass_rows(req: pl.DataFrame, passes: pl.DataFrame, replicas: int) -> pl.DataFrame:
    """One row per cache-on pass: the four hit rates over the main arm's placed requests, exact predictions (every ok
    request with a known replica, a paired pass's forced misses included: the cache model replays them too), the
    window's mean TTFT, output tokens per second of the pass's wall time, requests per replica."""
    on = req.filter(pl.col("mode") == ON)
    main = on.filter(main_arm_filter() & (pl.col("status") == "ok"))
    placed = main.filter(pl.col("replica").is_not_null())
    unit = [*PASS_KEYS, "workload"]
    sums = placed.group_by(unit).agg(
        pl.col("prompt_tokens").sum().alias("prompt_tokens"),
        *(pl.col(f"{r}_cached_tokens").sum().alias(f"{r}_tokens") for r in ("traffic", "kept", "predicted")),
        pl.col("cached_tokens").sum().alias("measured_tokens"),
    )
    checked = (
        on.filter((pl.col("status") == "ok") & pl.col("replica").is_not_null())
        .group_by(unit)
        .agg(
            pl.col("predicted_cached_tokens").is_not_null().sum().alias("predicted_requests"),
            (pl.col("predicted_cached_tokens") == pl.col("cached_tokens")).sum().alias("exact"),
            (pl.col("cached_tokens") > pl.col("predicted_cached_tokens")).sum().alias("measured_above"),
            (pl.col("cached_tokens") < pl.col("predicted_cached_tokens")).sum().alias("measured_below"),
            (pl.col("cached_tokens") - pl.col("predicted_cached_tokens")).abs().max().alias("max_diff_tokens"),
        )
    )
    lat = main.filter(pl.col("in_window")).group_by(unit).agg(pl.col("ttft_s").mean().alias("ttft_mean_s"))
    load = on.group_by(unit).agg(
        pl.len().alias("requests"),
        pl.col("replica").is_null().sum().alias("unattributed"),
        pl.col("completion_tokens").filter(pl.col("status") == "ok").sum().alias("tokens"),
        (pl.col("start_s") + pl.col("e2e_s")).max().alias("_end"),
        pl.col("start_s").min().alias("_start"),
        *(pl.col("replica").eq(r).sum().alias(f"_r{r}") for r in range(replicas)),
    )
    # Every request, every arm, by the replica it was attributed to: the cached tokens each replica's counter must show.
    attributed = (
        on.filter(pl.col("replica").is_not_null())
        .group_by(unit)
        .agg(
            pl.concat_str(
                [
                    pl.col("cached_tokens").filter(pl.col("replica") == r).fill_null(0).sum().cast(pl.String)
                    for r in range(replicas)
                ],
                separator="/",
            ).alias("attributed_cached_per_replica")
        )
    )
    out = (
        load.join(sums, on=unit, how="left")
        .join(checked, on=unit, how="left")
        .join(lat, on=unit, how="left")
        .join(attributed, on=unit, how="left")
    )
    if passes.height:
        out = out.join(passes, on=PASS_KEYS, how="left")
    else:
        out = out.with_columns(
            pl.lit(None, dtype=pl.Float64).alias(c) for c in ("wall_s", "hit_counter", "query_counter", "peak_kv_max")
        )
        out = out.with_columns(
            pl.lit(None, dtype=pl.String).alias(c) for c in ("peak_kv", "worker_order", "hit_counter_per_replica")
        )
    if "hit_counter_per_replica" not in out.columns:  # metadata written before the per-replica counters were kept
        out = out.with_columns(pl.lit(None, dtype=pl.String).alias("hit_counter_per_replica"))
    out = out.with_columns(
        pl.when(pl.col("hit_counter_per_replica").is_null())
        .then(None)
        .otherwise(pl.col("hit_counter_per_replica") == pl.col("attributed_cached_per_replica"))
        .alias("attribution_matches_counters")
    )
    wall = pl.coalesce(pl.col("wall_s").cast(pl.Float64), pl.col("_end") - pl.col("_start"))
    return out.sort(unit).with_columns(
        (pl.col("tokens") / wall).alias("tok_s"),
        *((pl.col(f"{r}_tokens") / pl.col("prompt_tokens")).alias(f"{r}_hit_rate") for r in RATES),
    )


def point_row(grp: pl.DataFrame, req: pl.DataFrame, replicas: int) -> dict[str, Any]:
    """One policy at one point over its passes: pooled hit rates with t intervals over the passes, TTFT and
    throughput with theirs, exact predictions, requests and peak KV usage per replica, the load imbalance."""
    row: dict[str, Any] = {"passes": grp.height, "requests": int(grp["requests"].sum())}
    row["unattributed"] = int(grp["unattributed"].sum())
    row["prompt_tokens"] = int(grp["prompt_tokens"].fill_null(0).sum())
    for r in RATES:
        tokens = grp[f"{r}_tokens"].drop_nulls()
        row[f"{r}_hit_rate"] = float(tokens.sum()) / row["prompt_tokens"] if row["prompt_tokens"] and tokens.len() else None
        row[f"{r}_hit_lo"], row[f"{r}_hit_hi"] = mean_interval(grp[f"{r}_hit_rate"].to_list())
    row["predicted_requests"] = int(grp["predicted_requests"].fill_null(0).sum())
    row["exact"] = int(grp["exact"].fill_null(0).sum())
    # The requests the model missed: which way, and by how much at most (0 where every one was exact).
    row["measured_above"] = int(grp["measured_above"].fill_null(0).sum())
    row["measured_below"] = int(grp["measured_below"].fill_null(0).sum())
    row["max_diff_tokens"] = int(max(grp["max_diff_tokens"].fill_null(0).to_list(), default=0))
    # Passes where every replica's hit counter equalled the cached tokens of the requests attributed to it.
    checks = grp["attribution_matches_counters"].drop_nulls() if "attribution_matches_counters" in grp.columns else None
    row["attribution_checked_passes"] = int(checks.len()) if checks is not None else 0
    row["attribution_matching_passes"] = int(checks.sum()) if checks is not None else 0
    hits, queries = grp["hit_counter"].drop_nulls(), grp["query_counter"].drop_nulls()
    row["counter_hit_rate"] = float(hits.sum()) / float(queries.sum()) if queries.len() and queries.sum() else None
    window = req.filter(pl.col("in_window") & (pl.col("status") == "ok") & main_arm_filter())["ttft_s"].drop_nulls()
    row["ttft_mean_s"] = float(window.mean()) if window.len() else None  # type: ignore[arg-type]
    row["ttft_lo_s"], row["ttft_hi_s"] = mean_interval(grp["ttft_mean_s"].to_list())
    row["ttft_p50_s"] = float(window.quantile(0.5, "linear")) if window.len() else None  # type: ignore[arg-type]
    row["ttft_p90_s"] = float(window.quantile(0.9, "linear")) if window.len() else None  # type: ignore[arg-type]
    row["tok_s"] = float(grp["tok_s"].mean()) if grp["tok_s"].drop_nulls().len() else None  # type: ignore[arg-type]
    row["tok_s_lo"], row["tok_s_hi"] = mean_interval(grp["tok_s"].to_list())
    per = [int(grp[f"_r{r}"].sum()) for r in range(replicas)]
    row["requests_per_replica"] = "/".join(map(str, per))
    row["load_imbalance"] = max(per) / (sum(per) / replicas) if sum(per) else None
    peaks = [[float(x) for x in s.split("/")] for s in grp["peak_kv"].drop_nulls().to_list()]
    row["peak_kv_per_replica"] = "/".join(f"{max(col):.3g}" for col in zip(*peaks)) if peaks else None
    highest = grp["peak_kv_max"].drop_nulls() if "peak_kv_max" in grp.columns else pl.Series([], dtype=pl.Float64)
    row["peak_kv_max"] = float(highest.cast(pl.Float64).max()) if highest.len() else None  # type: ignore[arg-type]
    return row


def replica_points(req: pl.DataFrame, passes: pl.DataFrame, run: RouterRun) -> pl.DataFrame:
    """Per policy and cache-on point: requests, the three hit rates (traffic, kept, delivered predicted and measured)
    with 95% t intervals over the passes, exact predictions, TTFT mean (interval) and p50/p90, output throughput
    (interval), requests and peak KV usage per replica (and the highest any replica reached), and the load imbalance
    (max over mean requests per replica)."""
    if req.is_empty() or req.filter(pl.col("mode") == ON).is_empty():
        return pl.DataFrame()
    per_pass = pass_rows(req, passes, run.replicas)
    rows = []
    for key, grp in per_pass.group_by(["policy", *POINT_KEYS], maintain_order=True):
        k = dict(zip(["policy", *POINT_KEYS], key))
        mine = req.filter((pl.col("mode") == ON) & pl.all_horizontal(pl.col(c) == v for c, v in k.items() if v is not None))
        rows.append(k | {"replicas": run.replicas} | point_row(grp, mine, run.replicas))
    return in_point_order(pl.DataFrame(rows, infer_schema_length=None), run, ["policy"])


# --- The policies against each other, pass by pass ---


def replica_contrasts(req: pl.DataFrame, passes: pl.DataFrame, run: RouterRun) -> pl.DataFrame:
    """Per point, each pair of policies (a before b in router.policies) over the passes they share (same lifetime
    and repeat, run back to back in a counterbalanced order): mean TTFT b/a (> 1: a had the faster first token) and
    output throughput a/b (> 1: a served more), each a t interval on the pairs' log-ratios with its MDE and the claim
    rule's verdict (findings.claims.judge; no A/A floor exists between policies), and the measured hit rate a - b."""
    if req.is_empty() or req.filter(pl.col("mode") == ON).is_empty():
        return pl.DataFrame()
    per = pass_rows(req, passes, run.replicas)
    rows = []
    for key, grp in per.group_by(POINT_KEYS, maintain_order=True):
        by = {(r["policy"], r["instance"], r["repeat"]): r for r in grp.iter_rows(named=True)}
        present = [p for p in run.policies if any(k[0] == p for k in by)]
        for a, b in combinations(present, 2):
            both = [(by[k], by[(b, *k[1:])]) for k in by if k[0] == a and (b, *k[1:]) in by]
            rows.append(dict(zip(POINT_KEYS, key)) | {"policy_a": a, "policy_b": b} | pair_row(both))
    return in_point_order(pl.DataFrame(rows, infer_schema_length=None), run, ["policy_a", "policy_b"]) if rows else pl.DataFrame()


def in_point_order(df: pl.DataFrame, run: RouterRun, policy_columns: Sequence[str]) -> pl.DataFrame:
    """Rows by regime, reuse (highest first), load, then the policies in router.policies' order: the report's order,
    the same on every re-render."""
    order = {p: n for n, p in enumerate(run.policies)}
    ranks = [pl.col(c).replace_strict(order, default=len(order)).alias(f"_{c}") for c in policy_columns]
    return (
        df.with_columns(*ranks)
        .sort(
            ["regime", "reuse_pct", "request_rate", "concurrency", *(f"_{c}" for c in policy_columns)],
            descending=[False, True, False, False, *(False for _ in policy_columns)],
        )
        .drop(*(f"_{c}" for c in policy_columns))
    )


def log_ratios(pairs: Sequence[tuple[dict, dict]], column: str, flip: bool) -> list[float]:
    out = []
    for a, b in pairs:
        x, y = (b[column], a[column]) if flip else (a[column], b[column])
        if x and y:
            out.append(math.log(x / y))
    return out


def pair_row(pairs: Sequence[tuple[dict, dict]]) -> dict[str, Any]:
    row: dict[str, Any] = {"pairs": len(pairs)}
    for name, column, flip, better, worse in (
        ("ttft", "ttft_mean_s", True, "faster", "slower"),
        ("tok_s", "tok_s", False, "higher", "lower"),
    ):
        c = contrast(log_ratios(pairs, column, flip))
        ci = (c.lo, c.hi) if c.lo is not None and c.hi is not None else None
        v = judge(c.ratio, better, worse, ci, mde_pct=c.mde_pct, no_interval=interval_gap(passes=c.pairs))
        row |= {f"{name}_ratio": c.ratio, f"{name}_lo": c.lo, f"{name}_hi": c.hi, f"{name}_mde_pct": c.mde_pct}
        row |= {f"{name}_verdict": v.kind, f"{name}_reason": v.reason}
    diffs = [
        a["measured_hit_rate"] - b["measured_hit_rate"]
        for a, b in pairs
        if None not in (a["measured_hit_rate"], b["measured_hit_rate"])
    ]
    row["hit_diff"] = float(np.mean(diffs)) if diffs else None
    row["hit_diff_lo"], row["hit_diff_hi"] = mean_interval(diffs)
    return row


# --- The policy simulator beside the measurement ---


def routing_module() -> ModuleType | None:
    """prefixbench.routing (the policy simulator), or None where this checkout has none yet: every simulated column
    is then empty and the report says the simulator did not run. The one place the simulator is called from."""
    try:
        from . import routing  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    return routing


@dataclass(frozen=True)
class Simulator:
    """What the simulator needs beside a pass's records: the prompts' block hashes, the replicas' URLs per lifetime
    (consistent_hash hashes them; stand-ins where a lifetime recorded none) and the policy simulator itself."""

    hashes: Mapping[tuple, Sequence[str]]
    block_size: int
    run: RouterRun
    routing: Any  # prefixbench.routing (routing_module)
    urls: Mapping[tuple[str, int], Sequence[str]] = field(default_factory=dict)  # (mode, instance) -> URL per replica
    seeds: Sequence[int] = range(5)  # random and power_of_two: the mean over these draws

    def routed(self, grp: pl.DataFrame) -> list:
        """The pass's requests as the router received them: in send order, with their session keys and end times."""
        return [
            self.routing.RoutedRequest(
                r["request_id"] or n, tuple(self.hashes.get(tuple(r[k] for k in HASH_KEY), ())), r["prompt_tokens"] or 0,
                r["session_key"], r["start_s"] or 0.0, (r["start_s"] or 0.0) + (r["e2e_s"] or 0.0),
            )
            for n, r in enumerate(grp.iter_rows(named=True))
        ]  # fmt: skip

    def assignments(self, grp: pl.DataFrame, order: str | None) -> list[list[int]]:
        """The replica of each request by the simulator: one routing for a deterministic policy, one per seed for a
        random one; in the router's recorded worker order (replica indices) and with the lifetime's URLs."""
        policy, reqs = grp["policy"][0], self.routed(grp)
        urls = self.urls.get((grp["mode"][0], int(grp["instance"][0])))
        kw = dict(self.run.params) | {"block_size": self.block_size, "concurrency": int(grp["concurrency"][0]) or None}
        kw |= {"worker_urls": list(urls) if urls and len(urls) == self.run.replicas else None}
        kw |= {"router_order": [int(x) for x in order.split("/")] if order else None}
        seeds = self.seeds if policy in getattr(self.routing, "STOCHASTIC", ()) else [0]
        return [self.routing.simulate(reqs, self.run.replicas, policy, seed=s, **kw) for s in seeds]


def simulated_pass(grp: pl.DataFrame, sim: Simulator, order: str | None) -> dict:
    """One measured pass routed by the simulator instead of the router, each replica's KV size as measured, replayed
    as the measured pass is (replica_requests), so the two compare; a random policy's rates are the mean over seeds."""
    grp = grp.sort("start_s", maintain_order=True)
    kv = dict(grp.filter(pl.col("replica").is_not_null()).select("replica", "kv_blocks").unique("replica").iter_rows())
    fallback = next(iter(kv.values()), None)
    rates: dict[str, list[float]] = {r: [] for r in RATES[:3]}
    per = [0] * sim.run.replicas
    draws = sim.assignments(grp, order)
    for where in draws:
        routed = grp.with_columns(
            pl.Series("replica", where, dtype=pl.Int64),
            pl.Series("kv_blocks", [kv.get(r, fallback) for r in where], dtype=pl.Int64),
            pl.lit(None, dtype=pl.String).alias("replica_unknown"),
            pl.lit(None, dtype=pl.Int64).alias("replica_seq"),  # the measured arrival order is another replica's
        )
        main = replica_requests(routed, sim.hashes, sim.block_size).filter(main_arm_filter() & (pl.col("status") == "ok"))
        prompt = float(main["prompt_tokens"].sum())
        for r in rates:
            if prompt:
                rates[r].append(float(main[f"{r}_cached_tokens"].sum()) / prompt)
        per = [a + where.count(r) for r, a in enumerate(per)]
    per = [round(x / len(draws)) for x in per]
    return {
        **{f"sim_{r}_hit_rate": float(np.mean(v)) if v else None for r, v in rates.items()},
        "sim_requests_per_replica": "/".join(map(str, per)),
        "sim_load_imbalance": max(per) / (sum(per) / sim.run.replicas) if sum(per) else None,
        "seeds": len(draws),
    }


def within(value: float | None, lo: float | None, hi: float | None) -> str:
    """Whether a simulated rate lies in the measured 95% interval: yes, no, or no interval (one measured pass)."""
    if value is None:
        return "not simulated"
    if lo is None or hi is None:
        return "no interval"
    return "yes" if lo - 1e-9 <= value <= hi + 1e-9 else "no"


def routing_sim(req: pl.DataFrame, points: pl.DataFrame, passes: pl.DataFrame, sim: Simulator | None) -> pl.DataFrame:
    """Per policy and cache-on point: the simulator's hit rates (traffic, kept, delivered predicted: each measured pass
    re-routed by prefixbench.routing, replayed as measured) and load, over the passes, beside whether each lies in the
    measured 95% interval. Empty without a simulator or a router."""
    if sim is None or points.is_empty():
        return pl.DataFrame()
    orders = {tuple(r[k] for k in PASS_KEYS): r["worker_order"] for r in passes.iter_rows(named=True)} if passes.height else {}
    on = req.filter((pl.col("mode") == ON) & pl.col("prompt_tokens").is_not_null())
    got: dict[tuple, list[dict]] = {}
    for key, grp in on.group_by([*PASS_KEYS, "workload"], maintain_order=True):
        k = dict(zip([*PASS_KEYS, "workload"], key))
        order = orders.get(tuple(k[c] for c in PASS_KEYS))
        got.setdefault(tuple(k[c] for c in ["policy", *POINT_KEYS]), []).append(simulated_pass(grp, sim, order))
    rows = [
        sim_row(p, got.get(tuple(p[c] for c in ["policy", *POINT_KEYS]), []), sim.run.replicas)
        for p in points.iter_rows(named=True)
    ]
    return pl.DataFrame(rows, infer_schema_length=None)


def sim_row(p: Mapping[str, Any], got: Sequence[dict], replicas: int) -> dict[str, Any]:
    """One policy and point: the simulated passes' mean rates, their requests per replica added up (as measured), and
    whether the kept and delivered rates lie in the measured intervals."""
    row = {c: p[c] for c in ["policy", *POINT_KEYS, "replicas"]} | {"passes": len(got), "seeds": got[0]["seeds"] if got else 0}
    for r in RATES[:3]:
        vals = [g[f"sim_{r}_hit_rate"] for g in got if g[f"sim_{r}_hit_rate"] is not None]
        row[f"sim_{r}_hit_rate"] = float(np.mean(vals)) if vals else None
    per = [sum(int(g["sim_requests_per_replica"].split("/")[r]) for g in got) for r in range(replicas)]
    row["sim_requests_per_replica"] = "/".join(map(str, per)) if got else None
    row["sim_load_imbalance"] = max(per) / (sum(per) / replicas) if sum(per) else None
    for simulated, measured in (("kept", "kept"), ("predicted", "measured")):
        row[f"{simulated}_within"] = within(row[f"sim_{simulated}_hit_rate"], p[f"{measured}_hit_lo"], p[f"{measured}_hit_hi"])
    return row


def routing_curve(run: RouterRun, routing: Any, counts: Sequence[int] = CURVE_REPLICAS) -> pl.DataFrame:
    """The simulator's hit rates against the replica count on the whole trace, per policy (routing.trace_curve: the
    traffic's and the kept hit rate, the load imbalance, mean and range over seeds for a random policy): a simulation,
    labelled so in every row."""
    if routing is None or run.trace_path is None or not Path(run.trace_path).is_file():
        return pl.DataFrame()
    from .shapes.trace import all_rows

    reqs = routing.trace_routed_requests(all_rows(Path(run.trace_path)))
    rows = routing.trace_curve(reqs, sorted({*counts, run.replicas}), run.policies, **run.params)
    names = {"traffic_mean": "traffic_hit_rate", "kept_mean": "kept_hit_rate", "imbalance_mean": "load_imbalance"}
    names |= {"kept_min": "kept_hit_min", "kept_max": "kept_hit_max"}
    return pl.DataFrame(
        [
            {"source": r["source"], "workload": f"Mooncake trace ({Path(run.trace_path).name})", "requests": r["requests"],
             "policy": r["policy"], "replicas": r["replicas"], "seeds": r["seeds"], **{v: r[k] for k, v in names.items()},
             "hash_key": r.get("hash_key"), "in_flight": r.get("in_flight")}
            for r in rows
        ],
        infer_schema_length=None,
    )  # fmt: skip


# --- Aggregation's entry ---


def write_table(df: pl.DataFrame, path: Path | None) -> None:
    """A table at full precision (the report reads it as written), or an empty file where the run has none."""
    if path is None:
        return
    if df.height:
        df.write_csv(path)
    else:
        Path(path).write_text("")


@dataclass(frozen=True)
class ReplicaTables:
    """Where aggregation writes the replicated run's tables (each an empty file for one server)."""

    requests: Path
    points: Path
    contrasts: Path
    sim: Path
    curve: Path


def lifetime_urls(info_paths: Iterable[Path]) -> dict[tuple[str, int], list[str]]:
    """(mode, instance) -> each replica's base URL, from the lifetimes' server.json (`replicas`)."""
    out = {}
    for path in info_paths:
        info = json.loads(Path(path).read_text())
        if info.get("replicas"):
            out[(info["mode"], int(info.get("instance") or 1))] = [r["base_url"] for r in info["replicas"]]
    return out


def write_replica_tables(
    record_paths: Iterable[Path],
    meta_paths: Iterable[Path],
    prompt_paths: Iterable[Path],
    block_size: int,
    run: RouterRun | None,
    out: ReplicaTables,
    routing: Any = None,
    info_paths: Iterable[Path] = (),
) -> None:
    """Every table of the Across-replicas analysis, from every policy's records; empty files for one server.
    `routing`: the simulator (the edge passes routing_module(); None leaves the simulated tables empty);
    `info_paths`: the lifetimes' server.json (the replicas' URLs, which consistent_hash's ring hashes)."""
    from .aggregate import EVERY_POLICY, load_records

    hashes = load_point_hashes(prompt_paths) if run else {}
    req = replica_requests(load_records(record_paths, EVERY_POLICY), hashes, block_size) if run else pl.DataFrame()
    if run is None or req.is_empty():
        for path in (out.requests, out.points, out.contrasts, out.sim, out.curve):
            write_table(pl.DataFrame(), path)
        return
    passes = read_passes(meta_paths)
    points = replica_points(req, passes, run)
    write_table(req, out.requests)
    write_table(points, out.points)
    write_table(replica_contrasts(req, passes, run), out.contrasts)
    sim = Simulator(hashes, block_size, run, routing, lifetime_urls(info_paths)) if routing is not None else None
    write_table(routing_sim(req, points, passes, sim), out.sim)
    write_table(routing_curve(run, routing), out.curve)


def read_table(path: Path | None) -> pl.DataFrame:
    """One of the tables above as written, or an empty frame (one server, or a run from before replicas)."""
    return (
        pl.read_csv(path, infer_schema_length=None)
        if path and Path(path).is_file() and Path(path).stat().st_size
        else pl.DataFrame()
    )
