"""results/results.json: one run's result as a versioned, schema-checked file that another program (or `compare`) reads.

The markdown report is for people; this file is for programs: the setup the run measured on, every point's means and
tails, every contrast with its interval, MDE and verdict (the rows of contrasts.csv, prefixbench.verdicts), and the
cache-model checks (the hit rates the design expected and the cache model predicted against what the server
reported). Nothing in it is computed twice: it arranges the recorded tables. Latencies are in milliseconds. No
timestamp or path of the machine goes in, so a re-render of the same outputs writes the same bytes.

`SCHEMA_VERSION` counts incompatible changes (a field removed, renamed or retyped); adding a field does not change
it. config/schema/results.schema.json is the contract, and `validate` checks every file against it before it is
written. docs/results-json.md describes the fields.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from . import OFF, ON

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema" / "results.schema.json"

# summary.csv column -> results.json field of a point: seconds become milliseconds (`_s` -> `_ms`).
POINT_KEYS = ["mode", "regime", "workload", "prefix_len_tokens", "reuse_pct", "concurrency", "request_rate"]
POINT_COUNTS = ["requests_sent", "requests_ok", "requests_failed", "window_requests", "prompt_tokens", "cached_tokens"]
POINT_COUNTS += ["expected_cached_tokens", "completion_tokens"]
POINT_SECONDS = ["mean_ttft_s", "p50_ttft_s", "p95_ttft_s", "p99_ttft_s", "mean_e2e_s", "p50_e2e_s", "p95_e2e_s"]
POINT_SECONDS += ["p99_e2e_s", "mean_itl_s", "mean_tpot_s"]
POINT_NUMBERS = ["tok_s", "req_s", "measured_hit_rate", "window_hit_rate", "expected_hit_rate", "peak_kv_cache_usage"]
POINT_NUMBERS += ["mde_ttft_pct"]

# shape_points.csv columns that go into the cache-model check, as they are.
SHAPE_CHECK = ["regime", "workload", "concurrency", "request_rate", "requests", "prompt_tokens", "expected_cached_tokens"]
SHAPE_CHECK += ["predicted_cached_tokens", "measured_cached_tokens", "exact", "off_by_more_than_a_block"]
SHAPE_CHECK += ["max_diff_tokens", "unpredicted", "expected_hit_rate", "predicted_hit_rate", "measured_hit_rate"]
SHAPE_CHECK += ["kv_blocks"]


# Behind a router (issue 23), replica_points.csv, replica_contrasts.csv and routing_sim.csv (prefixbench.replicas_analysis)
# as the `replicas` section: per policy and point, its contrasts and the simulator beside it. Seconds become ms.
REPLICA_KEYS = ["policy", "regime", "workload", "reuse_pct", "concurrency", "request_rate", "replicas"]
REPLICA_COUNTS = ["passes", "requests", "unattributed", "prompt_tokens", "predicted_requests", "exact"]
REPLICA_RATES = [f"{r}_hit_{k}" for r in ("traffic", "kept", "predicted", "measured") for k in ("rate", "lo", "hi")]
REPLICA_NUMBERS = [*REPLICA_RATES, "counter_hit_rate", "tok_s", "tok_s_lo", "tok_s_hi", "load_imbalance"]
REPLICA_SECONDS = ["ttft_mean_s", "ttft_lo_s", "ttft_hi_s", "ttft_p50_s", "ttft_p90_s"]
PAIR_KEYS = ["regime", "workload", "reuse_pct", "concurrency", "request_rate", "policy_a", "policy_b", "pairs"]
PAIR_FIELDS = [f"{m}_{k}" for m in ("ttft", "tok_s") for k in ("ratio", "lo", "hi", "mde_pct", "verdict", "reason")]
PAIR_FIELDS += ["hit_diff", "hit_diff_lo", "hit_diff_hi"]
SIM_FIELDS = ["policy", "regime", "workload", "reuse_pct", "concurrency", "request_rate", "replicas", "passes"]
SIM_FIELDS += ["sim_traffic_hit_rate", "sim_kept_hit_rate", "sim_predicted_hit_rate", "sim_load_imbalance"]
SIM_FIELDS += ["kept_within", "predicted_within"]


class ResultsError(ValueError):
    """The result does not match its schema: the message names each field that fails."""


@dataclass(frozen=True)
class Setup:
    """What the run's config says it measured on (the Snakemake edge fills it from the rule's params)."""

    target: str
    model: Mapping[str, Any]
    block_size: int
    max_tokens: int
    dtype: str | None
    config: Mapping[str, Any]  # the whole run config: its digest identifies the setup


def clean(value: Any) -> Any:
    """A JSON value: NaN and infinities (which JSON cannot hold) become null, nested values too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def ms(value: float | None) -> float | None:
    """Seconds to milliseconds, rounded to a microsecond (the recorded tables hold microseconds)."""
    return None if value is None else round(value * 1000, 3)


