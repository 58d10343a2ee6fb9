"""Every contrast a run measured, one row each, with the claim rule's verdict: results/contrasts.csv.

The report, the charts and results.json all show the same verdicts, so they are computed once here, from the tables
aggregation wrote (speedup.csv, summary.csv, shape_points.csv), by the project's one claim rule
(findings.claims.judge): each row keeps its verdict (a short word), the reason and the rule's own sentence (`words`),
all three from one walk through the rule. Every effect is oriented so that > 1 means caching helps (an on/off TTFT
ratio such as the flag cost is inverted). The columns are the interface in docs/results-json.md (and the
coordination note CONTRASTS.md): added columns are allowed, renamed ones are not.

Families: `cache_effect` (hit against miss at a reuse level: the paired contrast inside cache-on lifetimes where the
point ran it, else cache-off against cache-on lifetimes), `shape` (a workload shape), `throughput` (output tok/s on
over off, per point and at a common p95 budget), `flag_cost` (cache on against off at 0% reuse: what leaving it on
costs), `control` (contrasts whose true ratio is 1: the 0%-reuse paired controls, the A/A and between-lifetime
controls, the throughput control at 0% reuse).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from .aggregate import closed_loop, interval_mde, single_prefix
from .contrasts import paired_effects
from .endpoint import cache_off_forced
from .findings.claims import KINDS, ci_of, floor_of, hit_bound_of, interval_gap, judge, why_unmeasured
from .findings.controls import aa_table
from .findings.derived import throughput_at_p95, throughput_floors

FAMILIES = ("cache_effect", "shape", "throughput", "flag_cost", "control")
VERDICTS = KINDS  # the claim rule's verdicts (findings.claims.Verdict.kind)
# The flag cost of a run whose cache off was forced misses on its one (cache-on) deployment: never measured.
ONE_DEPLOYMENT = "one deployment: cache off was forced misses on the cache-on server"

# The columns of contrasts.csv, in order, and their types (the file keeps them even where the run has no row).
SCHEMA: dict[str, Any] = {
    "family": pl.String,
    "regime": pl.String,
    "shape": pl.String,
    "reuse_pct": pl.Int64,
    "concurrency": pl.Int64,
    "request_rate": pl.Float64,
    "metric": pl.String,
    "design": pl.String,
    "baseline": pl.Float64,
    "treated": pl.Float64,
    "unit": pl.String,
    "ratio": pl.Float64,
    "lo": pl.Float64,
    "hi": pl.Float64,
    "mde_pct": pl.Float64,
    "n": pl.Int64,
    "n_unit": pl.String,
    "verdict": pl.String,
    "reason": pl.String,
    "label": pl.String,
    # Added beyond the interface's first columns:
    "prefix_len_tokens": pl.Int64,
    "floor_lo": pl.Float64,  # the A/A band the contrast was judged against (empty: none applies)
    "floor_hi": pl.Float64,
    "hit_rate": pl.Float64,  # the point's measured cache-on hit rate (its steady-state window where recorded)
    "expected_hit_rate": pl.Float64,  # workload shapes: what the design expects, and what the cache model predicted
    "predicted_hit_rate": pl.Float64,
    "p95_budget_ms": pl.Float64,  # throughput at a common p95: the budget it was read at
    "words": pl.String,  # the claim rule's own sentence (findings.claims.judge)
    "key": pl.String,  # what the contrast is, the same in any run that measured it (compare matches runs on it)
}
COLUMNS = list(SCHEMA)


@dataclass(frozen=True)
class Judged:
    """What the claim rule is given for one contrast (the arguments of claims.judge)."""

    ratio: float | None
    ci: tuple[float, float] | None = None
    floor: tuple[float, float] | None = None
    hit_bound: tuple[float, float] | None = None
    mde_pct: float | None = None
    failed: str | None = None
    no_interval: str | None = None  # why a ratio without an interval has none (claims.interval_gap); rounds if unset

    def columns(self, better: str = "faster", worse: str = "slower") -> dict[str, Any]:
        """The row's interval, and the claim rule's verdict, reason and sentence (claims.judge, as the report words
        it). A contrast without its own MDE takes its interval's (aggregate.interval_mde), so "no difference" says how
        large a difference it could have missed."""
        mde = self.mde_pct if self.mde_pct is not None else mde_of(self.ci)
        gap = {"no_interval": self.no_interval} if self.no_interval else {}
        v = judge(self.ratio, better, worse, self.ci, self.floor, self.hit_bound, mde, self.failed, **gap)
        return {
            "ratio": self.ratio,
            "lo": self.ci[0] if self.ci else None,
            "hi": self.ci[1] if self.ci else None,
            "mde_pct": mde,
            "floor_lo": self.floor[0] if self.floor else None,
            "floor_hi": self.floor[1] if self.floor else None,
            "verdict": v.kind,
            "reason": v.reason,
            "words": v.words,
        }


def mde_of(ci: tuple[float, float] | None) -> float | None:
    """The MDE (percent) of a contrast known only by its 95% interval: aggregate.interval_mde, on one interval."""
    if not ci or ci[0] is None or ci[1] is None or ci[0] <= 0 or ci[1] <= ci[0]:
        return None
    return pl.DataFrame({"lo": [ci[0]], "hi": [ci[1]]}).select(interval_mde("lo", "hi")).item()


def ms(x: float | None) -> float | None:
    """Seconds to milliseconds, to the microsecond the recorded tables hold (no 67.62899999999999 in the CSV)."""
    return None if x is None else round(x * 1000, 3)


def inverted(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    """An interval on r as one on 1/r."""
    return (1 / ci[1], 1 / ci[0]) if ci and ci[0] and ci[1] else None


def load_of(row: dict) -> tuple[int | None, float | None]:
    """(concurrency, request_rate): closed-loop points carry the first, open-loop points the second."""
    rate = row.get("request_rate") or None
    return (None if rate else row.get("concurrency")), rate


def label_of(row: dict, shape: str | None = None, tail: str = "") -> str:
    """A short human label: `large 1024 tok · 100% reuse · c=1` (a shape: `pool (prefix_pool) · c=4`)."""
    c, rate = load_of(row)
    load = f"{rate:g} req/s" if rate else (f"c={c}" if c is not None else "")
    if shape:
        head = f"{row['regime']} ({shape})"
    else:
        tokens = row.get("prefix_len_tokens")
        head = f"{row['regime']} {tokens} tok · {row['reuse_pct']}% reuse" if tokens is not None else f"{row['regime']}"
    return " · ".join(p for p in (head, load, tail) if p)


def point_columns(row: dict, shape: str | None = None) -> dict[str, Any]:
    c, rate = load_of(row)
    return {
        "regime": row["regime"],
        "shape": shape,
        "reuse_pct": row.get("reuse_pct"),
        "concurrency": c,
        "request_rate": rate,
        "prefix_len_tokens": row.get("prefix_len_tokens"),
        "hit_rate": row.get("window_hit_rate_on", row.get("measured_hit_rate_on")),
    }


def latency_n(row: dict, paired: bool) -> tuple[int | None, str]:
    """What the interval stands on: pairs of sub-blocks (paired), else the fewer side's bootstrap rounds."""
    if paired:
        return row.get("paired_pairs"), "pairs"
    counts = [int(row[k]) for k in ("clusters_off", "clusters_on") if row.get(k) is not None]
    return (min(counts) if counts else None), "rounds"


