"""Workload shapes, request by request: the cache model's prediction beside the server's measured hits.

Each pass of a shape point (one lifetime, one repeat, from a reset cache) is replayed through
kvcache.replay with the requests' actual send and end times and the server's own KV capacity (from its
/metrics), so the prediction accounts for concurrency and eviction. With the cache off nothing can hit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from .. import OFF
from ..kvcache import Request, replay_detail
from . import KINDS, SHAPES

PASS = ["mode", "instance", "regime", "reuse_pct", "concurrency", "request_rate", "repeat"]
# Every kind's own columns (in the registry's order, each once), then the KV blocks the server reported.
SHAPE_COLUMNS = [*dict.fromkeys(c for k in KINDS.values() for c in k.table_fields), "kv_blocks"]


def load_hashes(prompt_paths: Iterable[Path]) -> dict[tuple[str, int], list[str]]:
    """(regime, request_index) -> the prompt's block hashes, for every shape prompt file."""
    out = {}
    for path in prompt_paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if "block_hashes" in rec:
                    out[(rec["regime"], rec["request_index"])] = rec["block_hashes"]
    return out


def read_shape_table(path: Path | None) -> pl.DataFrame:
    """One of aggregation's shape tables (shape_requests.csv: every request; shape_points.csv: the prediction check
    per point), or an empty table (a run without shapes leaves the file empty)."""
    return pl.read_csv(path, infer_schema_length=None) if path and Path(path).stat().st_size else pl.DataFrame()


def shape_requests(records: pl.DataFrame, hashes: dict[tuple[str, int], list[str]], block_size: int) -> pl.DataFrame:
    """One row per request of a shape point, with `predicted_cached_tokens` from the cache model."""
    shaped = records.filter(pl.col("workload").is_in(SHAPES))
    if shaped.is_empty():  # no workload shape in this run: an empty table of the columns (none nested: it is a CSV)
        return shaped.select([c for c in (*PASS, "workload", "request_index", "status") if c in shaped.columns])
    for col in SHAPE_COLUMNS:
        if col not in shaped.columns:
            shaped = shaped.with_columns(pl.lit(None).alias(col))
    parts = []
    for key, grp in shaped.group_by(PASS, maintain_order=True):
        mode, regime = key[0], key[2]
        blocks = grp["kv_blocks"].drop_nulls()
        reasons: list[str | None] = [None] * grp.height
        if mode == OFF or blocks.is_empty():
            predicted = [0 if mode == OFF else None] * grp.height
        else:
            reqs = [
                Request(
                    r["request_index"],
                    tuple(hashes.get((regime, r["request_index"]), ())),
                    r["prompt_tokens"] or 0,
                    r["completion_tokens"] or 1,
                    r["start_s"] or 0.0,
                    (r["start_s"] or 0.0) + (r["e2e_s"] or 0.0),
                )
                for r in grp.iter_rows(named=True)
                if r["prompt_tokens"]  # a request that never reached the engine holds no blocks
            ]
            got, unplaced = replay_detail(reqs, int(blocks[0]), block_size)
            predicted = [got.get(i) for i in grp["request_index"]]
            reasons = [unplaced.get(i) for i in grp["request_index"]]
        parts.append(
            grp.with_columns(
                pl.Series("predicted_cached_tokens", predicted, dtype=pl.Int64),
                pl.Series("unpredicted", reasons, dtype=pl.String),
            )
        )
    out = pl.concat(parts, how="diagonal_relaxed")
    keep = [
        *PASS,
        "workload",
        "request_index",
        "status",
        "in_window",
        "start_s",
        "ttft_s",
        "e2e_s",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "expected_cached_tokens",
        "predicted_cached_tokens",
        "unpredicted",
        *SHAPE_COLUMNS,
    ]
    return out.select([c for c in keep if c in out.columns])


def prediction_check(req: pl.DataFrame, block_size: int) -> pl.DataFrame:
    """Per shape point (cache on): predicted vs measured cached tokens, and the requests that differ by more
    than one block."""
    if "unpredicted" not in req.columns:  # tables from before the model followed admission
        req = req.with_columns(pl.lit(None, dtype=pl.String).alias("unpredicted"))
    unplaced = (
        req.filter((pl.col("mode") != OFF) & (pl.col("status") == "ok") & pl.col("unpredicted").is_not_null())
        .group_by(["regime", "workload", "concurrency", "request_rate"])
        .agg(pl.len().alias("unpredicted"), pl.col("unpredicted").first().alias("unpredicted_reason"))
    )
    on = req.filter((pl.col("mode") != OFF) & (pl.col("status") == "ok") & pl.col("predicted_cached_tokens").is_not_null())
    if on.is_empty():
        return pl.DataFrame()
    diff = (pl.col("cached_tokens") - pl.col("predicted_cached_tokens")).abs()
    return (
        on.group_by(["regime", "workload", "concurrency", "request_rate"], maintain_order=True)
        .agg(
            pl.len().alias("requests"),
            pl.col("prompt_tokens").sum().alias("prompt_tokens"),
            pl.col("expected_cached_tokens").sum().alias("expected_cached_tokens"),
            pl.col("predicted_cached_tokens").sum().alias("predicted_cached_tokens"),
            pl.col("cached_tokens").sum().alias("measured_cached_tokens"),
            (diff == 0).sum().alias("exact"),
            (diff > block_size).sum().alias("off_by_more_than_a_block"),
            diff.max().alias("max_diff_tokens"),
            pl.col("working_set").first().alias("working_set"),
            pl.col("kv_blocks").first().alias("kv_blocks"),
        )
        .join(unplaced, on=["regime", "workload", "concurrency", "request_rate"], how="left")
        .with_columns(
            pl.col("unpredicted").fill_null(0),
            (pl.col("expected_cached_tokens") / pl.col("prompt_tokens")).alias("expected_hit_rate"),
            (pl.col("predicted_cached_tokens") / pl.col("prompt_tokens")).alias("predicted_hit_rate"),
            (pl.col("measured_cached_tokens") / pl.col("prompt_tokens")).alias("measured_hit_rate"),
        )
    )