def config_digest(config: Mapping[str, Any]) -> str:
    """sha256 of the config as canonical JSON (sorted keys): two runs with the same digest ran the same config."""
    text = json.dumps(clean(config), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def engine_of(lifetimes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The serving engine and its version as the cache-on lifetime recorded them (the first lifetime's otherwise)."""
    info = next((i for i in lifetimes if i.get("mode") == ON), lifetimes[0] if lifetimes else {})
    return {"name": info.get("engine") or "vllm", "version": info.get("vllm_version")}


def setup_section(setup: Setup, lifetimes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What was run, on what: the config's facts beside what each server lifetime recorded of itself."""
    info = next((i for i in lifetimes if i.get("mode") == ON), lifetimes[0] if lifetimes else {})
    model = dict(setup.model)
    choice = info.get("dtype_choice") or {}
    bench = dict(setup.config.get("benchmark", {}))
    return {
        "target": setup.target,
        "hardware": dict(info.get("hardware") or {}),
        "engine": engine_of(lifetimes),
        "endpoint": not info.get("started_by_prefixbench", True),
        "model": {
            "name": model.get("served_name"),
            "path": model.get("path"),
            "source": model.get("source"),
            "weights": "random" if model.get("source") == "dummy" else "real",
        },
        "dtype": choice.get("dtype") or setup.dtype,
        "block_size": setup.block_size,
        "max_tokens": setup.max_tokens,
        "kv_blocks": info.get("kv_blocks"),
        "concurrency": sorted(bench.get("concurrency", [])),
        "request_rates": sorted(bench.get("request_rates", [])),
        "repeats": bench.get("repeats"),
        "instances": bench.get("instances"),
        "paired": bench.get("paired"),
        "lifetimes": [
            {
                "mode": i.get("mode"),
                "instance": i.get("instance"),
                "lifetime": i.get("lifetime"),
                "startup_s": i.get("startup_s"),
                "kv_blocks": i.get("kv_blocks"),
            }
            for i in lifetimes
        ],
        "config_digest": config_digest(setup.config),
    }


def point_records(summary: pl.DataFrame) -> list[dict[str, Any]]:
    """Every measured point (one mode, regime, reuse level and load), its means and tails in ms."""
    out = []
    for r in summary.iter_rows(named=True):
        rec: dict[str, Any] = {k: r.get(k) for k in POINT_KEYS}
        rec["request_rate"] = float(rec["request_rate"] or 0.0)
        rec |= {k: (None if r.get(k) is None else int(r[k])) for k in POINT_COUNTS}
        rec |= {k.removesuffix("_s") + "_ms": ms(r.get(k)) for k in POINT_SECONDS}
        rec |= {k: r.get(k) for k in POINT_NUMBERS}
        out.append(rec)
    return out


def contrast_records(contrasts: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows of contrasts.csv as they are (prefixbench.verdicts.COLUMNS)."""
    return [dict(r) for r in contrasts.iter_rows(named=True)]


def cache_model_section(summary: pl.DataFrame, speedup: pl.DataFrame, shape_points: pl.DataFrame) -> dict[str, Any]:
    """The cache-model checks as aggregation recorded them: per single-prefix point with the cache on, the hit rate the
    design expected against the server's; per shape point, the cached tokens the cache model predicted (replayed over
    the actual sends and the server's KV capacity) against the server's; and the two totals that must be zero
    (hit tokens with the cache off, cached tokens of forced misses)."""
    from .aggregate import single_prefix

    single, _ = single_prefix(summary, speedup)
    on = single.filter(pl.col("mode") == ON)
    hit_rates = [
        {
            "regime": r["regime"],
            "reuse_pct": r["reuse_pct"],
            "concurrency": r["concurrency"],
            "request_rate": float(r.get("request_rate") or 0.0),
            "prompt_tokens": r.get("prompt_tokens"),
            "expected_cached_tokens": r.get("expected_cached_tokens"),
            "measured_cached_tokens": r.get("cached_tokens"),
            "expected_hit_rate": r.get("expected_hit_rate"),
            "measured_hit_rate": r.get("measured_hit_rate"),
        }
        for r in on.iter_rows(named=True)
    ]
    off_hits = total(summary.filter(pl.col("mode") == OFF), "hit_tokens")
    salted = total(speedup, "salted_cached_tokens")
    shapes = [
        {k: r.get(k) for k in SHAPE_CHECK} | {"request_rate": float(r.get("request_rate") or 0.0)}
        for r in (shape_points.iter_rows(named=True) if shape_points.height else [])
    ]
    return {
        "single_prefix": hit_rates,
        "shapes": shapes,
        "cache_off_hit_tokens": off_hits,
        "forced_miss_cached_tokens": salted,
    }


def per_replica(text: str | None, kind: type) -> list | None:
    """ "26/22" (a value per replica, as the CSV holds it) as a list."""
    return None if text is None else [kind(x) for x in str(text).split("/")]


def replicas_section(points: pl.DataFrame, contrasts: pl.DataFrame, sim: pl.DataFrame) -> dict[str, Any] | None:
    """The Across-replicas tables as aggregation recorded them, or None for one server (the key is then left out)."""
    if points.is_empty():
        return None
    rows = []
    for r in points.iter_rows(named=True):
        rec: dict[str, Any] = {k: r.get(k) for k in REPLICA_KEYS}
        rec["request_rate"] = float(rec["request_rate"] or 0.0)
        rec |= {k: (None if r.get(k) is None else int(r[k])) for k in REPLICA_COUNTS}
        rec |= {k: r.get(k) for k in REPLICA_NUMBERS}
        rec |= {k.removesuffix("_s") + "_ms": ms(r.get(k)) for k in REPLICA_SECONDS}
        rec["requests_per_replica"] = per_replica(r.get("requests_per_replica"), int)
        rec["peak_kv_per_replica"] = per_replica(r.get("peak_kv_per_replica"), float)
        rows.append(rec)
    pairs = [{k: r.get(k) for k in PAIR_KEYS + PAIR_FIELDS} for r in contrasts.iter_rows(named=True)] if contrasts.height else []
    simulated = [
        {k: r.get(k) for k in SIM_FIELDS} | {"sim_requests_per_replica": per_replica(r.get("sim_requests_per_replica"), int)}
        for r in (sim.iter_rows(named=True) if sim.height else [])
    ]
    for rec in (*pairs, *simulated):
        rec["request_rate"] = float(rec["request_rate"] or 0.0)
    return {"points": rows, "contrasts": pairs, "simulation": simulated}


def total(df: pl.DataFrame, column: str) -> int | None:
    """A count column's sum, None where the table has no such column or nothing in it. A run without forced misses
    (one from before the paired design, re-aggregated) has the `salted_*` columns, empty, and a CSV's empty column
    reads back as text: it counts as none, as a table without the column does."""
    if column not in df.columns or df[column].null_count() == df.height:
        return None
    return int(df[column].cast(pl.Float64, strict=False).fill_null(0).sum())


def totals(summary: pl.DataFrame, speedup: pl.DataFrame) -> dict[str, int]:
    """Points, requests and failures, forced misses included (as the report counts them)."""
    return {
        "points": summary.height,
        "requests": (total(summary, "requests_sent") or 0) + (total(speedup, "salted_requests") or 0),
        "failed": (total(summary, "requests_failed") or 0) + (total(speedup, "salted_failed") or 0),
    }


def build_results(
    setup: Setup,
    lifetimes: Sequence[Mapping[str, Any]],
    summary: pl.DataFrame,
    speedup: pl.DataFrame,
    contrasts: pl.DataFrame,
    shape_points: pl.DataFrame | None = None,
    replicas: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None = None,
) -> dict[str, Any]:
    """The whole result, a JSON-ready dict (schema config/schema/results.schema.json). `replicas`: replica_points,
    replica_contrasts and routing_sim (a replicated run's `replicas` section; left out for one server)."""
    if "request_rate" not in summary.columns:
        summary = summary.with_columns(pl.lit(0.0).alias("request_rate"))
    result = {
        "schema_version": SCHEMA_VERSION,
        "setup": setup_section(setup, lifetimes),
        "totals": totals(summary, speedup),
        "points": point_records(summary),
        "contrasts": contrast_records(contrasts),
        "cache_model": cache_model_section(summary, speedup, shape_points if shape_points is not None else pl.DataFrame()),
    }
    if replicas is not None and (section := replicas_section(*replicas)) is not None:
        result["replicas"] = section
    return clean(result)


def validate(result: Mapping[str, Any], schema_path: Path = SCHEMA_PATH) -> None:
    """Raise ResultsError naming every place where `result` breaks the schema (all of them, not the first)."""
    import jsonschema  # type: ignore[import-untyped]  # a dependency of snakemake; no stubs in the environment

    schema = json.loads(schema_path.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(result), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:20]]
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ResultsError(f"results.json does not match {schema_path.name}:\n" + "\n".join(lines) + more)


def dumps(result: Mapping[str, Any]) -> str:
    """The file's text: indented, keys in the builder's order, ending in a newline."""
    return json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def read_results(path: Path) -> dict[str, Any]:
    """A run's results.json (a file, or a folder holding one), checked against the schema of its version."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "results.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found (a run from before results.json: re-render it, bash scripts/rerender.sh RUN OUT)"
        )
    data = json.loads(path.read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema_version {data.get('schema_version')!r}, this code reads {SCHEMA_VERSION}")
    validate(data)
    return data


def read_contrast_table(path: Path) -> pl.DataFrame:
    """contrasts.csv with its columns' types (a column empty in this run reads back as text otherwise)."""
    from .verdicts import SCHEMA

    return pl.read_csv(path, schema_overrides=SCHEMA, infer_schema_length=None)


def write_results(
    setup: Setup,
    info_paths: Sequence[Path],
    summary_csv: Path,
    speedup_csv: Path,
    contrasts_csv: Path,
    shape_points_csv: Path | None,
    out: Path,
    schema_path: Path = SCHEMA_PATH,
    replica_csvs: tuple[Path, Path, Path] | None = None,
) -> None:
    """Read the run's recorded files, build the result, validate it, write it (nothing is written when invalid).
    `replica_csvs`: replica_points.csv, replica_contrasts.csv, routing_sim.csv (empty files for one server)."""
    from .replicas_analysis import read_table
    from .shapes.results import read_shape_table

    result = build_results(
        setup,
        [json.loads(Path(p).read_text()) for p in info_paths],
        pl.read_csv(summary_csv, infer_schema_length=None),
        pl.read_csv(speedup_csv, infer_schema_length=None),
        read_contrast_table(contrasts_csv),
        read_shape_table(shape_points_csv),
        (read_table(replica_csvs[0]), read_table(replica_csvs[1]), read_table(replica_csvs[2])) if replica_csvs else None,
    )
    validate(result, schema_path)
    Path(out).write_text(dumps(result))
