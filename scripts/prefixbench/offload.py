"""A second KV tier in CPU memory, measured and predicted request by request (issue 24; docs/offload.md).

The kv_overflow sweep runs in two more small-KV lifetimes of the cache-on server, back to back: the same GPU pool
without the tier (`kv_notier`) and with it (`kv_cputier`). Each pass (one point, one repeat, from a reset cache) is
replayed through the two-tier model (kvcache_tiers) with the requests' own times, the GPU pool the server reported
and the CPU blocks its `cpu_gib` buys, over seeded draws of the order vLLM makes a transfer's blocks evictable in.

Measured: a request's `cached_tokens` is GPU + CPU hits; the split per tier comes from the counters: per pass always
(the point's counter deltas per repeat), and per request where the measuring step recorded each request's own
counter deltas (`counters_delta` in the record; requests sent one at a time). Written: every request with its
predicted and measured split (offload_requests.csv), every pass with the per-tier counter checks and the load
bandwidth (offload_points.csv), TTFT per tier (GPU hit, CPU hit, miss) with 95% intervals per prompt length
(offload_ttft.csv), and the trace's hit rate against CPU memory from the model (offload_trace.csv).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .kvcache import Request
from .kvcache_tiers import cpu_tier_blocks, replay_runs, sequential_hit_rate, summarize_draws
from .metrics import MetricNames
from .offload_plan import OFFLOAD_CHART_NAMES, OFFLOAD_TABLE_NAMES, TIER_LIFETIMES, not_run_reason, tier_order  # noqa: F401
from .shapes.trace import TRACE_BLOCK_TOKENS
from .stats import LEVEL, N_BOOT, bootstrap_ratio_ci

# The two small-KV lifetimes of the cache-on server (prefixbench.design's folder names), and which has the tier.
TIER_NAMES = {False: "without tier", True: "with tier"}
DRAWS = 32  # seeded draws of the evictable order per pass: enough to see which requests it decides
HIT_CLASSES = ("GPU hit", "CPU hit", "miss")
# GPU pools the trace curve is drawn for, in trace blocks (the trace's own scale: its longest request is 247 blocks,
# so every request fits and every point has the same requests); GiB of the served model's KV where known.
TRACE_GPU_BLOCKS = (1_000, 3_000)
TRACE_CPU_FACTORS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)  # CPU tiers as multiples of that GPU pool
MIN_TTFT_SAMPLES = 4  # fewer requests in a class give a mean without an interval


class OffloadDataError(ValueError):
    """The run's data cannot answer the offload question (a missing metric name, no records): says what is missing."""


@dataclass(frozen=True)
class TierMetrics:
    """The engine's names for the CPU tier's counters (engines: MetricNames' optional fields)."""

    gpu_hits: str
    gpu_queries: str
    cpu_hits: str
    cpu_queries: str
    load_bytes: str
    load_time: str
    store_bytes: str
    store_time: str

    @classmethod
    def of(cls, names: MetricNames) -> TierMetrics:
        """From an engine's MetricNames; an engine without the tier's counters cannot be analysed here."""
        fields = (
            "external_prefix_hits",
            "external_prefix_queries",
            "offload_load_bytes",
            "offload_load_time",
            "offload_store_bytes",
            "offload_store_time",
        )
        got = {f: getattr(names, f, None) for f in fields}
        if missing := [f for f, v in got.items() if not v]:
            raise OffloadDataError(f"the engine's MetricNames has no {', '.join(missing)}: the CPU tier's counters are unknown")
        return cls(names.prefix_hits, names.prefix_queries, *(str(got[f]) for f in fields))


@dataclass(frozen=True)
class TierSetup:
    """What the model needs beyond the records: the KV block size, the tier's size and the served model's KV bytes
    per token (config.json and dtype), and the run's seed."""

    block_size: int
    cpu_gib: float
    bytes_per_token: float | None
    seed: int
    draws: int = DRAWS

    @property
    def cpu_blocks(self) -> int | None:
        """Blocks the tier holds (None: the model's KV size per token is unknown)."""
        return cpu_tier_blocks(self.cpu_gib, self.bytes_per_token, self.block_size) if self.bytes_per_token else None

    @property
    def bytes_per_block(self) -> float | None:
        return self.bytes_per_token * self.block_size if self.bytes_per_token else None