def effect_rows(sp: pl.DataFrame, shapes: dict[str, str]) -> list[dict]:
    """TTFT and E2E, off against on, at every point with reuse (and every shape point): judged as the report's
    `judged` does (a paired point by its paired contrast, a lifetime contrast against the A/A floor and its hit
    rate)."""
    out = []
    for r in sp.iter_rows(named=True):
        shape = shapes.get(r["regime"])
        if not shape and r["reuse_pct"] == 0:
            continue  # nothing can hit: the controls and the flag cost (control_rows, flag_cost_rows)
        for metric, name, off, on in (
            ("ttft", "ttft_speedup", "mean_ttft_s_off", "mean_ttft_s_on"),
            ("e2e", "e2e_speedup", "mean_e2e_s_off", "mean_e2e_s_on"),
        ):
            paired = metric == "ttft" and r.get("contrast") == "paired"
            ttft = metric == "ttft"
            j = Judged(
                r.get(name),
                ci_of(r, name),
                floor_of(r, name),
                hit_bound_of(r, name),
                r.get("mde_ttft_pct") if ttft else None,
                r.get("design_failed") if ttft else None,
            )
            n, unit = latency_n(r, paired)
            row = point_columns(r, shape) | {
                "family": "shape" if shape else "cache_effect",
                "metric": metric,
                "design": "paired" if paired else "lifetimes",
                "baseline": ms(r.get(off)),
                "treated": ms(r.get(on)),
                "unit": "ms",
                "n": n,
                "n_unit": unit,
                "label": label_of(r, shape),
            }
            out.append(row | j.columns())
            if r.get(name) is None:
                out[-1]["reason"] = why_unmeasured(r)
    return out


