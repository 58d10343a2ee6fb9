"""Per-request records + per-point metadata -> one summary row per measurement point (polars).

The first columns are exactly the seed's table; means are over successful requests and the row
says so in `notes` whenever any request failed (failures are counted, never hidden).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import polars as pl

from . import MODES, OFF, ON
from .engines import MetricNames, engine_for
from .paired import POINT as PAIRED_POINT
from .paired import arm_walls, clean, flag_cost_table, main_arm_filter, paired_table, with_arm_columns
from .point_meta import PointMeta
from .scalars import num
from .shapes import SINGLE_PREFIX
from .shapes.results import load_hashes, prediction_check, read_shape_table, shape_requests
from .shapes.trace import trace_curves
from .stats import busy_periods, closed_loop_rounds, cluster_ratio_ci, steady_window

SEED_COLUMNS = ["mode", "prefix_len_tokens", "concurrency", "mean_ttft_s", "mean_e2e_s", "p95_e2e_s", "tok_s", "notes"]
KEYS = ["mode", "regime", "reuse_pct", "concurrency", "request_rate"]
MODE_ORDER = {OFF: 0, ON: 1}


EVERY_POLICY = "*"  # load_records: keep every router policy's records (the replicas analysis)


def primary_policy(records: pl.DataFrame) -> str | None:
    """The router policy that carries the run, read from the records where the config does not name it: the
    cache-off lifetimes run the primary policy alone, and a run of one policy has only it. None without a router."""
    if "policy" not in records.columns or records["policy"].is_null().all():
        return None
    off = records.filter(pl.col("mode") == OFF)["policy"].drop_nulls().unique().to_list()
    policies = records["policy"].drop_nulls().unique().to_list()
    if len(off) == 1 or len(policies) == 1:
        return str((off or policies)[0])
    raise ValueError(f"records of router policies {sorted(policies)} and none named the primary (router.policies[0])")


def primary_only(records: pl.DataFrame, policy: str | None = None) -> pl.DataFrame:
    """Behind a router, the primary policy's records only (`policy`, else primary_policy): summary, off/on ratios,
    contrasts and charts read one policy, as for one server; records without a policy (no router) are all kept."""
    if policy == EVERY_POLICY or "policy" not in records.columns:
        return records
    primary = policy or primary_policy(records)
    if primary is None:  # every record without a policy: one server
        return records
    return records.filter(pl.col("policy").is_null() | (pl.col("policy") == primary))


def load_records(paths: Iterable[Path], policy: str | None = None) -> pl.DataFrame:
    """Every request record of `paths`, typed, with its steady-state window; behind a router only the primary
    policy's (primary_only; EVERY_POLICY keeps them all, each policy's pass windowed on its own)."""
    rows: list[dict] = []
    for path in paths:
        with Path(path).open() as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    if not rows:
        raise ValueError("no request records to aggregate")
    df = pl.DataFrame(rows, infer_schema_length=None)
    if "request_rate" not in df.columns:  # records from before open-loop points existed
        df = df.with_columns(pl.lit(0.0).alias("request_rate"))
    if "tpot_s" not in df.columns:  # records from before per-token latencies existed
        df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias("tpot_s"))
    if "schedule_lag_s" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias("schedule_lag_s"))
    if "repeat" not in df.columns:
        df = df.with_columns(pl.lit(0, dtype=pl.Int64).alias("repeat"))
    if "instance" not in df.columns:  # records from before server instances existed: one lifetime per setting
        df = df.with_columns(pl.lit(1, dtype=pl.Int64).alias("instance"))
    df = with_arm_columns(primary_only(df, policy))
    lag = pl.col("schedule_lag_s").cast(pl.Float64).fill_null(0.0)
    df = df.with_columns(
        # Open loop: latency from the scheduled send, so a late client cannot hide queueing (coordinated omission).
        pl.when(pl.col("request_rate") > 0).then(pl.col("ttft_s") + lag).otherwise(pl.col("ttft_s")).alias("ttft_s"),
        pl.when(pl.col("request_rate") > 0).then(pl.col("e2e_s") + lag).otherwise(pl.col("e2e_s")).alias("e2e_s"),
    )
    return with_window(df).with_columns(
        pl.col("request_rate").cast(pl.Float64),
        pl.col("itl_s").list.mean().alias("itl_mean_s"),  # per output token (client.per_token_latencies)
        pl.col("tpot_s").cast(pl.Float64),
        pl.col("cached_tokens").cast(pl.Int64, strict=False),
        pl.col("completion_tokens").cast(pl.Int64, strict=False),
        pl.col("prompt_tokens").cast(pl.Int64, strict=False),
    )


def with_window(records: pl.DataFrame) -> pl.DataFrame:
    """Mark each request in or out of its pass's steady-state window (stats.steady_window; open loop: all in)."""
    parts = []
    unit = KEYS + ["instance", "repeat"] + (["policy"] if "policy" in records.columns else [])  # one pass: one policy
    for _, grp in records.group_by(unit, maintain_order=True):
        conc, rate = grp["concurrency"][0], grp["request_rate"][0]
        if rate:
            flags = [True] * grp.height
        else:
            # Shapes keep their first request after idle: their order is the test.
            skip_first = grp["workload"][0] in SINGLE_PREFIX
            flags = steady_window(grp["start_s"].fill_null(0.0).to_list(), grp["e2e_s"].to_list(), int(conc), skip_first)
            if grp["arm"].is_not_null().any():  # a paired pass: each sub-block without the previous arm's overlap
                own = clean(grp["arm"].to_list(), grp["sub_block"].to_list(), grp["send_index"].to_list(), int(conc))
                flags = [a and b for a, b in zip(flags, own)]
        parts.append(grp.with_columns(pl.Series("in_window", flags, dtype=pl.Boolean)))
    return pl.concat(parts, how="diagonal_relaxed")