def lifetime_of(path: Path | str) -> str | None:
    """The tier lifetime a raw file belongs to (its folder under results/raw/MODE/), or None."""
    parts = Path(path).parts
    return next((p for p in parts if p in TIER_LIFETIMES), None)


def read_records(paths: Iterable[Path | str]) -> list[dict]:
    """Every request record of the tier lifetimes' point files, each with `tier_on` from its folder."""
    out = []
    for path in paths:
        lifetime = lifetime_of(path)
        if lifetime is None:
            continue
        for line in Path(path).read_text().splitlines():
            if line.strip():
                out.append({**json.loads(line), "tier_on": TIER_LIFETIMES[lifetime]})
    return out


def read_pass_counters(meta_paths: Iterable[Path | str]) -> dict[tuple[bool, str, int], dict[str, float]]:
    """(tier on, regime, repeat) -> the pass's counter deltas, from each point's meta.json."""
    out = {}
    for path in meta_paths:
        lifetime = lifetime_of(path)
        if lifetime is None:
            continue
        meta = json.loads(Path(path).read_text())
        for repeat, delta in enumerate(meta.get("counters_delta_per_repeat") or []):
            out[(TIER_LIFETIMES[lifetime], meta["regime"], repeat)] = delta
    return out


def measured_split(rec: Mapping[str, Any], names: TierMetrics) -> tuple[float | None, float | None]:
    """A request's own GPU and CPU hit tokens from its counter deltas (None where the record has none)."""
    delta = rec.get("counters_delta")
    if not isinstance(delta, Mapping) or names.gpu_hits not in delta:
        return None, None
    return float(delta.get(names.gpu_hits, 0.0)), float(delta.get(names.cpu_hits, 0.0))


def hit_class(cached: float | None, gpu: float | None, cpu: float | None) -> str | None:
    """Which tier served a request: a miss (nothing cached), a CPU hit (any CPU-tier tokens), a GPU hit; None: not
    known (a hit whose split was neither measured nor predicted exactly)."""
    if cached is not None and cached == 0:
        return "miss"
    if cpu is None or gpu is None:
        return None
    if cpu > 0:
        return "CPU hit"
    return "GPU hit" if gpu > 0 else "miss"


def pass_requests(rows: Sequence[Mapping[str, Any]], hashes: Mapping[tuple[str, int], Sequence[str]]) -> list[Request]:
    """The model's requests of one pass, as sent (a request that never reached the engine holds no blocks)."""
    return [
        Request(
            r["request_index"],
            tuple(hashes.get((r["regime"], r["request_index"]), ())),
            int(r["prompt_tokens"]),
            int(r.get("completion_tokens") or 1),
            float(r.get("start_s") or 0.0),
            float(r.get("start_s") or 0.0) + float(r.get("e2e_s") or 0.0),
        )
        for r in rows
        if r.get("prompt_tokens")
    ]


def _request_row(rec: Mapping[str, Any], pred, names: TierMetrics, unplaced: str | None) -> dict[str, Any]:
    """One request's row: measured split (its own counters), predicted split (modal pair, ranges), the checks."""
    gpu, cpu = measured_split(rec, names)
    cached = rec.get("cached_tokens")
    row: dict[str, Any] = {
        "measured_gpu_tokens": gpu,
        "measured_cpu_tokens": cpu,
        "counters_match": None if gpu is None or cpu is None or cached is None else gpu + cpu == cached,
        "unpredicted": unplaced,
    }
    if pred is None:
        return row | {"hit_class": hit_class(cached, gpu, cpu)}
    modal = pred.modal_gpu + pred.modal_cpu
    row |= {
        "predicted_gpu_tokens": pred.modal_gpu,
        "predicted_cpu_tokens": pred.modal_cpu,
        "predicted_gpu_min": pred.gpu_min,
        "predicted_gpu_max": pred.gpu_max,
        "predicted_cpu_min": pred.cpu_min,
        "predicted_cpu_max": pred.cpu_max,
        "predicted_cached_mean": pred.gpu_mean + pred.cpu_mean,
        "predicted_modal_share": pred.modal_share,
        "order_decides": not pred.exact,  # draws of the evictable order disagree on this request
    }
    if cached is not None:
        split_known = gpu is not None and cpu is not None
        row["exact"] = pred.exact and cached == modal and (not split_known or (gpu, cpu) == (pred.modal_gpu, pred.modal_cpu))
        lo, hi = pred.gpu_min + pred.cpu_min, pred.gpu_max + pred.cpu_max
        row["within_range"] = pred.holds(gpu, cpu) if split_known else lo <= cached <= hi
    if gpu is None and pred.exact and cached == modal:  # no counters of its own: the exact prediction names the tier
        gpu, cpu = pred.modal_gpu, pred.modal_cpu
    return row | {"hit_class": hit_class(cached, gpu, cpu)}