def throughput_rows(sp: pl.DataFrame, summary: pl.DataFrame, shapes: dict[str, str], forced: bool = False) -> list[dict]:
    """Output tok/s on over off at each point (an interval where repeats gave one: the slowest and fastest repeats
    paired, as findings.derived does), judged against the regime's throughput floor. At 0% reuse it is what leaving
    the cache on costs (flag_cost), judged by its own interval: the floor is built from it."""
    floors = throughput_floors(throughput_at_p95(closed_loop(summary)), sp)
    keys = ["regime", "reuse_pct", "concurrency", "request_rate"]
    spread = {}
    if "tok_s_lo" in summary.columns:
        for s in summary.iter_rows(named=True):
            spread[(s["mode"], *(s[k] for k in keys))] = (s.get("tok_s_lo"), s.get("tok_s_hi"), s.get("repeats_measured"))
    out = []
    for r in sp.iter_rows(named=True):
        shape = shapes.get(r["regime"])
        off = spread.get(("no_prefix_cache", *(r[k] for k in keys)), (None, None, None))
        on = spread.get(("with_prefix_cache", *(r[k] for k in keys)), (None, None, None))
        ci = (on[0] / off[1], on[1] / off[0]) if None not in (off[0], off[1], on[0], on[1]) and off[0] and off[1] else None
        cost = not shape and r["reuse_pct"] == 0
        repeats = [x for x in (off[2], on[2]) if x is not None]
        passes = int(min(repeats)) if repeats else None
        gap = interval_gap(passes=passes)
        j = Judged(r.get("throughput_gain"), ci, None if cost else floors.get(r["regime"]), no_interval=gap)
        row = point_columns(r, shape) | {
            "family": "flag_cost" if cost else "throughput",
            "metric": "throughput",
            "design": "lifetimes",
            "baseline": r.get("tok_s_off"),
            "treated": r.get("tok_s_on"),
            "unit": "tok/s",
            "n": passes,
            "n_unit": "repeats",
            "label": label_of(r, shape, "cache on vs off" if cost else ""),
        }
        out.append(row | j.columns(better="more", worse="less"))
        if cost and forced:
            out[-1] |= unmeasured_cost()
    return out


def budget_rows(single: pl.DataFrame, sp: pl.DataFrame) -> list[dict]:
    """Throughput at the same p95 E2E budget per regime and reuse level (findings.derived.throughput_at_p95, as the
    report's throughput answer reads it), judged against the regime's throughput floor; at 0% reuse it is the
    throughput control (nothing can hit)."""
    rows = throughput_at_p95(closed_loop(single))
    floors = throughput_floors(rows, sp)
    out = []
    for r in rows:
        control = r["reuse_pct"] == 0
        j = Judged(r["gain"], r["gain_ci"], None if control else floors.get(r["regime"]), no_interval=interval_gap(r["passes"]))
        budget = ms(r["p95_budget_s"])
        tail = f"at p95 E2E {budget:.0f} ms" if budget is not None else "p95 ranges do not overlap"
        row = {
            "family": "control" if control else "throughput",
            "regime": r["regime"],
            "reuse_pct": r["reuse_pct"],
            "prefix_len_tokens": r["prefix_len_tokens"],
            "metric": "throughput",
            "design": "lifetimes",
            "baseline": r["tok_s_off"],
            "treated": r["tok_s_on"],
            "unit": "tok/s",
            "p95_budget_ms": budget,
            "n_unit": "repeats",
            "label": label_of(r, None, tail),
            "kind": "p95",
        }
        out.append(row | j.columns(better="more", worse="less"))
        if r["gain"] is None:
            out[-1]["reason"] = "no common p95 budget: the two settings' p95 ranges do not overlap"
    return out


