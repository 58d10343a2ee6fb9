"""Trace replay: a window of a production trace (Mooncake format) with its sharing intact, sent open loop at its
own arrival pattern; and the whole trace's capacity curve, which places the served KV cache on it."""

from __future__ import annotations

import gzip
import json
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Arrivals, BuildContext, ReportKit, Shape, ShapeEvidence, ShapeKind
from .common import record

if TYPE_CHECKING:
    import polars as pl

TRACE_BLOCK_TOKENS = 512  # the Mooncake trace's hash-id block
CURVE_CAPACITIES = (1_000, 3_000, 10_000, 30_000, 100_000)


def load_trace(path: Path, start: int, count: int) -> list[dict]:
    """`count` requests of a Mooncake-format trace (timestamp ms, input/output lengths, 512-token hash_ids) from `start`."""
    out = []
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as fh:
        for n, line in enumerate(fh):
            if n >= start + count:
                break
            if n >= start:
                out.append(json.loads(line))
    if len(out) < count:
        raise ValueError(f"{path}: only {len(out)} requests from line {start}, {count} asked")
    return out


def all_rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def trace_chunk(hash_id: int, n_tokens: int, vocab: tuple[int, int]) -> list[int]:
    """The deterministic token ids standing for one trace block (the same id always gives the same tokens)."""
    rng = random.Random(f"trace-block:{hash_id}")
    return [rng.randrange(*vocab) for _ in range(n_tokens)]