def request_table(
    records: Sequence[Mapping[str, Any]],
    hashes: Mapping[tuple[str, int], Sequence[str]],
    setup: TierSetup,
    names: TierMetrics,
    shapes: Mapping[str, Mapping[str, Any]],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every request of both tier lifetimes with its predicted and measured split, and every pass's draw totals
    (rows tier_on, regime, repeat, draw, predicted gpu/cpu tokens). The first request of a pass follows a reset and
    idle wait (`after_idle`): TTFT statistics leave it out."""
    passes: dict[tuple[bool, str, int], list[Mapping[str, Any]]] = {}
    for r in records:
        passes.setdefault((bool(r["tier_on"]), r["regime"], int(r.get("repeat") or 0)), []).append(r)
    rows, totals = [], []
    for (tier_on, regime, repeat), recs in passes.items():
        recs = sorted(recs, key=lambda r: float(r.get("start_s") or 0.0))
        blocks = next((int(r["kv_blocks"]) for r in recs if r.get("kv_blocks")), None)
        cpu_blocks = setup.cpu_blocks if tier_on else 0
        preds: Mapping[object, Any] = {}
        unplaced: Mapping[object, str] = {}
        if blocks is not None and cpu_blocks is not None:
            ok = [r for r in recs if r.get("status") == "ok"]
            runs, unplaced = replay_runs(
                pass_requests(ok, hashes), blocks, cpu_blocks, setup.block_size, setup.draws, f"{setup.seed}:{regime}:{repeat}"
            )
            preds = summarize_draws(runs)
            for d, run in enumerate(runs):
                totals.append(
                    {
                        "tier_on": tier_on,
                        "regime": regime,
                        "repeat": repeat,
                        "draw": d,
                        "predicted_gpu_tokens": sum(h.gpu_tokens for h in run.values()),
                        "predicted_cpu_tokens": sum(h.cpu_tokens for h in run.values()),
                    }
                )
        params = shapes.get(regime, {}).get("params", {})
        for n, r in enumerate(recs):
            key = r["request_index"]
            base = {
                "tier": TIER_NAMES[tier_on],
                "tier_on": tier_on,
                "regime": regime,
                "working_set": params.get("working_set", r.get("working_set")),
                "doc_tokens": params.get("doc_tokens"),
                "repeat": repeat,
                "request_index": key,
                "status": r.get("status"),
                "after_idle": n == 0,
                "start_s": r.get("start_s"),
                "ttft_s": r.get("ttft_s"),
                "prompt_tokens": r.get("prompt_tokens"),
                "cached_tokens": r.get("cached_tokens"),
                "kv_blocks": blocks,
                "cpu_blocks": cpu_blocks,
            }
            pred = preds.get(key) if r.get("status") == "ok" else None
            rows.append(base | _request_row(r, pred, names, unplaced.get(key)))
    return pl.DataFrame(rows, infer_schema_length=None), pl.DataFrame(totals, infer_schema_length=None)


def _pct_range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(values, dtype=float), [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(lo), float(hi)


def point_table(
    req: pl.DataFrame,
    totals: pl.DataFrame,
    counters: Mapping[tuple[bool, str, int], Mapping[str, float]],
    names: TierMetrics,
    setup: TierSetup,
) -> pl.DataFrame:
    """Per pass: measured hits (cached tokens; GPU and CPU from the pass's counters), the model's draws (mean and 95%
    range of the pass's predicted hits), requests exact and within range, the per-tier counter check (sum of
    cached_tokens = GPU + CPU counter deltas) and the tier's transfers (load bandwidth, bytes per loaded block)."""
    ok = req.filter(pl.col("status") == "ok") if req.height else req
    rows = []
    for (tier_on, regime, repeat), grp in ok.group_by(["tier_on", "regime", "repeat"], maintain_order=True):
        delta = counters.get((bool(tier_on), str(regime), int(repeat)), {})
        prompt = int(grp["prompt_tokens"].sum())
        cached = int(grp["cached_tokens"].fill_null(0).sum())
        cg, cc = delta.get(names.gpu_hits), delta.get(names.cpu_hits, 0.0 if delta else None)
        draws = totals.filter((pl.col("tier_on") == tier_on) & (pl.col("regime") == regime) & (pl.col("repeat") == repeat))
        pred = (draws["predicted_gpu_tokens"] + draws["predicted_cpu_tokens"]).to_list() if draws.height else []
        lo, hi = _pct_range(pred) if pred else (None, None)
        load_b, load_t = delta.get(names.load_bytes), delta.get(names.load_time)
        cpu_tokens = cc if cc is not None else None
        row = {
            "tier": TIER_NAMES[bool(tier_on)],
            "tier_on": tier_on,
            "regime": regime,
            "working_set": grp["working_set"][0],
            "doc_tokens": grp["doc_tokens"][0],
            "repeat": repeat,
            "requests": grp.height,
            "prompt_tokens": prompt,
            "kv_blocks": grp["kv_blocks"][0],
            "cpu_blocks": grp["cpu_blocks"][0],
            "measured_cached_tokens": cached,
            "counter_gpu_tokens": cg,
            "counter_cpu_tokens": cpu_tokens,
            "counters_match": None if cg is None else bool(cached == cg + (cpu_tokens or 0.0)),
            "measured_hit_rate": cached / prompt if prompt else None,
            "gpu_hit_rate": cg / prompt if prompt and cg is not None else None,
            "cpu_hit_rate": cpu_tokens / prompt if prompt and cpu_tokens is not None else None,
            "predicted_hit_rate": float(np.mean(pred)) / prompt if pred and prompt else None,
            "predicted_gpu_hit_rate": float(np.mean(draws["predicted_gpu_tokens"].to_numpy())) / prompt
            if pred and prompt
            else None,
            "predicted_cpu_hit_rate": float(np.mean(draws["predicted_cpu_tokens"].to_numpy())) / prompt
            if pred and prompt
            else None,
            "predicted_lo_hit_rate": lo / prompt if lo is not None and prompt else None,
            "predicted_hi_hit_rate": hi / prompt if hi is not None and prompt else None,
            "predicted_requests": int(grp["exact"].is_not_null().sum()) if "exact" in grp.columns else 0,
            "exact": int(grp["exact"].fill_null(False).sum()) if "exact" in grp.columns else 0,
            "order_decides": int(grp["order_decides"].fill_null(False).sum()) if "order_decides" in grp.columns else 0,
            "within_range": int(grp["within_range"].fill_null(False).sum()) if "within_range" in grp.columns else 0,
            "split_measured": int(grp["measured_gpu_tokens"].is_not_null().sum()),
            "split_matches": int(grp["counters_match"].fill_null(False).sum()),
            "load_bytes": load_b,
            "load_time_s": load_t,
            "load_gb_per_s": load_b / load_t / 1e9 if load_b and load_t else None,
            "bytes_per_loaded_block": load_b / (cpu_tokens / setup.block_size) if load_b and cpu_tokens else None,
            "model_bytes_per_block": setup.bytes_per_block,
            "store_bytes": delta.get(names.store_bytes),
            "store_time_s": delta.get(names.store_time),
        }
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def mean_ci(values: Sequence[float], seed: int = 0) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of a mean of independent requests (one at a time: each its own cluster)."""
    x = np.asarray(values, dtype=float)
    if len(x) < MIN_TTFT_SAMPLES:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(N_BOOT, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(lo), float(hi)


def ttft_table(req: pl.DataFrame) -> pl.DataFrame:
    """Mean TTFT per tier setting, prompt length (the shape's doc_tokens) and hit class, with its 95% interval, and
    the class's mean share of the prompt served from cache. The first request of each pass (after idle) is left out."""
    if not req.height or "hit_class" not in req.columns:
        return pl.DataFrame()
    use = req.filter((pl.col("status") == "ok") & ~pl.col("after_idle") & pl.col("hit_class").is_not_null())
    rows: list[dict[str, Any]] = []
    for (tier_on, doc, cls), grp in use.group_by(["tier_on", "doc_tokens", "hit_class"], maintain_order=True):
        ttft = grp["ttft_s"].drop_nulls().to_list()
        ci = mean_ci(ttft, seed=len(rows))
        rows.append(
            {
                "tier": TIER_NAMES[bool(tier_on)],
                "tier_on": tier_on,
                "doc_tokens": doc,
                "hit_class": cls,
                "requests": len(ttft),
                "mean_prompt_tokens": float(np.mean(grp["prompt_tokens"].to_numpy())),
                "cached_share": float(np.mean((grp["cached_tokens"].fill_null(0) / grp["prompt_tokens"]).to_numpy())),
                "mean_ttft_s": float(np.mean(ttft)) if ttft else None,
                "ttft_ci_lo_s": ci[0] if ci else None,
                "ttft_ci_hi_s": ci[1] if ci else None,
            }
        )
    order = {c: i for i, c in enumerate(HIT_CLASSES)}
    return pl.DataFrame(rows).sort(["tier_on", "doc_tokens", pl.col("hit_class").replace_strict(order, default=9)])


def crossover_table(req: pl.DataFrame) -> pl.DataFrame:
    """With the tier, per prompt length: a miss's mean TTFT over a CPU hit's (and over a GPU hit's), with the 95%
    bootstrap interval of the ratio (independent requests): above 1, loading from the CPU tier was faster than
    recomputing. The same lifetime's misses, so no noise between server starts enters the comparison."""
    if not req.height or "hit_class" not in req.columns:
        return pl.DataFrame()
    use = req.filter(pl.col("tier_on") & (pl.col("status") == "ok") & ~pl.col("after_idle") & pl.col("ttft_s").is_not_null())
    rows: list[dict[str, Any]] = []
    for (doc,), grp in use.group_by(["doc_tokens"], maintain_order=True):
        miss = grp.filter(pl.col("hit_class") == "miss")["ttft_s"].to_numpy()
        for cls in ("CPU hit", "GPU hit"):
            hit = grp.filter(pl.col("hit_class") == cls)["ttft_s"].to_numpy()
            if not len(miss) or not len(hit):
                continue
            ci = bootstrap_ratio_ci(miss, hit) if min(len(miss), len(hit)) >= MIN_TTFT_SAMPLES else None
            rows.append(
                {
                    "doc_tokens": doc,
                    "hit_class": cls,
                    "misses": len(miss),
                    "hits": len(hit),
                    "miss_ttft_s": float(miss.mean()),
                    "hit_ttft_s": float(hit.mean()),
                    "speedup": float(miss.mean() / hit.mean()),
                    "speedup_ci_lo": ci[0] if ci else None,
                    "speedup_ci_hi": ci[1] if ci else None,
                }
            )
    return pl.DataFrame(rows).sort("doc_tokens") if rows else pl.DataFrame()


def trace_curve(
    prompts: Sequence[Sequence[str]], bytes_per_token: float | None, seed: int, gpu_blocks: Sequence[int] = TRACE_GPU_BLOCKS
) -> pl.DataFrame:
    """The trace's prefix hit rate through both tiers, one request at a time, in its own 512-token blocks: for each
    GPU pool of `gpu_blocks` trace blocks, CPU tiers of TRACE_CPU_FACTORS x that pool; GiB
    from the served model's KV bytes per token (None: the size in blocks only). Requests larger than the GPU pool are
    left out (counted). One seeded draw of the evictable order per point."""
    rows = []
    per_block = bytes_per_token * TRACE_BLOCK_TOKENS / 2**30 if bytes_per_token else None
    for g in gpu_blocks:
        for f in TRACE_CPU_FACTORS:
            c = int(round(g * f))
            rate, left_out = sequential_hit_rate(prompts, g, c, random.Random(f"{seed}:trace:{g}:{c}"))
            rows.append(
                {
                    "gpu_trace_blocks": g,
                    "gpu_gib": g * per_block if per_block else None,
                    "cpu_trace_blocks": c,
                    "cpu_gib": c * per_block if per_block else None,
                    "hit_rate": None if math.isnan(rate) else rate,
                    "left_out": left_out,
                }
            )
    return pl.DataFrame(rows)


def trace_prompts(rows: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """A Mooncake trace's requests as block keys (its hash ids name equal prefixes)."""
    return [[str(h) for h in r["hash_ids"]] for r in rows]


def nominal_link_gb_per_s(hardware: Mapping[str, Any]) -> float | None:
    """The host link's nominal bandwidth per direction (GB/s) where the lifetime recorded the GPU's PCIe link
    (`gpu_pcie`: {gen, width}); None where it did not (then only the achieved bandwidth is stated)."""
    pcie = hardware.get("gpu_pcie") if isinstance(hardware, Mapping) else None
    if not isinstance(pcie, Mapping):
        return None
    rate = PCIE_GT_S.get(int(pcie.get("gen") or 0))
    width = int(pcie.get("width") or 0)
    if rate is None or not width:
        return None
    return rate[0] * rate[1] * width / 8


# PCIe generation -> (GT/s per lane, line-code efficiency): 8b/10b to gen 2, 128b/130b gen 3-5, FLIT (242/256) gen 6.
PCIE_GT_S = {1: (2.5, 0.8), 2: (5.0, 0.8), 3: (8.0, 128 / 130), 4: (16.0, 128 / 130), 5: (32.0, 128 / 130), 6: (64.0, 242 / 256)}


def analyse(
    *,
    records: Sequence[Path],
    meta: Sequence[Path],
    prompts: Sequence[Path],
    model_dir: str | None,
    kv_dtype: str,
    trace: Path | None,
    block_size: int,
    cpu_gib: float,
    seed: int,
    shapes: Mapping[str, Mapping[str, Any]],
    names: MetricNames,
) -> dict[str, pl.DataFrame]:
    """Every table of the offload analysis (OFFLOAD_TABLE_NAMES), from the tier lifetimes' raw files."""
    from .charts import kv_bytes_per_token
    from .shapes.results import load_hashes
    from .shapes.trace import all_rows

    metric = TierMetrics.of(names)
    recs = read_records(records)
    if not recs:
        raise OffloadDataError("no request records in the tier lifetimes: nothing to analyse")
    setup = TierSetup(block_size, cpu_gib, kv_bytes_per_token(model_dir, kv_dtype), seed)
    req, draws = request_table(recs, load_hashes(prompts), setup, metric, shapes)
    return {
        "requests": req,
        "points": point_table(req, draws, read_pass_counters(meta), metric, setup),
        "draws": draws,
        "ttft": ttft_table(req),
        "crossover": crossover_table(req),
        "trace": trace_curve(trace_prompts(all_rows(trace)), setup.bytes_per_token, seed) if trace else pl.DataFrame(),
    }


def read_table(path: Path | str) -> pl.DataFrame:
    """One of the analysis' CSVs (an empty file: an empty table)."""
    return pl.read_csv(path, infer_schema_length=None) if Path(path).stat().st_size else pl.DataFrame()


def write_table(df: pl.DataFrame, path: Path | str) -> None:
    """A CSV, or an empty file for a table without rows (read_table reads it back as empty)."""
    if df.width:
        df.write_csv(path)
    else:
        Path(path).write_text("")