# The engine's own view of a point (its histograms, where exported): per-request queue, prefill and decode
# time; engine steps and the tokens they scheduled; preemptions. Summed over a point's lifetimes like the rest.
# Column -> (engines.MetricNames field, sample suffix).
ENGINE_METRICS = {
    "server_queue_sum_s": ("queue", "_sum"),
    "server_queue_count": ("queue", "_count"),
    "server_prefill_sum_s": ("prefill", "_sum"),
    "server_prefill_count": ("prefill", "_count"),
    "server_decode_sum_s": ("decode", "_sum"),
    "server_decode_count": ("decode", "_count"),
    "server_steps_count": ("step_tokens", "_count"),
    "server_step_tokens_sum": ("step_tokens", "_sum"),
    "server_preemptions": ("preemptions", ""),
}
ENGINE_COLUMNS = list(ENGINE_METRICS)


def engine_columns(delta: dict[str, float], names: MetricNames) -> dict[str, float | None]:
    return {col: delta.get(getattr(names, field) + suffix) for col, (field, suffix) in ENGINE_METRICS.items()}


def load_meta(paths: Iterable[Path]) -> pl.DataFrame:
    """One row per point and server lifetime (column `instance`); `point_totals` adds the lifetimes up."""
    rows = []
    for path in paths:
        meta = PointMeta.read(path)
        if meta.dropped:  # the plan did not send it (plan.make_plan); the report's time-budget line says why
            continue
        delta = meta.counters_delta
        names = engine_for(cast(str, meta.engine)).metrics  # the names its counters were read under
        rows.append(
            {
                **{k: getattr(meta, k) for k in KEYS},
                "instance": meta.instance,
                "wall_s": meta.wall_s,
                "requests_sent": meta.requests_sent,
                "cache_reset": meta.cache_reset,
                "measured_hit_rate": meta.measured_hit_rate,
                "hit_tokens": delta.get(names.prefix_hits),
                "query_tokens": delta.get(names.prefix_queries),
                "server_ttft_sum_s": delta.get(f"{names.ttft}_sum"),
                "server_ttft_count": delta.get(f"{names.ttft}_count"),
                "server_e2e_sum_s": delta.get(f"{names.e2e}_sum"),
                "server_e2e_count": delta.get(f"{names.e2e}_count"),
                **engine_columns(delta, names),
                "peak_server_rss_gib": meta.peak_server_rss_gib,
                "peak_gpu_mem_mib": meta.peak_gpu_mem_mib,
                "peak_kv_cache_usage": meta.peak_kv_cache_usage,
                "wall_s_per_repeat": [float(w) for w in meta.wall_s_per_repeat],
            }
        )
    return pl.DataFrame(
        rows,
        infer_schema_length=None,
        schema_overrides={
            "request_rate": pl.Float64,
            "measured_hit_rate": pl.Float64,
            "hit_tokens": pl.Float64,
            "query_tokens": pl.Float64,
            "server_ttft_sum_s": pl.Float64,
            "server_ttft_count": pl.Float64,
            "server_e2e_sum_s": pl.Float64,
            "server_e2e_count": pl.Float64,
            **{c: pl.Float64 for c in ENGINE_COLUMNS},
            "peak_gpu_mem_mib": pl.Float64,
            "peak_kv_cache_usage": pl.Float64,
            "peak_server_rss_gib": pl.Float64,
        },
    )