def flag_cost_rows(sp: pl.DataFrame, forced: bool = False) -> list[dict]:
    """Mean TTFT with the cache on against off for requests that hit nothing (0% reuse), oriented off/on: lifetimes
    are the unit (`flag_cost_*`, as findings.controls.flag_cost_words reads them), judged by their own interval; a run
    from before those columns has its 0%-reuse lifetime ratio. `forced`: the run's cache off was forced misses on
    its cache-on deployment (endpoint.cache_off_forced), so caching was never off: each row reads not measured."""
    out = []
    rows = sp.filter(pl.col("reuse_pct") == 0)
    recorded = "flag_cost_ratio" in sp.columns and not sp["flag_cost_ratio"].is_null().all()
    for r in rows.iter_rows(named=True):
        if recorded:
            if r.get("flag_cost_ratio") is None:
                continue
            ci = (r["flag_cost_lo"], r["flag_cost_hi"]) if r.get("flag_cost_lo") is not None else None
            n, unit = r.get("flag_cost_lifetimes"), "lifetime pairs"
            gap = interval_gap(lifetimes=n)
            j = Judged(1 / r["flag_cost_ratio"], inverted(ci), mde_pct=r.get("flag_cost_mde_pct"), no_interval=gap)
            off, on = r.get("cross_mean_ttft_s_off", r["mean_ttft_s_off"]), r.get("cross_mean_ttft_s_on", r["mean_ttft_s_on"])
        elif r.get("contrast") == "paired":
            continue  # its TTFT ratio is the paired control; no lifetime figure was recorded
        else:
            j = Judged(r.get("ttft_speedup"), ci_of(r, "ttft_speedup"), mde_pct=r.get("mde_ttft_pct"))
            n, unit = latency_n(r, False)
            off, on = r["mean_ttft_s_off"], r["mean_ttft_s_on"]
        row = point_columns(r) | {
            "family": "flag_cost",
            "metric": "ttft",
            "design": "lifetimes",
            "baseline": ms(off),
            "treated": ms(on),
            "unit": "ms",
            "n": n,
            "n_unit": unit,
            "label": label_of(r, None, "cache on vs off"),
        }
        out.append(row | j.columns() | (unmeasured_cost() if forced else {}))
    return out


def unmeasured_cost() -> dict[str, Any]:
    """A flag-cost row's measured columns where the run had one deployment: its ratio compares forced misses with
    requests that hit nothing on one cache-on server (the cost is inside both), so no number of it may stand as the
    flag's cost."""
    empty = ("baseline", "treated", "ratio", "lo", "hi", "mde_pct", "floor_lo", "floor_hi", "n")
    return dict.fromkeys(empty) | {
        "verdict": "not measured",
        "reason": ONE_DEPLOYMENT,
        "words": f"not measured ({ONE_DEPLOYMENT})",
    }


def control_rows(sp: pl.DataFrame) -> list[dict]:
    """Contrasts whose true ratio is 1: each 0%-reuse paired control (both arms miss; one that finds a difference
    fails its regime's design) and, per regime, the A/A control (requests that hit nothing, off/on) and the
    between-lifetime controls (off vs off, on vs on). Each is judged by its own interval: they are the floor."""
    out = []
    if "contrast" in sp.columns:
        for r in sp.filter((pl.col("reuse_pct") == 0) & (pl.col("contrast") == "paired")).iter_rows(named=True):
            j = Judged(r["ttft_speedup"], ci_of(r, "ttft_speedup"), mde_pct=r.get("mde_ttft_pct"))
            cols = j.columns()
            if cols["verdict"] in ("faster", "slower"):
                cols["reason"] += ": the control found a difference, so the paired design failed at this level"
            out.append(
                point_columns(r)
                | {
                    "family": "control",
                    "metric": "ttft",
                    "design": "paired",
                    "baseline": ms(r["mean_ttft_s_off"]),
                    "treated": ms(r["mean_ttft_s_on"]),
                    "unit": "ms",
                    "n": r.get("paired_pairs"),
                    "n_unit": "pairs",
                    "label": label_of(r, None, "both arms miss"),
                    "kind": "paired",
                }
                | cols
            )
    names = {"aa": "A/A: requests that hit nothing, off vs on", "inst_off": "cache off vs off", "inst_on": "cache on vs on"}
    for a in aa_table(sp):
        for prefix, what in names.items():
            for metric in ("ttft", "e2e"):
                ratio = a.get(f"{prefix}_{metric}_ratio")
                if ratio is None:
                    continue
                lo, hi = a.get(f"{prefix}_{metric}_lo"), a.get(f"{prefix}_{metric}_hi")
                j = Judged(ratio, (lo, hi) if lo is not None and hi is not None else None)
                cols = j.columns()
                if cols["verdict"] in ("faster", "slower"):
                    cols["reason"] += ": noise between server lifetimes, part of the A/A floor"
                requests = [int(a[k]) for k in ("aa_requests_off", "aa_requests_on") if a.get(k) is not None]
                out.append(
                    {
                        "family": "control",
                        "regime": a["regime"],
                        "metric": metric,
                        "design": "lifetimes",
                        "unit": "ms",
                        "n": sum(requests) if prefix == "aa" and requests else None,
                        "n_unit": "requests" if prefix == "aa" else "lifetimes",
                        "label": f"{a['regime']} · {what}",
                        "kind": prefix,
                    }
                    | cols
                )
    return out


