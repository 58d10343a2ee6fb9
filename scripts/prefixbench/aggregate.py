"""Per-request records + per-point metadata -> one summary row per measurement point (polars).

The first columns are exactly the seed's table; means are over successful requests and the row
says so in `notes` whenever any request failed (failures are counted, never hidden).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from .stats import bootstrap_ratio_ci

SEED_COLUMNS = ["mode", "prefix_len_tokens", "concurrency", "mean_ttft_s", "mean_e2e_s", "p95_e2e_s", "tok_s", "notes"]
KEYS = ["mode", "regime", "reuse_pct", "concurrency", "request_rate"]
MODE_ORDER = {"no_prefix_cache": 0, "with_prefix_cache": 1}


def load_records(paths: Iterable[Path]) -> pl.DataFrame:
    rows = []
    for path in paths:
        with Path(path).open() as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    if not rows:
        raise ValueError("no request records to aggregate")
    df = pl.DataFrame(rows, infer_schema_length=None)
    if "request_rate" not in df.columns:  # records from before open-loop points existed
        df = df.with_columns(pl.lit(0.0).alias("request_rate"))
    return df.with_columns(
        pl.col("request_rate").cast(pl.Float64),
        pl.col("itl_s").list.mean().alias("itl_mean_s"),
        pl.col("cached_tokens").cast(pl.Int64, strict=False),
        pl.col("completion_tokens").cast(pl.Int64, strict=False),
        pl.col("prompt_tokens").cast(pl.Int64, strict=False),
    )


def load_meta(paths: Iterable[Path]) -> pl.DataFrame:
    rows = []
    for path in paths:
        meta = json.loads(Path(path).read_text())
        delta = meta.get("counters_delta", {})
        meta.setdefault("request_rate", 0.0)
        rows.append({
            **{k: meta[k] for k in KEYS}, "wall_s": meta["wall_s"], "requests_sent": meta["requests_sent"],
            "cache_reset": meta["cache_reset"], "measured_hit_rate": meta["measured_hit_rate"],
            "hit_tokens": delta.get("vllm:prefix_cache_hits_total"),
            "query_tokens": delta.get("vllm:prefix_cache_queries_total"),
            "server_ttft_sum_s": delta.get("vllm:time_to_first_token_seconds_sum"),
            "server_ttft_count": delta.get("vllm:time_to_first_token_seconds_count"),
            "server_e2e_sum_s": delta.get("vllm:e2e_request_latency_seconds_sum"),
            "server_e2e_count": delta.get("vllm:e2e_request_latency_seconds_count"),
            "peak_server_rss_gib": meta.get("peak_server_rss_gib"), "peak_gpu_mem_mib": meta.get("peak_gpu_mem_mib"),
            "peak_kv_cache_usage": meta.get("peak_kv_cache_usage"),
        })
    return pl.DataFrame(rows, infer_schema_length=None, schema_overrides={"request_rate": pl.Float64,
        "measured_hit_rate": pl.Float64, "hit_tokens": pl.Float64, "query_tokens": pl.Float64,
        "server_ttft_sum_s": pl.Float64, "server_ttft_count": pl.Float64, "server_e2e_sum_s": pl.Float64,
        "server_e2e_count": pl.Float64, "peak_gpu_mem_mib": pl.Float64, "peak_kv_cache_usage": pl.Float64,
        "peak_server_rss_gib": pl.Float64,
    })


def closed_loop(df: pl.DataFrame) -> pl.DataFrame:
    """Concurrency-sweep rows (request_rate 0); tables from before open-loop points are all closed loop."""
    return df.filter(pl.col("request_rate") == 0) if "request_rate" in df.columns else df


def open_loop(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("request_rate") > 0) if "request_rate" in df.columns else df.clear()


def _notes(row: dict) -> str:
    parts = [f"reuse {row['reuse_pct']}%"]
    if row["request_rate"]:
        parts.insert(0, f"open loop {row['request_rate']:g} req/s")
    if row["measured_hit_rate"] is not None:
        parts.append(f"hit rate {row['measured_hit_rate']:.0%}")
    if row["requests_failed"]:
        parts.append(f"{row['requests_failed']} of {row['requests_sent']} failed, means over ok only")
    if row["cache_reset"] != "ok":
        parts.append(f"cache reset {row['cache_reset']}")
    return "; ".join(parts)


def summarize(records: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    ok = pl.col("status") == "ok"
    per_point = records.group_by(KEYS).agg(
        pl.col("prefix_len_tokens").first(),
        pl.col("workload").first(),
        pl.len().alias("requests_recorded"),
        ok.sum().alias("requests_ok"),
        (~ok).sum().alias("requests_failed"),
        pl.col("ttft_s").filter(ok).mean().alias("mean_ttft_s"),
        pl.col("ttft_s").filter(ok).quantile(0.5, "linear").alias("p50_ttft_s"),
        pl.col("ttft_s").filter(ok).quantile(0.95, "linear").alias("p95_ttft_s"),
        pl.col("ttft_s").filter(ok).quantile(0.99, "linear").alias("p99_ttft_s"),
        pl.col("e2e_s").filter(ok).mean().alias("mean_e2e_s"),
        pl.col("e2e_s").filter(ok).quantile(0.5, "linear").alias("p50_e2e_s"),
        pl.col("e2e_s").filter(ok).quantile(0.95, "linear").alias("p95_e2e_s"),
        pl.col("e2e_s").filter(ok).quantile(0.99, "linear").alias("p99_e2e_s"),
        pl.col("itl_mean_s").filter(ok).mean().alias("mean_itl_s"),
        pl.col("completion_tokens").filter(ok).sum().alias("completion_tokens"),
        pl.col("prompt_tokens").filter(ok).sum().alias("prompt_tokens"),
        pl.col("cached_tokens").filter(ok).sum().alias("cached_tokens"),
        pl.col("expected_cached_tokens").sum().alias("expected_cached_tokens"),
        pl.col("ttft_s").filter(ok & (pl.col("prefix_group") == "shared")).mean().alias("mean_ttft_shared_s"),
        pl.col("ttft_s").filter(ok & (pl.col("prefix_group") != "shared")).mean().alias("mean_ttft_unique_s"),
        # Cold: the first request of the shared prefix (a miss by construction); warm: the ones after it.
        pl.col("ttft_s").filter(ok & (pl.col("prefix_group") == "shared") & (pl.col("expected_cached_tokens") == 0))
        .mean().alias("mean_ttft_cold_s"),
        pl.col("ttft_s").filter(ok & (pl.col("expected_cached_tokens") > 0)).mean().alias("mean_ttft_warm_s"),
    )
    df = per_point.join(meta, on=KEYS, how="left").with_columns(
        (pl.col("completion_tokens") / pl.col("wall_s")).alias("tok_s"),
        (pl.col("prompt_tokens") / pl.col("wall_s")).alias("prompt_tok_s"),
        (pl.col("requests_ok") / pl.col("wall_s")).alias("req_s"),
        (pl.col("requests_failed") / pl.col("requests_sent")).alias("error_rate"),
        (pl.col("cached_tokens") / pl.col("prompt_tokens")).alias("client_cached_fraction"),
        pl.when(pl.col("mode") == "no_prefix_cache").then(0.0)
        .otherwise(pl.col("expected_cached_tokens") / pl.col("prompt_tokens")).alias("expected_hit_rate"),
        (pl.col("server_ttft_sum_s") / pl.col("server_ttft_count")).alias("server_mean_ttft_s"),
        (pl.col("server_e2e_sum_s") / pl.col("server_e2e_count")).alias("server_mean_e2e_s"),
    ).with_columns(
        (pl.col("mean_ttft_s") - pl.col("server_mean_ttft_s")).alias("ttft_gap_s"),
        (pl.col("mean_e2e_s") - pl.col("server_mean_e2e_s")).alias("e2e_gap_s"),
    )
    df = df.with_columns(pl.Series("notes", [_notes(r) for r in df.iter_rows(named=True)], dtype=pl.String))
    df = df.with_columns(pl.col("mode").replace_strict(MODE_ORDER, default=9).alias("_mode_order")).sort(
        ["prefix_len_tokens", "regime", pl.col("reuse_pct"), "_mode_order", "request_rate", "concurrency"],
        descending=[False, False, True, False, False, False],
    ).drop("_mode_order")
    rest = [c for c in df.columns if c not in SEED_COLUMNS]
    return df.select(SEED_COLUMNS + rest)


def speedups(summary: pl.DataFrame) -> pl.DataFrame:
    """Off/on ratios per (regime, reuse, concurrency): >1 means the cache helped."""
    cols = ["mean_ttft_s", "p95_ttft_s", "mean_e2e_s", "p95_e2e_s", "tok_s", "measured_hit_rate",
            "mean_ttft_unique_s", "mean_ttft_shared_s", "peak_server_rss_gib", "peak_gpu_mem_mib", "peak_kv_cache_usage"]
    keys = ["regime", "prefix_len_tokens", "reuse_pct", "concurrency", "request_rate"]
    off = summary.filter(pl.col("mode") == "no_prefix_cache").select(keys + cols).rename({c: f"{c}_off" for c in cols})
    on = summary.filter(pl.col("mode") == "with_prefix_cache").select(keys + cols).rename({c: f"{c}_on" for c in cols})
    return off.join(on, on=keys, how="inner").with_columns(
        (pl.col("mean_ttft_s_off") / pl.col("mean_ttft_s_on")).alias("ttft_speedup"),
        (pl.col("p95_ttft_s_off") / pl.col("p95_ttft_s_on")).alias("p95_ttft_speedup"),
        (pl.col("mean_e2e_s_off") / pl.col("mean_e2e_s_on")).alias("e2e_speedup"),
        (pl.col("tok_s_on") / pl.col("tok_s_off")).alias("throughput_gain"),
        (pl.col("mean_ttft_unique_s_off") / pl.col("mean_ttft_unique_s_on")).alias("unique_prefix_ttft_speedup"),
    ).sort(["prefix_len_tokens", "regime", "reuse_pct", "request_rate", "concurrency"],
           descending=[False, False, True, False, False])


def with_confidence(sp: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """Add 95% bootstrap CIs (over requests) of the TTFT and E2E off/on ratios to each speed-up row."""
    ok = records.filter(pl.col("status") == "ok")
    groups = {key: grp for key, grp in ok.group_by(KEYS)}
    cols: dict[str, list] = {c: [] for c in ("ttft_speedup_lo", "ttft_speedup_hi", "e2e_speedup_lo", "e2e_speedup_hi")}
    for r in sp.iter_rows(named=True):
        point = (r["regime"], r["reuse_pct"], r["concurrency"], r["request_rate"])
        off, on = groups.get(("no_prefix_cache", *point)), groups.get(("with_prefix_cache", *point))
        for metric, name in (("ttft_s", "ttft_speedup"), ("e2e_s", "e2e_speedup")):
            ci = None if off is None or on is None else bootstrap_ratio_ci(off[metric].to_numpy(), on[metric].to_numpy())
            cols[f"{name}_lo"].append(ci[0] if ci else None)
            cols[f"{name}_hi"].append(ci[1] if ci else None)
    return sp.with_columns(*(pl.Series(name, values, dtype=pl.Float64) for name, values in cols.items()))


def write_summary(record_paths: Iterable[Path], meta_paths: Iterable[Path], summary_csv: Path, speedup_csv: Path) -> None:
    records = load_records(record_paths)
    summary = summarize(records, load_meta(meta_paths))
    summary.write_csv(summary_csv, float_precision=6)
    with_confidence(speedups(summary), records).write_csv(speedup_csv, float_precision=6)


REGIME_TABLE_COLUMNS = ["reuse_pct", "concurrency", "request_rate", "requests_sent", "requests_ok", "requests_failed",
                        "mean_ttft_s", "p95_ttft_s", "mean_e2e_s", "p95_e2e_s", "tok_s", "cached_tokens",
                        "expected_cached_tokens", "measured_hit_rate", "notes"]


def regime_mode_table(summary: pl.DataFrame, regime: str, mode: str) -> pl.DataFrame:
    """The summary rows of one prefix regime under one cache setting: the unit Snakemake's report files by."""
    rows = summary.filter((pl.col("regime") == regime) & (pl.col("mode") == mode))
    if rows.is_empty():
        raise ValueError(f"summary has no rows for regime {regime!r} and mode {mode!r}")
    return rows.select([c for c in REGIME_TABLE_COLUMNS if c in rows.columns]).sort(
        ["reuse_pct", "request_rate", "concurrency"], descending=[True, False, False])
