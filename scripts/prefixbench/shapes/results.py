"""Workload shapes, request by request: the cache model's prediction beside the server's measured hits.

Each pass of a shape point (one lifetime, one repeat, from a reset cache) is replayed through
kvcache.replay with the requests' actual send and end times and the server's own KV capacity (from its
/metrics), so the prediction accounts for concurrency and eviction. With the cache off nothing can hit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import polars as pl

from .. import OFF
from ..kvcache import Request, replay_detail
from ..paired import SALTED
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


# What keys a prompt's block hashes: a shape's prompt file has one prompt per request index; a regime's prompt file
# one per reuse level and request index (replicas_analysis reads both).
SHAPE_HASH_KEY = ("regime", "request_index")


def salted(hashes: tuple[str, ...], salt: str) -> tuple[str, ...]:
    """A forced miss's blocks: its `cache_salt` enters every block hash in vLLM, so it shares none with anything,
    but it still holds blocks while it runs (the paired design's miss arm)."""
    return tuple(f"{salt}|{h}" for h in hashes)


def arrival_starts(seqs: Sequence[int | None], starts: Sequence[float | None]) -> tuple[list[int], list[float | None]]:
    """One replica's requests in the order it received them, and when each reached it, as far as the client's clock
    can say: the rows' positions by `replica_seq` (their place in the replica's request log; rows without one after,
    at their send times), and each row's start as the latest send time among it and every request the replica
    received before it.

    Behind a router the order a replica receives requests is not the order they were sent: cache_aware first has
    every worker tokenize a request, so of two requests sent a millisecond apart the later one can reach the replica
    first, compute the shared blocks, and the earlier one hits them. A request cannot reach a replica before it was
    sent, nor before one the replica received ahead of it, so its start is the running maximum of the send times in
    arrival order: never earlier than its own send, monotone in arrival order (replay_detail breaks a tie in time by
    the requests' order, which this is). Ends stay the client's."""
    known = sorted((n for n, s in enumerate(seqs) if s is not None), key=lambda n: seqs[n])  # type: ignore[arg-type,return-value]
    out = list(starts)
    latest: float | None = None
    for n in known:
        if starts[n] is not None:
            latest = starts[n] if latest is None else max(latest, starts[n])  # type: ignore[type-var]
            out[n] = latest
    return known + [n for n, s in enumerate(seqs) if s is None], out


def replayed(
    grp: pl.DataFrame,
    hashes: Mapping[tuple, Sequence[str]],
    block_size: int,
    num_blocks: int,
    hash_key: Sequence[str],
    arrival: bool = False,
) -> tuple[list[int | None], list[str | None]]:
    """One cache's requests (one pass of one server, or of one replica) replayed through kvcache.replay_detail with
    their actual send and end times and `num_blocks` blocks: each row's predicted cached tokens, and why a row the
    model could not place has none. Rows are keyed by position, so two arms of a paired pass that send the same
    prompt stay two requests. `arrival`: one replica's cache behind a router, replayed in the order the replica
    received its requests (arrival_starts, from the records' `replica_seq`) rather than the order they were sent."""
    rows = list(grp.iter_rows(named=True))
    sent = [r["start_s"] for r in rows]
    order, starts = arrival_starts([r.get("replica_seq") for r in rows], sent) if arrival else (list(range(len(rows))), sent)
    reqs = [
        Request(
            n,
            salted(h, f"salt{n}") if r.get("arm") in SALTED else h,
            r["prompt_tokens"] or 0,
            r["completion_tokens"] or 1,
            min(starts[n] or 0.0, end),  # a replayed request never starts after its own end
            end,
        )
        for n in order
        for r in [rows[n]]
        if r["prompt_tokens"]  # a request that never reached the engine holds no blocks
        for h in [tuple(hashes.get(tuple(r[k] for k in hash_key), ()))]
        for end in [(r["start_s"] or 0.0) + (r["e2e_s"] or 0.0)]
    ]
    got, unplaced = replay_detail(reqs, num_blocks, block_size)
    return [got.get(n) for n in range(grp.height)], [unplaced.get(n) for n in range(grp.height)]


def with_predictions(
    records: pl.DataFrame,
    hashes: Mapping[tuple, Sequence[str]],
    block_size: int,
    keys: Sequence[str],
    hash_key: Sequence[str] = SHAPE_HASH_KEY,
) -> pl.DataFrame:
    """`predicted_cached_tokens` and `unpredicted` for every record: each group of `keys` (one cache: a pass of one
    server, or with `replica` among the keys, of one replica) replayed with the KV blocks its server reported. With
    the cache off nothing can hit; a group without a KV size is not predicted."""
    parts = []
    for key, grp in records.group_by(list(keys), maintain_order=True):
        mode = dict(zip(keys, key))["mode"]
        blocks = grp["kv_blocks"].drop_nulls()
        reasons: list[str | None] = [None] * grp.height
        predicted: list[int | None]
        if mode == OFF:
            predicted = [0] * grp.height
        elif "replica" in keys and grp["replica"][0] is None:  # the router's choice was not attributed: no cache to replay
            predicted = [None] * grp.height
            why = grp["replica_unknown"].to_list() if "replica_unknown" in grp.columns else [None] * grp.height
            reasons = [f"its replica is not known ({w or 'not attributed'})" for w in why]
        elif blocks.is_empty():
            predicted = [None] * grp.height
        else:
            predicted, reasons = replayed(grp, hashes, block_size, int(blocks[0]), hash_key, arrival="replica" in keys)
        parts.append(
            grp.with_columns(
                pl.Series("predicted_cached_tokens", predicted, dtype=pl.Int64),
                pl.Series("unpredicted", reasons, dtype=pl.String),
            )
        )
    return pl.concat(parts, how="diagonal_relaxed")


def cache_keys(records: pl.DataFrame) -> list[str]:
    """What one KV cache served: a pass of the server, or behind a router, a pass of one replica (each replica has
    its own KV pool; the records' `kv_blocks` is the serving replica's)."""
    replicated = "replica" in records.columns and records["replica"].is_not_null().any()
    return [*PASS, "replica"] if replicated else PASS


def shape_requests(records: pl.DataFrame, hashes: dict[tuple[str, int], list[str]], block_size: int) -> pl.DataFrame:
    """One row per request of a shape point, with `predicted_cached_tokens` from the cache model."""
    shaped = records.filter(pl.col("workload").is_in(SHAPES))
    if shaped.is_empty():  # no workload shape in this run: an empty table of the columns (none nested: it is a CSV)
        return shaped.select([c for c in (*PASS, "workload", "request_index", "status") if c in shaped.columns])
    for col in SHAPE_COLUMNS:
        if col not in shaped.columns:
            shaped = shaped.with_columns(pl.lit(None).alias(col))
    out = with_predictions(shaped, hashes, block_size, cache_keys(shaped))
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