def contrast_rows(
    summary: pl.DataFrame,
    speedup: pl.DataFrame,
    shape_points: pl.DataFrame | None = None,
    lifetimes: Sequence[Mapping[str, Any]] = (),
) -> pl.DataFrame:
    """Every contrast of a run as one row (COLUMNS), from aggregation's tables as read from their CSVs: cache
    effects, workload shapes, throughput, the flag cost and the controls, each judged by the claim rule.
    `lifetimes`: the server lifetimes' recorded server.json, which say whether the cache off was forced misses on
    one deployment (then the flag cost is not measured)."""
    forced = cache_off_forced([dict(i) for i in lifetimes])
    if "request_rate" not in summary.columns:
        summary = summary.with_columns(pl.lit(0.0).alias("request_rate"))
    sp_all = paired_effects(speedup)
    single, sp = single_prefix(summary, sp_all)
    shapes: dict[str, str] = {}
    if "workload" in summary.columns:
        shapes = {
            r["regime"]: r["workload"]
            for r in summary.select("regime", "workload").unique(maintain_order=True).iter_rows(named=True)
            if r["regime"] not in set(single["regime"].to_list())
        }
    parts: list[Callable[[], list[dict]]] = [
        lambda: effect_rows(sp_all, shapes),
        lambda: throughput_rows(sp_all, summary, shapes, forced),
        lambda: budget_rows(single, sp),
        lambda: flag_cost_rows(sp, forced),
        lambda: control_rows(sp_all),
    ]
    rows = [row | {"key": key_of(row)} for part in parts for row in part()]
    df = pl.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA, orient="row")
    df = with_predictions(df, shape_points)
    order = {f: i for i, f in enumerate(FAMILIES)}
    return df.with_row_index("_i").sort(pl.col("family").replace_strict(order, return_dtype=pl.Int64), "_i").drop("_i")


def key_of(row: dict) -> str:
    """`family/metric/regime/reuse/load/kind`, e.g. `cache_effect/ttft/large/100/c1/point`: the contrast's identity,
    without the design (a paired run and a lifetime run measure the same contrast) or anything run-specific."""
    c, rate = row.get("concurrency"), row.get("request_rate")
    load = f"{rate:g}rps" if rate else (f"c{c}" if c is not None else "-")
    reuse = row.get("reuse_pct")
    parts = [row["family"], row["metric"], row["regime"], "-" if reuse is None else str(reuse), load, row.get("kind", "point")]
    return "/".join(parts)


def with_predictions(df: pl.DataFrame, shape_points: pl.DataFrame | None) -> pl.DataFrame:
    """The shape rows' expected and predicted hit rates, from aggregation's prediction check (shape_points.csv)."""
    if shape_points is None or shape_points.is_empty() or "predicted_hit_rate" not in shape_points.columns:
        return df
    sp = shape_points.with_columns(pl.col("request_rate").cast(pl.Float64), pl.col("concurrency").cast(pl.Int64))
    look = {
        (r["regime"], r["concurrency"] if not r["request_rate"] else None, r["request_rate"] or None): (
            r.get("expected_hit_rate"),
            r.get("predicted_hit_rate"),
        )
        for r in sp.iter_rows(named=True)
    }
    keys = list(zip(df["regime"].to_list(), df["concurrency"].to_list(), df["request_rate"].to_list()))
    hits = [look.get(k, (None, None)) if f == "shape" else (None, None) for k, f in zip(keys, df["family"].to_list())]
    return df.with_columns(
        pl.Series("expected_hit_rate", [h[0] for h in hits], dtype=pl.Float64),
        pl.Series("predicted_hit_rate", [h[1] for h in hits], dtype=pl.Float64),
    )


def read_contrasts(
    summary_csv: Any, speedup_csv: Any, shape_points_csv: Any = None, info_paths: Sequence[Any] = ()
) -> pl.DataFrame:
    """contrast_rows over a run's CSV files (shape_points.csv may be empty: a run without shapes) and its server
    lifetimes' server.json files."""
    from .shapes.results import read_shape_table

    return contrast_rows(
        pl.read_csv(summary_csv, infer_schema_length=None),
        pl.read_csv(speedup_csv, infer_schema_length=None),
        read_shape_table(shape_points_csv) if shape_points_csv else None,
        [json.loads(Path(p).read_text()) for p in info_paths],
    )