def point_totals(meta: pl.DataFrame) -> pl.DataFrame:
    """A point's lifetimes added up: times, requests and counters summed, the hit rate recomputed, peaks the highest."""
    summed = ["wall_s", "requests_sent", "hit_tokens", "query_tokens"] + [c for c in meta.columns if c.startswith("server_")]
    peaks = ["peak_server_rss_gib", "peak_gpu_mem_mib", "peak_kv_cache_usage"]
    return meta.group_by(KEYS, maintain_order=True).agg(
        *(pl.when(pl.col(c).is_not_null().any()).then(pl.col(c).sum()).alias(c) for c in summed),
        *(pl.col(c).max() for c in peaks),
        pl.col("cache_reset").filter(pl.col("cache_reset") != "ok").first().fill_null("ok").alias("cache_reset"),
        pl.col("instance").n_unique().alias("instances"),
        # Mean wall time per engine step, each lifetime on its own: the spread between lifetimes of one setting.
        (pl.col("wall_s") / pl.col("server_steps_count")).min().alias("step_s_min"),
        (pl.col("wall_s") / pl.col("server_steps_count")).max().alias("step_s_max"),
        pl.when(pl.col("query_tokens").sum() > 0)
        .then(pl.col("hit_tokens").sum() / pl.col("query_tokens").sum())
        .otherwise(pl.col("measured_hit_rate").first())
        .alias("measured_hit_rate"),
    )