def trace_replay(shape: Shape, block_size: int, max_model_len: int, max_tokens: int, vocab_size: int) -> list[dict]:
    """A window of a production trace with its sharing intact: each 512-token hash id becomes `chunk_tokens` token
    ids (a whole number of KV blocks, so equal ids mean equal cached blocks), plus one unique last token; arrival
    times are kept in pattern and scaled to a mean of `rate` requests/s; prompts are capped to fit the context."""
    p = shape.params
    chunk = p["chunk_tokens"]
    if chunk % block_size:
        raise ValueError(f"trace chunk_tokens ({chunk}) must be a multiple of the KV block size ({block_size})")
    rows = load_trace(Path(p["path"]), p.get("start", 0), p["requests"])
    max_chunks = max(1, (max_model_len - max_tokens - 1) // chunk)
    if p.get("max_chunks"):
        max_chunks = min(max_chunks, p["max_chunks"])
    vocab = (1000, max(1001, vocab_size - 1000))
    t0, t1 = rows[0]["timestamp"], rows[-1]["timestamp"]
    span = max(t1 - t0, 1) / 1000
    scale = (len(rows) / p["rate"]) / span if len(rows) > 1 else 1.0
    records = []
    for i, row in enumerate(rows):
        ids_used = row["hash_ids"][:max_chunks]
        ids = [t for h in ids_used for t in trace_chunk(h, chunk, vocab)]
        ids.append(vocab[0] - 1 - (i % 500))  # a last token of its own: the recomputed one never decides a hit
        records.append(
            record(
                ids,
                ids,
                block_size,
                request_index=i,
                arrival_s=(row["timestamp"] - t0) / 1000 * scale,
                trace_hash_ids=ids_used,
                trace_blocks_cut=len(row["hash_ids"]) - len(ids_used),
                prefix_group=f"trace-{ids_used[0]}",
                prefix_len_tokens=0,
                question="",
            )
        )
    return records


def trace_capacity_curve(path: Path, capacities: Sequence[int], limit: int | None = None) -> dict[int, float]:
    """Prefix hit rate of a block-level LRU over the whole trace (in its own 512-token blocks), per capacity: leading
    blocks found in cache count as hits, then every block of the request is touched (most recent last)."""
    rows = load_trace(path, 0, limit) if limit else all_rows(path)
    out = {}
    for cap in capacities:
        lru: OrderedDict[int, None] = OrderedDict()
        hit = total = 0
        for row in rows:
            ids = row["hash_ids"]
            n = 0
            for h in ids:
                if h not in lru:
                    break
                n += 1
            hit, total = hit + n, total + len(ids)
            for h in ids:
                lru[h] = None
                lru.move_to_end(h)
            while len(lru) > cap:
                lru.popitem(last=False)
        out[cap] = hit / total if total else 0.0
    return out


@dataclass(frozen=True)
class CurvePoints:
    """Where a served KV cache sits on the trace's capacity curve, in trace blocks: `native` at their real size
    (512 tokens), `scaled` as replayed (`chunk_tokens` each); `capacities` is every size the curve is computed at."""

    cap_tokens: int
    native: int
    scaled: int
    capacities: list[int]


def curve_capacities(kv_blocks: int, block_size: int, chunk_tokens: int) -> CurvePoints:
    """The capacities to compute the curve at for a server of `kv_blocks` blocks of `block_size` tokens: the fixed
    grid and the server's own two positions (pure, so aggregation can compute the curve once)."""
    cap_tokens = kv_blocks * block_size
    native = cap_tokens // TRACE_BLOCK_TOKENS
    scaled = cap_tokens // chunk_tokens
    return CurvePoints(cap_tokens, native, scaled, sorted({*CURVE_CAPACITIES, max(native, 1), max(scaled, 1)}))


def trace_curves(check: pl.DataFrame, shapes: Mapping[str, Mapping[str, Any]], block_size: int) -> pl.DataFrame:
    """The whole trace's capacity curve for each replayed trace whose server reported its KV size, at the fixed grid
    and the server's two positions: rows (regime, capacity_blocks, hit_rate). Aggregation writes it
    (trace_capacity.csv, the trace file its input), so the report reads the curve and never re-reads the trace."""
    import polars as pl

    rows = []
    tr = check.filter(pl.col("workload") == Trace.name) if check.height else check
    for regime in dict.fromkeys(tr["regime"].to_list() if tr.height else []):
        r = tr.filter(pl.col("regime") == regime).row(0, named=True)
        p = shapes[regime]["params"]
        if r["kv_blocks"] and Path(p["path"]).is_file():
            at = curve_capacities(int(r["kv_blocks"]), block_size, p["chunk_tokens"])
            curve = trace_capacity_curve(Path(p["path"]), at.capacities)
            rows += [{"regime": regime, "capacity_blocks": c, "hit_rate": v} for c, v in curve.items()]
    return pl.DataFrame(rows, schema={"regime": pl.String, "capacity_blocks": pl.Int64, "hit_rate": pl.Float64})


def read_trace_curves(path: Path | None) -> dict[str, dict[int, float]]:
    """trace_capacity.csv as regime -> {capacity in blocks: hit rate}; empty where the run replayed no trace."""
    import polars as pl

    if not path or not Path(path).stat().st_size:
        return {}
    out: dict[str, dict[int, float]] = {}
    for r in pl.read_csv(path).iter_rows(named=True):
        out.setdefault(r["regime"], {})[int(r["capacity_blocks"])] = float(r["hit_rate"])
    return out


def trace_words(
    check: pl.DataFrame,
    shapes: Mapping[str, Mapping[str, Any]],
    block_size: int,
    curves: Mapping[str, Mapping[int, float]],
    kit: ReportKit,
) -> str:
    """The trace replay: predicted vs measured hits, and where the served capacity sits on the trace's curve."""
    import polars as pl

    tr = check.filter(pl.col("workload") == Trace.name)
    if tr.is_empty():
        return ""
    r = tr.row(0, named=True)
    shape = shapes[r["regime"]]
    p = shape["params"]
    text = (
        f"{r['regime']}: the replayed window's hit rate was predicted {kit.fmt_pct(r['predicted_hit_rate'])} and measured "
        f"{kit.fmt_pct(r['measured_hit_rate'])} ({r['exact']} of {r['requests']} requests exact; with an unlimited cache "
        f"and one request at a time it would be {kit.fmt_pct(r['expected_hit_rate'])})."
    )
    if curve := curves.get(r["regime"]):
        at = curve_capacities(int(r["kv_blocks"]), block_size, p["chunk_tokens"])
        points = ", ".join(f"{c:,} blocks {kit.fmt_pct(v)}" for c, v in curve.items() if c in CURVE_CAPACITIES)
        text += (
            f" The whole trace's capacity curve (block-level LRU, hit rate by cache size in its 512-token blocks): {points}. "
            f"This server's KV cache ({r['kv_blocks']} blocks of {block_size} = {at.cap_tokens:,} tokens) holds "
            f"{at.native:,} of the trace's blocks at their real size, where the curve gives "
            f"{kit.fmt_pct(curve[max(at.native, 1)])}; scaled as replayed ({p['chunk_tokens']} tokens a block) it holds "
            f"{at.scaled:,}, where it gives {kit.fmt_pct(curve[max(at.scaled, 1)])}. The scaling keeps which requests "
            "share which blocks and their order, but shrinks every prefix (so prefill savings per hit are smaller than "
            f"in production), caps prompts to the model's context ({int(tr['requests'].sum())} requests; blocks cut "
            "where a prompt did not fit), and replaces output lengths with the fixed benchmark length."
        )
    return text


class Trace(ShapeKind):
    name = "trace"
    record_fields = ("arrival_s",)
    sections = ("trace",)

    def expand(self, name: str, params: dict[str, Any], repo_dir: Path) -> dict[str, Shape]:
        """A relative path that names a repository file (the vendored trace) is made absolute: found from any workdir."""
        if not Path(params["path"]).is_file() and (repo_dir / params["path"]).is_file():
            params = {**params, "path": str(repo_dir / params["path"])}
        return {name: Shape(name, self.name, params)}

    def data_files(self, shape: Shape) -> list[str]:
        """The trace file: its prompts are built from it and aggregation computes its capacity curve from it."""
        return [shape.params["path"]]

    def check(self, shape: Shape, target: Mapping[str, Any], endpoint: bool) -> list[str]:
        p = shape.params
        if not Path(p["path"]).is_file():
            return [f"shapes.{shape.name}.path={p['path']!r}: no such trace file"]
        if p["chunk_tokens"] % target["block_size"]:
            return [
                f"shapes.{shape.name}.chunk_tokens={p['chunk_tokens']} must be a multiple of the KV block size "
                f"({target['block_size']}), or trace blocks would not map to whole cached blocks"
            ]
        return []

    def loads(self, shape: Shape, concurrency: Sequence[int], rates: Sequence[float]) -> list[tuple[int, float]]:
        """Open loop at the shape's own mean rate (its arrival pattern is the test)."""
        return [(0, float(shape.params["rate"]))]

    def build(self, shape: Shape, ctx: BuildContext) -> list[dict]:
        return trace_replay(shape, ctx.block_size, ctx.max_model_len, ctx.max_tokens, ctx.vocab_size)

    def traffic(self, prompts: Sequence[dict], request_rate: float) -> Arrivals | None:
        """At the trace's scaled arrival times (open-loop points only)."""
        return Arrivals([p["arrival_s"] for p in prompts]) if request_rate else None

    def describe(self, params: Mapping[str, Any], kv_blocks: int | None) -> str:
        p = params
        return (
            f"Mooncake trace, requests {p.get('start', 0)}-{p.get('start', 0) + p['requests'] - 1}, each 512-token block as "
            f"{p['chunk_tokens']} tokens, arrivals scaled to {p['rate']:g} req/s"
        )

    def findings(self, ev: ShapeEvidence, kit: ReportKit) -> dict[str, str]:
        """Predicted vs measured hits of the replayed window, and the server's place on the trace's capacity curve."""
        return {"trace": trace_words(ev.check, ev.shapes, ev.block_size, ev.trace_curves, kit) if ev.check.height else ""}