def single_prefix(summary: pl.DataFrame, ratios: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The one-shared-prefix sweep's rows of the summary and of the off/on table (the shapes have their own section)."""
    if "workload" in summary.columns:
        summary = summary.filter(pl.col("workload").is_in(SINGLE_PREFIX))
    return summary, ratios.filter(pl.col("regime").is_in(summary["regime"].unique().to_list()))


def closed_loop(df: pl.DataFrame) -> pl.DataFrame:
    """Concurrency-sweep rows (request_rate 0); tables from before open-loop points are all closed loop."""
    return df.filter(pl.col("request_rate") == 0) if "request_rate" in df.columns else df


def open_loop(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("request_rate") > 0) if "request_rate" in df.columns else df.clear()


def _notes(row: dict) -> str:
    """The seed table's notes: which regime or shape the row is (its other columns do not say), load, hit rate."""
    parts = [row["regime"]]
    if row["request_rate"]:
        parts.append(f"open loop {row['request_rate']:g} req/s")
    parts.append(f"reuse {row['reuse_pct']}%")
    if row["measured_hit_rate"] is not None:
        parts.append(f"hit rate {row['measured_hit_rate']:.0%}")
    if row["requests_failed"]:
        parts.append(f"{row['requests_failed']} of {row['requests_sent']} failed, means over ok only")
    if row["cache_reset"] != "ok":
        parts.append(f"cache reset {row['cache_reset']}")
    return "; ".join(parts)


def repeat_throughput(records: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    """Output tokens/s of each pass (repeat of each lifetime) of a point, and their range: the spread a throughput
    claim must clear."""
    unit = KEYS + ["instance", "repeat"]
    tokens = records.filter(pl.col("status") == "ok").group_by(unit).agg(pl.col("completion_tokens").sum().alias("tokens"))
    walls = (
        meta.select(KEYS + ["instance", "wall_s_per_repeat"])
        .explode("wall_s_per_repeat")
        .with_columns(pl.int_range(pl.len()).over(KEYS + ["instance"]).alias("repeat"))
        .rename({"wall_s_per_repeat": "wall"})
    )
    per = tokens.join(walls, on=unit, how="inner").with_columns((pl.col("tokens") / pl.col("wall")).alias("t"))
    return per.group_by(KEYS).agg(
        pl.len().alias("repeats_measured"),
        pl.when(pl.len() >= 2).then(pl.col("t").min()).alias("tok_s_lo"),
        pl.when(pl.len() >= 2).then(pl.col("t").max()).alias("tok_s_hi"),
    )


def summarize(records: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    """One row per point. Counts, tokens and hits cover every request; latencies cover the steady-state window."""
    counted = pl.col("status") == "ok"
    ok = counted & pl.col("in_window")
    per_point = records.group_by(KEYS).agg(
        pl.col("prefix_len_tokens").first(),
        pl.col("workload").first(),
        pl.len().alias("requests_recorded"),
        counted.sum().alias("requests_ok"),
        (~counted).sum().alias("requests_failed"),
        ok.sum().alias("window_requests"),
        pl.col("schedule_lag_s").cast(pl.Float64).max().alias("max_schedule_lag_s"),
        pl.col("ttft_s").filter(ok).mean().alias("mean_ttft_s"),
        pl.col("ttft_s").filter(ok).quantile(0.5, "linear").alias("p50_ttft_s"),
        pl.col("ttft_s").filter(ok).quantile(0.95, "linear").alias("p95_ttft_s"),
        pl.col("ttft_s").filter(ok).quantile(0.99, "linear").alias("p99_ttft_s"),
        pl.col("e2e_s").filter(ok).mean().alias("mean_e2e_s"),
        pl.col("e2e_s").filter(ok).quantile(0.5, "linear").alias("p50_e2e_s"),
        pl.col("e2e_s").filter(ok).quantile(0.95, "linear").alias("p95_e2e_s"),
        pl.col("e2e_s").filter(ok).quantile(0.99, "linear").alias("p99_e2e_s"),
        # Every request, as the server's histograms count them (the client-vs-server cross-check).
        pl.col("ttft_s").filter(counted).mean().alias("mean_ttft_all_s"),
        pl.col("e2e_s").filter(counted).mean().alias("mean_e2e_all_s"),
        pl.col("itl_mean_s").filter(ok).mean().alias("mean_itl_s"),
        pl.col("tpot_s").filter(ok).mean().alias("mean_tpot_s"),
        pl.col("completion_tokens").filter(counted).sum().alias("completion_tokens"),
        pl.col("prompt_tokens").filter(counted).sum().alias("prompt_tokens"),
        pl.col("cached_tokens").filter(counted).sum().alias("cached_tokens"),
        # The hit rate of the requests the latencies come from (the window): what bounds the gain they can show.
        (
            pl.col("cached_tokens").filter(ok).cast(pl.Float64).sum() / pl.col("prompt_tokens").filter(ok).cast(pl.Float64).sum()
        ).alias("window_hit_rate"),
        pl.col("expected_cached_tokens").sum().alias("expected_cached_tokens"),
        pl.col("ttft_s").filter(counted & (pl.col("prefix_group") == "shared")).mean().alias("mean_ttft_shared_s"),
        pl.col("ttft_s").filter(counted & (pl.col("prefix_group") != "shared")).mean().alias("mean_ttft_unique_s"),
        # Cache behaviour, over every request (the cold one is sent first, before any window opens).
        # Cold: the first request of the shared prefix (a miss by construction); warm: the ones after it.
        pl.col("ttft_s")
        .filter(counted & (pl.col("prefix_group") == "shared") & (pl.col("expected_cached_tokens") == 0))
        .mean()
        .alias("mean_ttft_cold_s"),
        pl.col("ttft_s").filter(counted & (pl.col("expected_cached_tokens") > 0)).mean().alias("mean_ttft_warm_s"),
    )
    df = (
        per_point.join(point_totals(meta), on=KEYS, how="left")
        .join(repeat_throughput(records, meta), on=KEYS, how="left")
        .with_columns(
            (pl.col("completion_tokens") / pl.col("wall_s")).alias("tok_s"),
            (pl.col("prompt_tokens") / pl.col("wall_s")).alias("prompt_tok_s"),
            (pl.col("requests_ok") / pl.col("wall_s")).alias("req_s"),
            (pl.col("requests_failed") / pl.col("requests_sent")).alias("error_rate"),
            (pl.col("cached_tokens") / pl.col("prompt_tokens")).alias("client_cached_fraction"),
            pl.when(pl.col("mode") == OFF)
            .then(0.0)
            .otherwise(pl.col("expected_cached_tokens") / pl.col("prompt_tokens"))
            .alias("expected_hit_rate"),
            (pl.col("server_ttft_sum_s") / pl.col("server_ttft_count")).alias("server_mean_ttft_s"),
            (pl.col("server_e2e_sum_s") / pl.col("server_e2e_count")).alias("server_mean_e2e_s"),
            (pl.col("server_queue_sum_s") / pl.col("server_queue_count")).alias("server_mean_queue_s"),
            (pl.col("server_prefill_sum_s") / pl.col("server_prefill_count")).alias("server_mean_prefill_s"),
            (pl.col("server_decode_sum_s") / pl.col("server_decode_count")).alias("server_mean_decode_s"),
            (pl.col("server_step_tokens_sum") / pl.col("server_steps_count")).alias("tokens_per_step"),
            (pl.col("wall_s") / pl.col("server_steps_count")).alias("step_s"),
        )
        .with_columns(
            (pl.col("mean_ttft_all_s") - pl.col("server_mean_ttft_s")).alias("ttft_gap_s"),
            (pl.col("mean_e2e_all_s") - pl.col("server_mean_e2e_s")).alias("e2e_gap_s"),
        )
    )
    df = df.with_columns(pl.Series("notes", [_notes(r) for r in df.iter_rows(named=True)], dtype=pl.String))
    df = (
        df.with_columns(pl.col("mode").replace_strict(MODE_ORDER, default=9).alias("_mode_order"))
        .sort(
            ["prefix_len_tokens", "regime", pl.col("reuse_pct"), "_mode_order", "request_rate", "concurrency"],
            descending=[False, False, True, False, False, False],
        )
        .drop("_mode_order")
    )
    rest = [c for c in df.columns if c not in SEED_COLUMNS]
    return df.select(SEED_COLUMNS + rest)


def speedups(summary: pl.DataFrame) -> pl.DataFrame:
    """Off/on ratios per (regime, reuse, concurrency): >1 means the cache helped."""
    cols = [
        "mean_ttft_s",
        "p95_ttft_s",
        "mean_e2e_s",
        "p95_e2e_s",
        "tok_s",
        "measured_hit_rate",
        "mean_ttft_unique_s",
        "mean_ttft_shared_s",
        "peak_server_rss_gib",
        "peak_gpu_mem_mib",
        "peak_kv_cache_usage",
        "window_requests",
        "window_hit_rate",
    ]
    keys = ["regime", "prefix_len_tokens", "reuse_pct", "concurrency", "request_rate"]
    off = summary.filter(pl.col("mode") == OFF).select(keys + cols).rename({c: f"{c}_off" for c in cols})
    on = summary.filter(pl.col("mode") == ON).select(keys + cols).rename({c: f"{c}_on" for c in cols})
    return (
        off.join(on, on=keys, how="inner")
        .with_columns(
            (pl.col("mean_ttft_s_off") / pl.col("mean_ttft_s_on")).alias("ttft_speedup"),
            (pl.col("p95_ttft_s_off") / pl.col("p95_ttft_s_on")).alias("p95_ttft_speedup"),
            (pl.col("mean_e2e_s_off") / pl.col("mean_e2e_s_on")).alias("e2e_speedup"),
            (pl.col("tok_s_on") / pl.col("tok_s_off")).alias("throughput_gain"),
            (pl.col("mean_ttft_unique_s_off") / pl.col("mean_ttft_unique_s_on")).alias("unique_prefix_ttft_speedup"),
        )
        .sort(
            ["prefix_len_tokens", "regime", "reuse_pct", "request_rate", "concurrency"],
            descending=[False, False, True, False, False],
        )
    )


def with_clusters(records: pl.DataFrame) -> pl.DataFrame:
    """Each record's cluster for the bootstrap: (instance, repeat, round of c sends) closed loop, (instance, repeat,
    busy period) open loop. The bootstrap resamples instances first, then clusters within them."""
    parts = []
    for (_, _, _, conc, rate, instance, repeat), grp in records.group_by(KEYS + ["instance", "repeat"], maintain_order=True):
        start = grp["start_s"].fill_null(0.0).to_list()
        if rate:
            end = [s + (e or 0.0) for s, e in zip(start, grp["e2e_s"].fill_null(0.0).to_list())]
            local = busy_periods(start, end)
        else:
            local = closed_loop_rounds(start, int(conc))
        parts.append(grp.with_columns(pl.Series("cluster", [f"{instance}:{repeat}:{c}" for c in local], dtype=pl.String)))
    if not parts:  # no request in any window (every point too short for one): nothing to resample
        return records.with_columns(pl.lit(None, dtype=pl.String).alias("cluster"))
    return pl.concat(parts, how="diagonal_relaxed")


def _ci(off: pl.DataFrame | None, on: pl.DataFrame | None, metric: str) -> tuple[float, float] | None:
    if off is None or on is None or off.is_empty() or on.is_empty():
        return None
    return cluster_ratio_ci(
        off[metric].to_numpy(),
        off["cluster"].to_list(),
        on[metric].to_numpy(),
        on["cluster"].to_list(),
        off_groups=off["instance"].to_list(),
        on_groups=on["instance"].to_list(),
    )


def aa_requests(records: pl.DataFrame) -> pl.DataFrame:
    """The built-in A/A control: requests that can hit nothing in either setting, where neighbours can't help them.

    Unique-prefix requests at the lowest concurrency (one at a time: no cached request ahead in the queue), and every
    request of a 0%-reuse point."""
    ok = records.filter(pl.col("status") == "ok")
    if "workload" in ok.columns:  # a workload shape has its own sharing: its requests are never A/A controls
        ok = ok.filter(pl.col("workload").is_in(SINGLE_PREFIX) | pl.col("workload").is_null())
    closed = ok.filter(pl.col("request_rate") == 0)
    if closed.is_empty():
        return closed
    c_min = closed["concurrency"].min()
    return closed.filter(((pl.col("concurrency") == c_min) & (pl.col("prefix_group") != "shared")) | (pl.col("reuse_pct") == 0))


def _ratio_row(a: pl.DataFrame, b: pl.DataFrame, prefix: str) -> dict:
    """Mean ratio a/b of TTFT and E2E with clustered CIs, as `{prefix}_ttft_ratio`, `_lo`, `_hi` (and `_e2e_`)."""
    row = {}
    for metric, kind in (("ttft_s", "ttft"), ("e2e_s", "e2e")):
        ci = _ci(a, b, metric)
        row[f"{prefix}_{kind}_ratio"] = num(a[metric].mean()) / num(b[metric].mean()) if a.height and b.height else None
        row[f"{prefix}_{kind}_lo"], row[f"{prefix}_{kind}_hi"] = ci if ci else (None, None)
    return row


INSTANCE_CONTROLS = {"inst_off": OFF, "inst_on": ON}


def aa_floor(records: pl.DataFrame) -> pl.DataFrame:
    """Per regime (and `*` for all): the A/A controls and their clustered 95% CIs.

    `aa_*`: off/on of the requests that can hit nothing (aa_requests). `inst_off_*`, `inst_on_*` (with two or more
    server lifetimes per setting): the same setting against itself, odd-numbered lifetimes over even-numbered ones,
    over every request of the regime, each relative to the same request's mean over all lifetimes. `floor_*` is the widest of them: the noise no claim may sit inside."""
    aa = aa_requests(records).with_columns(
        pl.concat_str([pl.col("reuse_pct"), pl.col("concurrency"), pl.col("cluster")], separator="/").alias("cluster")
    )
    # Each request relative to the mean of the same request (same point, same prompt) over every lifetime: the
    # lifetimes send identical requests, so the same-setting control is paired, request for request, and the mix of
    # cold, warm and unique requests cannot decide it.
    # A request sent in one lifetime only (the small-KV lifetimes, one per setting) is its own mean: it carries no
    # lifetime-to-lifetime variation and would only pull the pooled control towards 1.
    same = records.filter(
        (pl.col("status") == "ok") & (pl.col("instance").n_unique().over(KEYS + ["request_index"]) > 1)
    ).with_columns(
        pl.concat_str(
            [pl.col("reuse_pct"), pl.col("concurrency"), pl.col("request_rate"), pl.col("cluster")], separator="/"
        ).alias("cluster"),
        (pl.col("instance") % 2 == 1).alias("odd"),
        *((pl.col(m) / pl.col(m).mean().over(KEYS + ["request_index"])).alias(m) for m in ("ttft_s", "e2e_s")),
    )
    rows = []
    for regime in ["*"] + list(dict.fromkeys(records["regime"].to_list())):
        grp = aa if regime == "*" else aa.filter(pl.col("regime") == regime)
        off, on = (grp.filter(pl.col("mode") == m) for m in MODES)
        row = {"regime": regime, "aa_requests_off": off.height, "aa_requests_on": on.height}
        row |= _ratio_row(off, on, "aa")
        mine = same if regime == "*" else same.filter(pl.col("regime") == regime)
        for prefix, mode in INSTANCE_CONTROLS.items():
            one = mine.filter(pl.col("mode") == mode)
            row |= _ratio_row(one.filter(pl.col("odd")), one.filter(~pl.col("odd")), prefix)
        for kind in ("ttft", "e2e"):
            los = [row[f"{p}_{kind}_lo"] for p in ("aa", *INSTANCE_CONTROLS) if row[f"{p}_{kind}_lo"] is not None]
            his = [row[f"{p}_{kind}_hi"] for p in ("aa", *INSTANCE_CONTROLS) if row[f"{p}_{kind}_hi"] is not None]
            row[f"floor_{kind}_lo"], row[f"floor_{kind}_hi"] = (min(los), max(his)) if los else (None, None)
        rows.append(row)
    schema = {
        "regime": pl.String,
        "aa_requests_off": pl.Int64,
        "aa_requests_on": pl.Int64,
        **{
            f"{p}_{kind}_{k}": pl.Float64
            for p in ("aa", *INSTANCE_CONTROLS)
            for kind in ("ttft", "e2e")
            for k in ("ratio", "lo", "hi")
        },
        **{f"floor_{kind}_{k}": pl.Float64 for kind in ("ttft", "e2e") for k in ("lo", "hi")},
    }
    return pl.DataFrame(rows, schema=schema)


def with_confidence(sp: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """Add clustered 95% bootstrap CIs of the TTFT and E2E off/on ratios, and the regime's A/A floor, to each row."""
    ok = with_clusters(records.filter((pl.col("status") == "ok") & pl.col("in_window")))
    groups = {key: grp for key, grp in ok.group_by(KEYS)}
    cols: dict[str, list] = {
        c: [] for c in ("ttft_speedup_lo", "ttft_speedup_hi", "e2e_speedup_lo", "e2e_speedup_hi", "clusters_off", "clusters_on")
    }
    for r in sp.iter_rows(named=True):
        point = (r["regime"], r["reuse_pct"], r["concurrency"], r["request_rate"])
        off, on = groups.get((OFF, *point)), groups.get((ON, *point))
        for metric, name in (("ttft_s", "ttft_speedup"), ("e2e_s", "e2e_speedup")):
            ci = _ci(off, on, metric)
            cols[f"{name}_lo"].append(ci[0] if ci else None)
            cols[f"{name}_hi"].append(ci[1] if ci else None)
        cols["clusters_off"].append(off["cluster"].n_unique() if off is not None else 0)
        cols["clusters_on"].append(on["cluster"].n_unique() if on is not None else 0)
    out = sp.with_columns(
        *(pl.Series(name, values, dtype=pl.Float64 if "speedup" in name else pl.Int64) for name, values in cols.items())
    )
    floor = aa_floor(ok)
    overall = floor.filter(pl.col("regime") == "*").drop("regime")
    per_regime = floor.filter(pl.col("regime") != "*")
    out = out.join(per_regime, on="regime", how="left")
    # A regime with no A/A requests of its own (e.g. only 100% reuse) takes the run's pooled floor.
    fill = overall.row(0, named=True) if overall.height else {}
    return out.with_columns(*(pl.col(c).fill_null(fill.get(c)) for c in overall.columns if fill.get(c) is not None))


def write_summary(
    record_paths: Iterable[Path],
    meta_paths: Iterable[Path],
    summary_csv: Path,
    speedup_csv: Path,
    shape_csv: Path | None = None,
    prompt_paths: Iterable[Path] = (),
    block_size: int = 16,
    shape_points_csv: Path | None = None,
    trace_csv: Path | None = None,
    shapes: Mapping[str, Mapping[str, Any]] | None = None,
    policy: str | None = None,
) -> None:
    """summary.csv and speedup.csv; with `shape_csv`, every shape request with the cache model's prediction, and with
    `shape_points_csv`/`trace_csv` what the report reads of them: the prediction check per shape point (computed from
    shape_requests.csv as written) and each replayed trace's capacity curve. Behind a router, of the primary policy
    (`policy`; the other policies are replicas_analysis's)."""
    records = load_records(record_paths, policy)
    # A paired point's summary row is its hit arm (the traffic as designed); both arms make its paired contrast.
    main = records.filter(main_arm_filter())
    paired = paired_table(records)
    summary = summarize(main, arm_walls(records, load_meta(meta_paths)))
    sp = with_paired(with_confidence(speedups(summary), main), paired)
    sp = sp.join(flag_cost_table(main), on=PAIRED_POINT, how="left")  # what enabling the flag costs, per lifetime
    sp = sp.with_columns(pl.coalesce("mde_ttft_pct", interval_mde("ttft_speedup_lo", "ttft_speedup_hi")).alias("mde_ttft_pct"))
    with_mde(summary, sp).write_csv(summary_csv, float_precision=6)
    sp.write_csv(speedup_csv, float_precision=6)
    if shape_csv is not None:
        shape_requests(records, load_hashes(prompt_paths), block_size).write_csv(shape_csv, float_precision=6)
        write_shape_tables(shape_csv, shape_points_csv, trace_csv, shapes or {}, block_size)


def write_shape_tables(
    shape_csv: Path, points_csv: Path | None, trace_csv: Path | None, shapes: Mapping[str, Mapping[str, Any]], block_size: int
) -> None:
    """shape_points.csv and trace_capacity.csv (full precision: the report reads them as they are); empty files
    where the run has no shape or no trace."""
    req = read_shape_table(shape_csv)
    check = prediction_check(req, block_size) if req.height else pl.DataFrame()
    for path, table in ((points_csv, check), (trace_csv, trace_curves(check, shapes, block_size))):
        if path is not None and table.height:
            table.write_csv(path)
        elif path is not None:
            Path(path).write_text("")


def interval_mde(lo: str, hi: str) -> pl.Expr:
    """The MDE (percent, 80% power, two-sided 5%) of a contrast known only by its 95% interval on the ratio: the
    interval's half-width on the log scale is 1.96 standard errors, and the MDE is exp((1.96 + 0.84) SE) - 1. For
    the cross-lifetime contrasts (workload shapes, open loop), whose bootstrap gives an interval and no pairs."""
    se = (pl.col(hi).log() - pl.col(lo).log()) / (2 * 1.959964)
    return ((se * (1.959964 + 0.841621)).exp() - 1) * 100


def with_mde(summary: pl.DataFrame, sp: pl.DataFrame) -> pl.DataFrame:
    """summary.csv's `mde_ttft_pct`: the smallest mean-TTFT effect the point's contrast could detect (80% power),
    the paired design's where the point ran it, else its cross-lifetime interval's, on both settings' rows."""
    return summary.join(sp.select(*PAIRED_POINT, "mde_ttft_pct"), on=PAIRED_POINT, how="left")


def with_paired(sp: pl.DataFrame, paired: pl.DataFrame) -> pl.DataFrame:
    """The off/on table with each point's paired contrast beside its cross-lifetime ratio."""
    return sp.join(paired, on=PAIRED_POINT, how="left")


REGIME_TABLE_COLUMNS = [
    "reuse_pct",
    "concurrency",
    "request_rate",
    "requests_sent",
    "requests_ok",
    "requests_failed",
    "mean_ttft_s",
    "p95_ttft_s",
    "mean_e2e_s",
    "p95_e2e_s",
    "tok_s",
    "cached_tokens",
    "expected_cached_tokens",
    "measured_hit_rate",
    "notes",
]


def regime_mode_table(summary: pl.DataFrame, regime: str, mode: str) -> pl.DataFrame:
    """The summary rows of one prefix regime under one cache setting: the unit Snakemake's report files by.

    A regime the time budget dropped whole (the plan lists its points as not measured) has no rows: its table is
    the header alone, so one missing regime never costs the rest of the report."""
    rows = summary.filter((pl.col("regime") == regime) & (pl.col("mode") == mode))
    if rows.is_empty():
        return pl.DataFrame(
            {c: [] for c in REGIME_TABLE_COLUMNS if c in summary.columns},
            schema={c: summary.schema[c] for c in REGIME_TABLE_COLUMNS if c in summary.columns},
        )
    return rows.select([c for c in REGIME_TABLE_COLUMNS if c in rows.columns]).sort(
        ["reuse_pct", "request_rate", "concurrency"], descending=[True, False, False]
    )
