"""Altair charts of a run, saved as PNG and SVG through vl-convert (no network needed), and as Vega-Lite specs with
their data inline (NAME.vl.json), which the HTML report embeds so the same charts are interactive there.

What a reader should trust at a glance: latencies in ms, facets and legends in numeric order, the settings in a
reader's words ("cache off" / "cache on", never the mode names), an interval drawn wherever the number has one (and
the title saying which interval it is), no labels written over each other (the numbers are in the tooltips).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import polars as pl

from . import MODES, OFF, ON
from .aggregate import closed_loop, load_records, open_loop, single_prefix
from .chart_specs import EXTENSIONS, chart_names
from .charts_replicas import replicas_chart, routing_curve_chart
from .contrasts import paired_effects
from .ideal import Shape, cold_samples, fit_fixed_cost, ideal_rows, load_shape, prefill_flops
from .kvcache import Request, replay
from .shapes import SINGLE_PREFIX
from .shapes.results import load_hashes, read_shape_table
from .shapes.trace import TRACE_BLOCK_TOKENS

SPEEDUP_TITLE = "TTFT speed-up (off / on, log scale)"
PAIRED_TITLE = "TTFT speed-up (forced miss / hit, log scale)"
# A reader's words for the two settings (the data keep the mode names; every chart shows these).
CACHE_WORDS = {OFF: "cache off", ON: "cache on"}
FORCED_MISS = "cache on, forced miss"  # the paired design's miss arm: requests salted to miss inside cache-on lifetimes
CACHE_ORDER = [CACHE_WORDS[OFF], CACHE_WORDS[ON], FORCED_MISS]
CACHE_COLORS = ["#d62728", "#1f77b4", "#ff7f0e"]
Z95 = 1.959963984540054  # the normal 97.5% quantile: the charts' own intervals are 95%
GIB = 2**30


def cache_color(df: pl.DataFrame, title: str | None = None, legend: alt.Legend | None = None) -> alt.Color:
    """Cache off red, cache on blue (and the paired design's forced misses orange), in that order in every legend;
    the legend lists only the settings `df` has."""
    present = set(df["cache"].to_list()) if "cache" in df.columns else set(CACHE_ORDER[:2])
    domain = [c for c in CACHE_ORDER if c in present]
    return alt.Color(
        "cache:N",
        scale=alt.Scale(domain=domain, range=[CACHE_COLORS[CACHE_ORDER.index(c)] for c in domain]),
        title=title,
        sort=domain,
        legend=legend or alt.Legend(),
    )


def with_cache(df: pl.DataFrame) -> pl.DataFrame:
    """A `cache` column in a reader's words, from the mode."""
    return df.with_columns(pl.col("mode").replace_strict(CACHE_WORDS, default=pl.col("mode")).alias("cache"))


def in_order(df: pl.DataFrame, label: str, key: str | list[str], descending: bool = False) -> list[str]:
    """The distinct values of `label` in the numeric order of `key`: a facet's or legend's explicit order (Vega-Lite
    would sort the labels as text: "reuse 0%, reuse 100%, reuse 50%")."""
    if df.is_empty():
        return []
    keys = [key] if isinstance(key, str) else key
    return df.select(*keys, label).unique().sort(keys, descending=descending)[label].unique(maintain_order=True).to_list()


def _with_labels(summary: pl.DataFrame) -> pl.DataFrame:
    return with_cache(summary).with_columns(
        pl.format("{} ({} tok)", pl.col("regime"), pl.col("prefix_len_tokens")).alias("prefix"),
        pl.format("reuse {}%", pl.col("reuse_pct")).alias("reuse"),
    )


def prefix_column(df: pl.DataFrame) -> alt.Column:
    return alt.Column("prefix:N", title="shared prefix", sort=in_order(df, "prefix", "prefix_len_tokens"))


def reuse_row(df: pl.DataFrame) -> alt.Row:
    """One row per reuse level, in numeric order (0%, 50%, 100%)."""
    return alt.Row("reuse:N", title=None, sort=in_order(df, "reuse", "reuse_pct"))


def _ms(df: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Seconds columns as milliseconds (`x_s` -> `x_ms`); a column the table lacks is left out."""
    return df.with_columns((pl.col(c) * 1000).alias(c.removesuffix("_s") + "_ms") for c in columns if c in df.columns)


def _concurrency_axis(summary: pl.DataFrame) -> alt.X:
    levels = sorted(set(summary["concurrency"].to_list()))
    return alt.X(
        "concurrency:Q",
        scale=alt.Scale(type="log", base=2),
        title="concurrency (requests in flight)",
        axis=alt.Axis(values=levels, format="d"),
    )


def note(text: str, title: str) -> alt.Chart:
    """A chart that says why it has nothing to draw (a registered chart is always written)."""
    return (
        alt.Chart(pl.DataFrame({"t": [text]})).mark_text(size=14).encode(text="t:N").properties(width=460, height=60, title=title)
    )


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values 1, 2, 5 per decade between `lo` and `hi`, finer steps where that gives fewer than three (a log
    axis's default labels crowd: "60 70 8090", or leave a narrow range with one label)."""
    if lo <= 0 or hi <= lo:
        return []
    for steps in ((1, 2, 5), (1, 1.2, 1.4, 1.6, 1.8, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):  # finer where a range is narrow
        out = [
            round(m * 10.0**e, 10)
            for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
            for m in steps
            if lo <= m * 10.0**e <= hi
        ]
        if len(out) >= 3:
            break
    return out


def _tip(col: str, title: str, fmt: str | None = None) -> alt.Tooltip:
    return alt.Tooltip(col, title=title, format=fmt) if fmt else alt.Tooltip(col, title=title)


POINT_TIPS = [_tip("cache:N", "cache"), _tip("regime:N", "regime"), _tip("reuse_pct:Q", "reuse %")]


def ttft_vs_concurrency(summary: pl.DataFrame) -> alt.FacetChart | alt.Chart:
    """Mean TTFT against concurrency, cache off vs on, one panel per (prefix length, reuse)."""
    summary = closed_loop(summary)
    if summary.is_empty():
        return note("No closed-loop point in this run", "Time to first token vs concurrency")
    df = _ms(_with_labels(summary), ("mean_ttft_s", "p50_ttft_s", "p95_ttft_s"))
    base = alt.Chart().encode(
        x=_concurrency_axis(summary),
        y=alt.Y("mean_ttft_ms:Q", title="TTFT (ms)"),
        color=cache_color(df),
        tooltip=[
            *POINT_TIPS,
            _tip("concurrency:Q", "concurrency"),
            _tip("mean_ttft_ms:Q", "mean TTFT (ms)", ".1f"),
            _tip("p50_ttft_ms:Q", "p50 TTFT (ms)", ".1f"),
            _tip("p95_ttft_ms:Q", "p95 TTFT (ms)", ".1f"),
        ],
    )
    spread = base.mark_errorbar().encode(y=alt.Y("p50_ttft_ms:Q", title="TTFT (ms)"), y2="p95_ttft_ms:Q")
    return (
        alt.layer(base.mark_line(point=True), spread, data=df)
        .properties(width=220, height=160)
        .facet(column=prefix_column(df), row=reuse_row(df))
        .properties(title="Time to first token vs concurrency (line: mean; bar: the requests' p50 to p95)")
    )


def throughput_vs_p95(summary: pl.DataFrame) -> alt.FacetChart | alt.Chart:
    """Output tokens/s against p95 end-to-end latency, one point per concurrency level (its shape says which), with
    the throughput's 95% interval over the point's passes where the run has one (tok_s_lo/tok_s_hi)."""
    summary = closed_loop(summary)
    if summary.is_empty():
        return note("No closed-loop point in this run", "Throughput vs p95 latency")
    df = _ms(_with_labels(summary), ("p95_e2e_s",))
    for col in ("tok_s_lo", "tok_s_hi"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias(col))
    has_ci = df["tok_s_lo"].is_not_null().any()
    levels = sorted(set(df["concurrency"].to_list()))
    base = alt.Chart().encode(
        x=alt.X("p95_e2e_ms:Q", title="p95 end-to-end latency (ms)"),
        y=alt.Y("tok_s:Q", title="output tokens/s"),
        color=cache_color(df),
        tooltip=[
            *POINT_TIPS,
            _tip("concurrency:Q", "concurrency"),
            _tip("tok_s:Q", "output tok/s", ".0f"),
            _tip("tok_s_lo:Q", "95% CI low", ".0f"),
            _tip("tok_s_hi:Q", "95% CI high", ".0f"),
            _tip("p95_e2e_ms:Q", "p95 E2E (ms)", ".0f"),
        ],
    )
    line = base.mark_line().encode(order="concurrency:Q")
    points = base.mark_point(filled=True, size=60).encode(shape=alt.Shape("concurrency:O", title="concurrency", sort=levels))
    layers = [line, points]
    if has_ci:
        layers.append(
            base.transform_filter("isValid(datum.tok_s_lo)")
            .mark_errorbar(ticks=True)
            .encode(y=alt.Y("tok_s_lo:Q", title="output tokens/s"), y2="tok_s_hi:Q")
        )
    what = "bars: 95% interval of throughput; " if has_ci else ""
    return (
        alt.layer(*layers, data=df)
        .properties(width=220, height=160)
        .facet(column=prefix_column(df), row=reuse_row(df))
        .properties(title=f"Throughput vs p95 end-to-end latency ({what}up and left is better)")
    )


def speedup(speedups: pl.DataFrame) -> alt.VConcatChart | alt.FacetChart | alt.Chart:
    """TTFT speed-up as the prefix grows and as reuse falls, per concurrency: the paired contrast (forced miss over
    hit inside the cache-on lifetimes) where the point ran it, as the report judges it, else off over on."""
    paired = "contrast" in speedups.columns and (speedups["contrast"] == "paired").any()
    title = PAIRED_TITLE if paired else SPEEDUP_TITLE
    df = closed_loop(speedups).with_columns(
        pl.format("reuse {}%", pl.col("reuse_pct")).alias("reuse"),
        pl.format("c={}", pl.col("concurrency")).alias("conc"),
    )
    if df.is_empty():
        return note("No closed-loop point in this run", "TTFT speed-up")
    # Layers carry no data of their own, so the facet splits the layered data per panel.
    rule = alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(1.0))
    tips = [
        _tip("regime:N", "regime"),
        _tip("prefix_len_tokens:Q", "prefix tokens"),
        _tip("reuse_pct:Q", "reuse %"),
        _tip("concurrency:Q", "concurrency"),
        _tip("ttft_speedup:Q", "TTFT speed-up", ".2f"),
        _tip("ttft_speedup_lo:Q", "95% CI low", ".2f"),
        _tip("ttft_speedup_hi:Q", "95% CI high", ".2f"),
    ]
    seen = [
        v for c in ("ttft_speedup", "ttft_speedup_lo", "ttft_speedup_hi") if c in df.columns for v in df[c].drop_nulls().to_list()
    ]
    seen = [v for v in seen if v > 0] + [1.0]
    log_y = alt.Scale(type="log", domain=[min(seen) / 1.15, max(seen) * 1.15], nice=False)
    y_axis = alt.Axis(values=log_ticks(min(seen) / 1.15, max(seen) * 1.15) or alt.Undefined)
    y = alt.Y("ttft_speedup:Q", title=title, scale=log_y, axis=y_axis)
    by_len = (
        alt.Chart()
        .mark_line(point=True)
        .encode(
            x=alt.X("prefix_len_tokens:Q", title="shared prefix length (tokens)"),
            y=y,
            color=alt.Color("reuse:N", title="reuse", sort=in_order(df, "reuse", "reuse_pct")),
            tooltip=tips,
        )
    )
    by_reuse = (
        alt.Chart()
        .mark_line(point=True)
        .encode(
            x=alt.X("reuse_pct:Q", title="requests sharing the prefix (%)", scale=alt.Scale(domain=[0, 100])),
            y=y,
            color=alt.Color("prefix_len_tokens:O", title="prefix tokens", sort="ascending"),
            tooltip=tips,
        )
    )
    # The uncertainty: each ratio's clustered 95% CI, and the A/A band (what identical work shows off vs on).
    if "floor_ttft_lo" not in df.columns and "aa_ttft_lo" in df.columns:  # tables from before instance controls
        df = df.with_columns(pl.col("aa_ttft_lo").alias("floor_ttft_lo"), pl.col("aa_ttft_hi").alias("floor_ttft_hi"))
    for col in ("ttft_speedup_lo", "ttft_speedup_hi", "floor_ttft_lo", "floor_ttft_hi"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias(col))
    band_words = "" if df["floor_ttft_lo"].is_null().all() else "gray band: A/A noise floor of unpaired points; "
    band = (
        alt.Chart()
        .transform_filter("isValid(datum.floor_ttft_lo)")
        .transform_aggregate(lo="min(floor_ttft_lo)", hi="max(floor_ttft_hi)")
        .mark_rect(color="gray", opacity=0.35)
        .encode(y="lo:Q", y2="hi:Q")
    )
    y_lo = alt.Y("ttft_speedup_lo:Q", title=title, scale=log_y, axis=y_axis)
    bars_len = (
        by_len.transform_filter("isValid(datum.ttft_speedup_lo)").mark_errorbar(ticks=True).encode(y=y_lo, y2="ttft_speedup_hi:Q")
    )
    bars_reuse = (
        by_reuse.transform_filter("isValid(datum.ttft_speedup_lo)")
        .mark_errorbar(ticks=True)
        .encode(y=y_lo, y2="ttft_speedup_hi:Q")
    )
    conc = alt.Column("conc:N", title="concurrency", sort=in_order(df, "conc", "concurrency"))
    top = (
        alt.layer(band, by_len, bars_len, rule, data=df)
        .properties(width=200, height=160)
        .facet(column=conc)
        .properties(title=f"Speed-up as the prefix grows (bars: 95% CI; {band_words}dashed: no change)")
    )
    bottom = (
        alt.layer(band, by_reuse, bars_reuse, rule, data=df)
        .properties(width=200, height=160)
        .facet(column=conc)
        .properties(title=f"Speed-up as reuse falls (bars: 95% CI; {band_words}dashed: no change)")
    )
    if df["prefix_len_tokens"].n_unique() < 2:  # one prefix length: nothing grows, so only the reuse panels
        return bottom
    return alt.vconcat(top, bottom).resolve_scale(color="independent")


def open_loop_latency(summary: pl.DataFrame, slo: dict) -> alt.FacetChart | alt.Chart:
    """p95 TTFT against offered request rate (open loop), with the SLO as a dashed line."""
    df = _ms(_with_labels(open_loop(summary)), ("p95_ttft_s", "p95_e2e_s"))
    if df.is_empty():
        return note("No open-loop point in this run", "Open loop")
    slo_ms = slo["p95_ttft_s"] * 1000
    base = alt.Chart().encode(
        x=alt.X("request_rate:Q", title="offered load (requests/s, open loop)"),
        y=alt.Y("p95_ttft_ms:Q", title="p95 TTFT (ms)", scale=alt.Scale(type="log")),
        color=cache_color(df),
        tooltip=[
            *POINT_TIPS,
            _tip("request_rate:Q", "offered req/s", ".2f"),
            _tip("p95_ttft_ms:Q", "p95 TTFT (ms)", ".0f"),
            _tip("p95_e2e_ms:Q", "p95 E2E (ms)", ".0f"),
            _tip("req_s:Q", "served req/s", ".2f"),
        ],
    )
    target = alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(slo_ms))
    return (
        alt.layer(base.mark_line(point=True), target, data=df)
        .properties(width=220, height=160)
        .facet(column=prefix_column(df), row=reuse_row(df))
        .properties(title=f"Open loop: p95 TTFT vs offered load (dashed: SLO {slo_ms:g} ms)")
    )


# --- The ideal: measured TTFT on the compute model's fitted line ---------------------------------------------------


def mean_ci(values: Sequence[float]) -> tuple[float, float] | None:
    """The 95% interval of a mean from its values (normal approximation; None for fewer than two)."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    half = Z95 * sd / math.sqrt(len(xs))
    return m - half, m + half


def fit_band(samples: Sequence[tuple[float, float]], xs: Sequence[float]) -> list[tuple[float, float]] | None:
    """The 95% confidence band of an ordinary least-squares line y = a + b·x through (x, y) `samples`, at `xs`
    (Student's t with n − 2 degrees of freedom); None with fewer than three samples."""
    from scipy import stats

    n = len(samples)
    if n < 3:
        return None
    mx = sum(x for x, _ in samples) / n
    my = sum(y for _, y in samples) / n
    sxx = sum((x - mx) ** 2 for x, _ in samples)
    if sxx <= 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in samples) / sxx
    a = my - b * mx
    s = math.sqrt(sum((y - a - b * x) ** 2 for x, y in samples) / (n - 2))
    t = float(stats.t.ppf(0.975, n - 2))
    out = []
    for x in xs:
        half = t * s * math.sqrt(1 / n + (x - mx) ** 2 / sxx)
        out.append((a + b * x - half, a + b * x + half))
    return out


def ideal_samples(summary: pl.DataFrame, cold: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(prompt tokens, TTFT) of every cold measurement ideal.ideal_rows fits its line on: the cache-off points at the
    lowest concurrency, then the calibration's cold requests."""
    closed = closed_loop(summary)
    if closed.is_empty():
        return []
    c_min = closed["concurrency"].min()
    pts = closed.filter(
        (pl.col("concurrency") == c_min)
        & (pl.col("mode") == OFF)
        & (pl.col("requests_ok") > 0)
        & pl.col("mean_ttft_s").is_not_null()
    )
    return [(r["prompt_tokens"] / r["requests_ok"], r["mean_ttft_s"]) for r in pts.iter_rows(named=True)] + [
        (float(t), float(y)) for t, y in cold if t and y
    ]


def point_intervals(records: pl.DataFrame, column: str = "ttft_s") -> dict[tuple[str, str, int, int], tuple[float, float]]:
    """(mode, regime, reuse %, concurrency) -> the 95% interval of the mean of `column` over the point's requests in
    the steady window (cache on: the hit arm where the point was paired), from the per-request records."""
    if records.is_empty():
        return {}
    recs = _steady(records)
    out = {}
    keys = ["mode", "regime", "reuse_pct", "concurrency"]
    for key, grp in recs.group_by(keys, maintain_order=True):
        ci = mean_ci(grp[column].to_list())
        if ci:
            out[(str(key[0]), str(key[1]), int(key[2]), int(key[3]))] = ci
    return out


def _steady(records: pl.DataFrame) -> pl.DataFrame:
    """Successful closed-loop requests of the one-shared-prefix regimes in their point's steady window, the cache-on
    ones without the paired design's forced misses (what the summary's means are over)."""
    recs = records.filter(pl.col("workload").is_in(SINGLE_PREFIX) & (pl.col("request_rate") == 0) & (pl.col("status") == "ok"))
    if "in_window" in recs.columns:
        recs = recs.filter(pl.col("in_window"))
    if "arm" in recs.columns:
        recs = recs.filter(pl.col("arm").is_null() | (pl.col("arm") != "miss"))
    return recs


def ideal_chart(
    summary: pl.DataFrame,
    shape: Shape | None,
    block_size: int,
    cold: Sequence[tuple[float, float]] = (),
    records: pl.DataFrame | None = None,
) -> alt.LayerChart | alt.FacetChart | alt.Chart:
    """Measured TTFT on the compute model's line: TTFT ≈ fixed + k·FLOPs of the prefill left to compute, fitted on
    the cold requests (ideal.ideal_rows' fit, with its 95% band), the cold (cache off) and warm (cache on) points at
    full reuse and the lowest concurrency with their 95% intervals, and the ideal warm TTFT (the cold one less the
    cached tokens' compute). A warm point below the line is one the compute model does not explain (the title says
    so), not an engine beating its ideal."""
    title = "TTFT against the prefill compute left: measured and the compute model"
    rows = ideal_rows(summary, shape, block_size, list(cold)) if shape else []
    if not rows or shape is None:
        why = "no local model config.json" if shape is None else "no regime has both cache settings at full reuse"
        return note(f"Not computed: {why}", title)
    cis = point_intervals(records if records is not None else pl.DataFrame())
    top_reuse = int(closed_loop(summary)["reuse_pct"].max())  # type: ignore[arg-type]  # ideal_rows' reuse level
    fitted = rows[0]["s_per_flop"] is not None
    pts = []
    for r in rows:
        cold_x = prefill_flops(shape, r["tokens"]) / 1e12
        warm_x = prefill_flops(shape, r["tokens"], r["cached"]) / 1e12
        label = f"{r['regime']} ({r['prefix_len_tokens']} tok)"
        for kind, at, y, mode in (
            ("cache off (cold)", cold_x, r["cold_s"], OFF),
            ("ideal warm (model)", warm_x, r["ideal_s"], None),
            ("cache on (warm, measured)", warm_x, r["warm_s"], ON),
        ):
            ci = cis.get((mode, r["regime"], top_reuse, r["concurrency"])) if mode else None
            half = (ci[1] - ci[0]) / 2 if ci else None  # centred on the summary's mean, as the report states it
            pts.append(
                {
                    "regime": label,
                    "kind": kind,
                    "tflop": at,
                    "ttft_ms": y * 1000,
                    "lo_ms": (y - half) * 1000 if half is not None else None,
                    "hi_ms": (y + half) * 1000 if half is not None else None,
                    "tokens": r["tokens"],
                    "cached": r["cached"] if mode != OFF else 0,
                }
            )
    kinds = ["calibration cold requests", "cache off (cold)", "ideal warm (model)", "cache on (warm, measured)"]
    colors = ["#9a9a9a", "#d62728", "#2ca02c", "#1f77b4"]
    shown = [k for k, _ in zip(kinds, colors) if k != kinds[0] or (fitted and any(t and y_ for t, y_ in cold))]
    color = alt.Color(
        "kind:N",
        title=None,
        scale=alt.Scale(domain=shown, range=[c for k, c in zip(kinds, colors) if k in shown]),
        sort=shown,
    )
    x = alt.X("tflop:Q", title="prefill compute left to do (TFLOP; cached tokens removed)")
    y = alt.Y("ttft_ms:Q", title="TTFT (ms)")
    layers: list[alt.Chart] = []
    samples = ideal_samples(summary, cold)
    top = max(p["tflop"] for p in pts)
    if fitted:
        fixed, k = rows[0]["fixed_s"], rows[0]["s_per_flop"]
        grid = [top * 1.05 * i / 40 for i in range(41)]
        flops = [(prefill_flops(shape, t), y_) for t, y_ in samples]
        same = fit_fixed_cost(samples, shape)
        band = fit_band(flops, [g * 1e12 for g in grid]) if same and math.isclose(same[1], k, rel_tol=1e-9) else None
        line = pl.DataFrame(
            {
                "tflop": grid,
                "fit_ms": [(fixed + k * g * 1e12) * 1000 for g in grid],
                "lo_ms": [b[0] * 1000 for b in band] if band else [None] * len(grid),
                "hi_ms": [b[1] * 1000 for b in band] if band else [None] * len(grid),
            }
        )
        if band:
            layers.append(alt.Chart(line).mark_area(color="#bbbbbb", opacity=0.35).encode(x=x, y="lo_ms:Q", y2="hi_ms:Q"))
        layers.append(
            alt.Chart(line)
            .mark_line(color="#555555", strokeDash=[6, 3])
            .encode(x=x, y=alt.Y("fit_ms:Q", title="TTFT (ms)"), tooltip=[_tip("fit_ms:Q", "model TTFT (ms)", ".1f")])
        )
        calib = pl.DataFrame(
            [
                {"kind": kinds[0], "tflop": prefill_flops(shape, t) / 1e12, "ttft_ms": y_ * 1000, "tokens": t}
                for t, y_ in cold
                if t and y_
            ]
        )
        if calib.height:
            layers.append(
                alt.Chart(calib)
                .mark_point(size=30, opacity=0.7)
                .encode(x=x, y=y, color=color, tooltip=[_tip("tokens:Q", "prompt tokens"), _tip("ttft_ms:Q", "TTFT (ms)", ".1f")])
            )
        model = f"dashed: fitted {fixed * 1000:.1f} ms fixed + {k * 1e12 * 1000:.3g} ms/TFLOP" + (
            ", band: its 95% CI" if band else ""
        )
    else:
        ref = pl.DataFrame([{"tflop": 0.0, "ttft_ms": 0.0, "regime": p["regime"]} for p in pts if p["kind"] == kinds[1]])
        ref = pl.concat([ref, pl.DataFrame([p for p in pts if p["kind"] == kinds[1]]).select(ref.columns)])
        layers.append(alt.Chart(ref).mark_line(color="#555555", strokeDash=[6, 3]).encode(x=x, y=y, detail="regime:N"))
        model = "dashed: one prompt length, so no fixed cost is fitted and the ideal scales cold TTFT by the FLOPs left"
    data = pl.DataFrame(pts)
    tips = [
        _tip("regime:N", "regime"),
        _tip("kind:N", "what"),
        _tip("ttft_ms:Q", "TTFT (ms)", ".1f"),
        _tip("lo_ms:Q", "95% CI low (ms)", ".1f"),
        _tip("hi_ms:Q", "95% CI high (ms)", ".1f"),
        _tip("tokens:Q", "prompt tokens", ".0f"),
        _tip("cached:Q", "cached tokens", ".0f"),
    ]
    shape_enc = alt.Shape("regime:N", title="shared prefix", sort=in_order(data, "regime", "tflop", descending=True))
    layers.append(
        alt.Chart(data)
        .transform_filter("isValid(datum.lo_ms)")
        .mark_errorbar(ticks=True)
        .encode(x=x, y=alt.Y("lo_ms:Q", title="TTFT (ms)"), y2="hi_ms:Q", color=color)
    )
    layers.append(alt.Chart(data).mark_point(filled=True, size=80).encode(x=x, y=y, color=color, shape=shape_enc, tooltip=tips))
    unexplained = [r for r in rows if r["fixed_s"] is not None and r["warm_s"] < r["fixed_s"]]
    below = [r for r in rows if r["warm_s"] < r["ideal_s"]]
    subtitle = [
        model + "; bars: 95% CI of each mean.",
        "Ideal warm: the cold mean less the fitted cost of the cached tokens' compute (it keeps the cold point's "
        "distance from the line).",
    ]
    if unexplained:
        subtitle.append(
            "Measured warm below the fitted fixed cost ("
            + ", ".join(r["regime"] for r in unexplained)
            + "): the compute model does not explain it, so no share of the ideal is claimed."
        )
    elif below:
        subtitle.append(
            "Measured warm below the ideal ("
            + ", ".join(r["regime"] for r in below)
            + "): the model's saving is not the whole story."
        )
    return alt.layer(*layers).properties(
        width=460, height=260, title=alt.Title(title, subtitle=subtitle, subtitleColor="#444444")
    )


# --- Workload shapes ---------------------------------------------------------------------------------------------


def ratio_ci(num: Sequence[float], den: Sequence[float]) -> tuple[float, float, float] | None:
    """A ratio of sums (Σnum / Σden: a hit rate over requests) and its 95% interval by the delta method over the
    requests (each request one unit); None without requests."""
    n = len(num)
    total = sum(den)
    if n == 0 or total <= 0:
        return None
    r = sum(num) / total
    if n < 2:
        return r, r, r
    mean_den = total / n
    resid = [a - r * b for a, b in zip(num, den)]
    var = sum(e * e for e in resid) / (n - 1) / n / mean_den**2
    half = Z95 * math.sqrt(var)
    return r, max(0.0, r - half), min(1.0, r + half)


def overflow_rates(req: pl.DataFrame) -> pl.DataFrame:
    """Per KV-overflow working set (cache on, successful requests): the cache model's predicted and the server's
    measured hit rate (cached over prompt tokens) with its 95% interval, and the server's KV blocks."""
    ok = req.filter(pl.col("status") == "ok") if "status" in req.columns else req
    if "workload" not in ok.columns or "working_set" not in ok.columns:
        return pl.DataFrame()
    ov = ok.filter((pl.col("workload") == "kv_overflow") & (pl.col("mode") == ON))
    rows = []
    for (ws,), grp in ov.group_by("working_set", maintain_order=True):
        measured = ratio_ci(grp["cached_tokens"].fill_null(0).to_list(), grp["prompt_tokens"].fill_null(0).to_list())
        pred = grp["predicted_cached_tokens"].drop_nulls()
        if measured is None:
            continue
        rows.append(
            {
                "working_set": float(ws),
                "predicted": float(pred.sum())
                / float(grp.filter(pl.col("predicted_cached_tokens").is_not_null())["prompt_tokens"].sum())
                if pred.len()
                else None,
                "measured": measured[0],
                "measured_lo": measured[1],
                "measured_hi": measured[2],
                "requests": grp.height,
                "kv_blocks": grp["kv_blocks"].drop_nulls().max() if "kv_blocks" in grp.columns else None,
            }
        )
    return pl.DataFrame(rows).sort("working_set") if rows else pl.DataFrame()


def shapes_chart(req: pl.DataFrame) -> alt.HConcatChart | alt.Chart:
    """Multi-turn: mean TTFT by turn, off vs on; KV overflow: hit rate predicted vs measured by working set. Each
    panel's legend sits under its own panel."""
    ok = req.filter(pl.col("status") == "ok") if "status" in req.columns else req
    panels = []
    mt = ok.filter(pl.col("workload") == "multi_turn") if "workload" in ok.columns else ok.clear()
    if mt.height:
        # Sorted: group_by's order is not stable, and the SVG's marks follow the rows (charts re-render byte-identical).
        keys = ["regime", "concurrency", "turn", "mode"]
        turns = (
            mt.group_by(keys)
            .agg(
                (pl.col("ttft_s").mean() * 1000).alias("mean_ttft_ms"),
                (pl.col("ttft_s").std() * 1000 / pl.len().sqrt()).alias("se_ms"),
                pl.len().alias("requests"),
            )
            .sort(keys)
        )
        turns = with_cache(turns).with_columns(
            pl.format("{} c={}", pl.col("regime"), pl.col("concurrency")).alias("series"),
            (pl.col("mean_ttft_ms") - Z95 * pl.col("se_ms")).alias("lo_ms"),
            (pl.col("mean_ttft_ms") + Z95 * pl.col("se_ms")).alias("hi_ms"),
        )
        bottom = alt.Legend(orient="bottom", direction="horizontal", columns=3)
        base = alt.Chart(turns).encode(
            x=alt.X("turn:O", title="turn (history grows)", axis=alt.Axis(labelAngle=0)),
            color=cache_color(turns, legend=bottom),
            strokeDash=alt.StrokeDash("series:N", legend=None),
        )
        panels.append(
            alt.layer(
                base.mark_line(point=True).encode(
                    y=alt.Y("mean_ttft_ms:Q", title="mean TTFT (ms)"),
                    shape=alt.Shape(
                        "series:N", title="shape, load", sort=in_order(turns, "series", ["regime", "concurrency"]), legend=bottom
                    ),
                    tooltip=[
                        _tip("series:N", "shape, load"),
                        _tip("cache:N", "cache"),
                        _tip("turn:O", "turn"),
                        _tip("mean_ttft_ms:Q", "mean TTFT (ms)", ".1f"),
                        _tip("lo_ms:Q", "95% CI low", ".1f"),
                        _tip("hi_ms:Q", "95% CI high", ".1f"),
                        _tip("requests:Q", "requests"),
                    ],
                ),
                base.transform_filter("isValid(datum.lo_ms)")
                .mark_errorbar()
                .encode(y=alt.Y("lo_ms:Q", title="mean TTFT (ms)"), y2="hi_ms:Q"),
            ).properties(width=300, height=230, title="Multi-turn chat: mean TTFT by turn (bars: 95% CI)")
        )
    rates = overflow_rates(ok)
    if rates.height:
        x = alt.X("working_set:Q", title="working set / KV capacity")
        y_axis = alt.Axis(format="%")
        tips = [
            _tip("working_set:Q", "working set / capacity", ".2f"),
            _tip("predicted:Q", "predicted hit rate", ".1%"),
            _tip("measured:Q", "measured hit rate", ".1%"),
            _tip("measured_lo:Q", "95% CI low", ".1%"),
            _tip("measured_hi:Q", "95% CI high", ".1%"),
        ]
        predicted = (
            alt.Chart(rates)
            .mark_line(color="#7f7f7f", strokeDash=[6, 3])
            .encode(x=x, y=alt.Y("predicted:Q", title="prefix-cache hit rate (cache on)", axis=y_axis))
        )
        bars = (
            alt.Chart(rates)
            .mark_errorbar(ticks=True, color="#1f77b4")
            .encode(x=x, y=alt.Y("measured_lo:Q", title="prefix-cache hit rate (cache on)", axis=y_axis), y2="measured_hi:Q")
        )
        measured = (
            alt.Chart(rates)
            .mark_point(filled=True, size=90, color="#1f77b4")
            .encode(x=x, y=alt.Y("measured:Q", axis=y_axis), tooltip=tips)
        )
        cliff = alt.Chart(pl.DataFrame({"x": [1.0]})).mark_rule(color="black").encode(x="x:Q")
        panels.append(
            (predicted + bars + measured + cliff).properties(
                width=300,
                height=230,
                title=alt.Title(
                    "KV overflow: hit rate by working set",
                    subtitle="dots: measured (95% CI); dashed: cache model; line: capacity",
                ),
            )
        )
    if not panels:
        return note("No multi-turn or overflow shape in this run", "Workload shapes")
    return alt.hconcat(*panels).resolve_scale(color="independent", shape="independent")


# --- KV capacity in GiB ------------------------------------------------------------------------------------------

DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


def kv_cache_dtype(dtype: str, server_args: Sequence[str]) -> str:
    """The KV cache's dtype: the server's `--kv-cache-dtype` where its arguments set one (other than auto), else the
    server's dtype."""
    args = list(server_args)
    for n, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--kv-cache-dtype=") else None
        if arg == "--kv-cache-dtype" and n + 1 < len(args):
            value = args[n + 1]
        if value and value != "auto":
            return value
    return dtype


def kv_bytes_per_token(model_dir: str | None, dtype: str | None) -> float | None:
    """Bytes of KV cache one token takes: keys and values, every layer, the KV heads' width, at the server's dtype
    (`auto` or unknown: the model's own torch_dtype). None without the model's config.json."""
    if not model_dir:
        return None
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    shape = load_shape(model_dir)
    if shape is None:
        return None
    name = dtype if dtype in DTYPE_BYTES else str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return 2.0 * shape.layers * shape.kv_hidden * DTYPE_BYTES.get(name, 2)


def capacity_curve(
    req: pl.DataFrame, hashes: dict[tuple[str, int], list[str]], block_size: int, factors: Sequence[float]
) -> pl.DataFrame:
    """The cache model's hit rate for each KV-overflow working set at other KV sizes: each pass of its requests (cache
    on, one lifetime and repeat from a reset cache, as sent: their start and end times) replayed through
    kvcache.replay at `factors` x the server's blocks, as aggregation replays them at the server's own size. Rows
    (working_set, kv_blocks, predicted)."""
    ok = req.filter(pl.col("status") == "ok") if "status" in req.columns else req
    if "workload" not in ok.columns or "working_set" not in ok.columns:
        return pl.DataFrame()
    ov = ok.filter((pl.col("workload") == "kv_overflow") & (pl.col("mode") == ON) & (pl.col("prompt_tokens") > 0))
    rows = []
    for (ws,), pool in ov.sort("working_set", "instance", "repeat", "request_index").group_by("working_set", maintain_order=True):
        served = pool["kv_blocks"].drop_nulls()
        regime = pool["regime"][0]
        if served.is_empty() or not all((regime, i) in hashes for i in pool["request_index"]):
            continue
        passes = [
            [
                Request(
                    r["request_index"],
                    tuple(hashes[(regime, r["request_index"])]),
                    r["prompt_tokens"],
                    r["completion_tokens"] or 1,
                    r["start_s"] or 0.0,
                    (r["start_s"] or 0.0) + (r["e2e_s"] or 0.0),
                )
                for r in grp.iter_rows(named=True)
            ]
            for _, grp in pool.group_by("instance", "repeat", maintain_order=True)
        ]
        prompt = sum(r.prompt_len for reqs in passes for r in reqs)
        for f in factors:
            blocks = max(2, round(int(served.max()) * f))  # type: ignore[arg-type]
            hit = sum(sum(replay(reqs, blocks, block_size).values()) for reqs in passes)
            rows.append({"working_set": float(ws), "kv_blocks": blocks, "predicted": hit / prompt})
    return pl.DataFrame(rows) if rows else pl.DataFrame()


CAPACITY_FACTORS = (0.125, 0.1875, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)


def kv_capacity_chart(
    req: pl.DataFrame, curve: pl.DataFrame, bytes_per_token: float | None, block_size: int
) -> alt.LayerChart | alt.FacetChart | alt.Chart:
    """The sizing question: prefix-cache hit rate against KV capacity in GiB. For each KV-overflow working set (a
    uniform pool of documents sized as a multiple of the server's deliberately small KV cache), the cache model's
    hit rate at every capacity (its requests replayed) as a line, and the server's measured hit rate (95% CI) at the
    capacity it ran with, on that line where the model is right."""
    title = "Prefix-cache hit rate vs KV cache capacity"
    rates = overflow_rates(req)
    if rates.is_empty() or rates["kv_blocks"].is_null().all():
        return note("No KV-overflow shape with the server's KV size in this run", title)
    per_block = (bytes_per_token or 0) * block_size
    unit, scale = ("GiB", per_block / GIB) if bytes_per_token else ("tokens", float(block_size))
    cap_blocks = int(rates["kv_blocks"].max())  # type: ignore[arg-type]
    ws_gib = rates["working_set"] * (cap_blocks - 1) * scale  # the pool's distinct prefix tokens (kv_overflow.overflow_documents)
    rates = rates.with_columns(
        (pl.col("kv_blocks") * scale).alias("capacity"),
        ws_gib.alias("working_set_size"),
        pl.format("working set {}x", pl.col("working_set").round(2)).alias("pool"),
    )
    pools = in_order(rates, "pool", "working_set")
    color = alt.Color("pool:N", title="pool (working set / KV)", sort=pools, scale=alt.Scale(scheme="viridis"))
    span = [cap_blocks * scale] + ([b * scale for b in curve["kv_blocks"].to_list()] if curve.height else [])
    lo, hi = min(span) / 1.2, max(span) * 1.2
    x = alt.X(
        "capacity:Q",
        title=f"KV cache capacity ({unit}, log scale)",
        scale=alt.Scale(type="log", domain=[lo, hi], nice=False),
        axis=alt.Axis(values=log_ticks(lo, hi) or alt.Undefined),
    )
    y_axis = alt.Axis(format="%")
    layers = []
    if curve.height:
        c = curve.join(rates.select("working_set", "pool", "working_set_size"), on="working_set").with_columns(
            (pl.col("kv_blocks") * scale).alias("capacity")
        )
        layers.append(
            alt.Chart(c)
            .mark_line(strokeDash=[6, 3])
            .encode(
                x=x,
                y=alt.Y("predicted:Q", title="prefix-cache hit rate (cache on)", axis=y_axis, scale=alt.Scale(domain=[0, 1])),
                color=color,
                tooltip=[
                    _tip("pool:N", "pool"),
                    _tip("capacity:Q", f"KV capacity ({unit})", ".3g"),
                    _tip("predicted:Q", "model hit rate", ".1%"),
                ],
            )
        )
    tips = [
        _tip("pool:N", "pool"),
        _tip("working_set_size:Q", f"working set ({unit})", ".3g"),
        _tip("capacity:Q", f"server KV ({unit})", ".3g"),
        _tip("predicted:Q", "model hit rate", ".1%"),
        _tip("measured:Q", "measured hit rate", ".1%"),
        _tip("measured_lo:Q", "95% CI low", ".1%"),
        _tip("measured_hi:Q", "95% CI high", ".1%"),
        _tip("requests:Q", "requests"),
    ]
    y = alt.Y("measured:Q", title="prefix-cache hit rate (cache on)", axis=y_axis, scale=alt.Scale(domain=[0, 1]))
    layers.append(
        alt.Chart(rates)
        .mark_errorbar(ticks=True)
        .encode(
            x=x, y=alt.Y("measured_lo:Q", title="prefix-cache hit rate (cache on)", axis=y_axis), y2="measured_hi:Q", color=color
        )
    )
    layers.append(alt.Chart(rates).mark_point(filled=True, size=90, opacity=1).encode(x=x, y=y, color=color, tooltip=tips))
    cap = cap_blocks * scale
    layers.append(alt.Chart(pl.DataFrame({"capacity": [cap]})).mark_rule(color="black", strokeDash=[2, 2]).encode(x="capacity:Q"))
    size = f"{cap:.3g} {unit}" + (f", {cap_blocks} blocks of {block_size} tokens" if bytes_per_token else "")
    return alt.layer(*layers).properties(
        width=460,
        height=260,
        title=alt.Title(
            title,
            subtitle=[
                f"dashed: the cache model's hit rate at each capacity; dots: measured (95% CI) on the server's KV cache "
                f"(dotted line: {size}).",
                "A curve flattens once the cache holds every prefix its requests come back to (no reuse is evicted first).",
            ],
            subtitleColor="#444444",
        ),
    )


def trace_capacity_chart(
    trace: pl.DataFrame, kv_blocks: int | None, bytes_per_token: float | None, block_size: int
) -> alt.LayerChart | alt.FacetChart | alt.Chart:
    """The replayed trace's capacity curve (aggregation's trace_capacity.csv): the whole trace's prefix hit rate under
    a block-level LRU by cache size, in GiB of KV where the model's size per token is known (else in tokens), and
    where this server's KV cache sits on it."""
    title = "The trace's capacity curve: prefix hit rate vs KV cache size"
    if trace.is_empty():
        return note("No replayed trace with a capacity curve in this run", title)
    unit, per_token = ("GiB", bytes_per_token / GIB) if bytes_per_token else ("tokens", 1.0)
    df = trace.sort("regime", "capacity_blocks").with_columns(
        (pl.col("capacity_blocks") * TRACE_BLOCK_TOKENS * per_token).alias("capacity"),
        (pl.col("capacity_blocks") * TRACE_BLOCK_TOKENS).alias("tokens"),
    )
    served = kv_blocks * block_size * per_token if kv_blocks else None
    span = [v for v in [*df["capacity"].to_list(), served] if v]
    lo, hi = min(span) / 1.3, max(span) * 1.3
    x = alt.X(
        "capacity:Q",
        title=f"KV cache size ({unit}, log scale; trace blocks at their real 512 tokens)",
        scale=alt.Scale(type="log", domain=[lo, hi], nice=False),
        axis=alt.Axis(values=log_ticks(lo, hi) or alt.Undefined),
    )
    layers = [
        alt.Chart(df)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("hit_rate:Q", title="prefix hit rate (whole trace, LRU)", axis=alt.Axis(format="%")),
            color=alt.Color(
                "regime:N", title="trace", legend=alt.Legend(orient="bottom") if df["regime"].n_unique() > 1 else None
            ),
            tooltip=[
                _tip("regime:N", "trace"),
                _tip("capacity_blocks:Q", "trace blocks", ","),
                _tip("tokens:Q", "tokens", ","),
                _tip("capacity:Q", f"KV ({unit})", ".3g"),
                _tip("hit_rate:Q", "hit rate", ".1%"),
            ],
        )
    ]
    subtitle = "points: the curve, computed by aggregation over the whole trace"
    if served:
        layers.append(
            alt.Chart(pl.DataFrame({"capacity": [served]})).mark_rule(color="black", strokeDash=[2, 2]).encode(x="capacity:Q")
        )
        subtitle += f"; dotted line: this server's KV cache ({served:.3g} {unit})"
    return alt.layer(*layers).properties(
        width=460, height=240, title=alt.Title(title, subtitle=subtitle, subtitleColor="#444444")
    )


# --- TTFT distributions ------------------------------------------------------------------------------------------


def ttft_quantiles(records: pl.DataFrame) -> pl.DataFrame:
    """Per closed-loop point of the one-shared-prefix regimes and per series (cache off, cache on, and the paired
    design's forced misses inside the cache-on lifetimes): the TTFT quantiles the boxes draw, in ms."""
    recs = records.filter(pl.col("workload").is_in(SINGLE_PREFIX) & (pl.col("request_rate") == 0) & (pl.col("status") == "ok"))
    if "in_window" in recs.columns:
        recs = recs.filter(pl.col("in_window"))
    if recs.is_empty():
        return pl.DataFrame()
    arm = pl.col("arm") if "arm" in recs.columns else pl.lit(None, dtype=pl.String)
    recs = recs.with_columns(
        pl.when(pl.col("mode") == OFF)
        .then(pl.lit(CACHE_WORDS[OFF]))
        .when(arm == "miss")
        .then(pl.lit(FORCED_MISS))
        .otherwise(pl.lit(CACHE_WORDS[ON]))
        .alias("cache"),
        (pl.col("ttft_s") * 1000).alias("ttft_ms"),
    )
    keys = ["regime", "prefix_len_tokens", "reuse_pct", "concurrency", "cache"]
    q = {f"p{p}": pl.col("ttft_ms").quantile(p / 100, interpolation="linear") for p in (5, 25, 50, 75, 95)}
    out = recs.group_by(keys).agg(**q, mean=pl.col("ttft_ms").mean(), requests=pl.len())
    order = {c: i for i, c in enumerate(CACHE_ORDER)}
    return out.with_columns(
        pl.format("{} ({} tok)", pl.col("regime"), pl.col("prefix_len_tokens")).alias("prefix"),
        pl.format("reuse {}%", pl.col("reuse_pct")).alias("reuse"),
        pl.format("c={}", pl.col("concurrency")).alias("load"),
        pl.col("cache").replace_strict(order, return_dtype=pl.Int64).alias("cache_order"),
    ).sort("prefix_len_tokens", "regime", "reuse_pct", "concurrency", "cache_order")


def ttft_distribution(records: pl.DataFrame) -> alt.FacetChart | alt.Chart:
    """Each point's TTFT distribution, cache off vs on, as boxes (p25 to p75, the median a white tick) with whiskers
    from p5 to p95, on a log axis: one panel per prefix and reuse level, one row of boxes per concurrency."""
    title = "TTFT per request, cache off vs on"
    q = ttft_quantiles(records) if records.height else pl.DataFrame()
    if q.is_empty():
        return note("No per-request records of the one-shared-prefix regimes", title)
    present = [c for c in CACHE_ORDER if c in set(q["cache"].to_list())]
    loads = in_order(q, "load", "concurrency")
    lo, hi = float(q["p5"].min()), float(q["p95"].max())  # type: ignore[arg-type]
    log_x = alt.Scale(type="log", domain=[lo / 1.15, hi * 1.15], nice=False)
    x = alt.X("p5:Q", title="TTFT (ms, log scale)", scale=log_x, axis=alt.Axis(values=log_ticks(lo / 1.15, hi * 1.15)))
    y = alt.Y("load:N", title="concurrency", sort=loads)
    y_off = alt.YOffset("cache:N", sort=present, scale=alt.Scale(domain=present))
    color = cache_color(q)
    tips = [
        _tip("cache:N", "cache"),
        _tip("prefix:N", "prefix"),
        _tip("reuse:N", "reuse"),
        _tip("load:N", "concurrency"),
        _tip("requests:Q", "requests"),
        _tip("p5:Q", "p5 (ms)", ".1f"),
        _tip("p25:Q", "p25 (ms)", ".1f"),
        _tip("p50:Q", "median (ms)", ".1f"),
        _tip("p75:Q", "p75 (ms)", ".1f"),
        _tip("p95:Q", "p95 (ms)", ".1f"),
        _tip("mean:Q", "mean (ms)", ".1f"),
    ]
    base = alt.Chart().encode(y=y, yOffset=y_off, color=color, tooltip=tips)
    whisker = base.mark_rule().encode(x=x, x2="p95:Q")
    box = base.mark_bar(size=7).encode(x=alt.X("p25:Q", title="TTFT (ms, log scale)", scale=log_x), x2="p75:Q")
    median = (
        alt.Chart()
        .mark_tick(color="white", thickness=2, size=7)
        .encode(x=alt.X("p50:Q", scale=log_x), y=y, yOffset=y_off, tooltip=tips)
    )
    step = 11  # per box: with an offset channel the step sizes the offset band
    return (
        alt.layer(whisker, box, median, data=q)
        .properties(width=260, height=alt.Step(step))
        .facet(column=prefix_column(q), row=reuse_row(q))
        .properties(title=f"{title} (box: p25 to p75, white tick: median, whiskers: p5 to p95)")
    )


# --- Every contrast on one chart ---------------------------------------------------------------------------------

# A control (true ratio 1) that the claim rule finds faster or slower: a warning about the run, not a gain or a loss.
CONTROL_DIFFERS = "control found a difference"
VERDICT_COLORS = {
    "faster": "#2ca02c",
    "slower": "#d62728",
    "no difference": "#7f7f7f",
    "not claimed": "#e6a117",
    "not measured": "#c7c7c7",
    CONTROL_DIFFERS: "#9467bd",
}
METRIC_WORDS = {"ttft": "TTFT", "e2e": "end-to-end", "throughput": "throughput"}
FAMILY_WORDS = {
    "cache_effect": "what caching bought",
    "throughput": "what caching bought",
    "shape": "workload shapes",
    "flag_cost": "cost of leaving it on (0% reuse)",
    "control": "controls (true ratio 1)",
}
MAX_ROWS = 25
MIN_GROUP_ROWS = 3  # past the row budget, each group keeps at least this many rows


def forest_rows(contrasts: pl.DataFrame, max_rows: int = MAX_ROWS) -> tuple[pl.DataFrame, str]:
    """The contrasts the forest plot draws, one row per (group, label) with up to one mark per metric, at most
    `max_rows` rows, grouped as the verdict table reads: what caching bought (cache effects and throughput), the
    workload shapes (their throughput too), the flag's cost at 0% reuse, then the controls. Past the budget, controls
    that found what a control should (no difference) go first, then the last rows of the later groups (controls
    first), each down to MIN_GROUP_ROWS before an earlier one gives any, so the headline rows stay and no group
    disappears; the returned note says what was left out (every contrast is in contrasts.csv)."""
    df = contrasts.filter(pl.col("label").is_not_null()).with_row_index("order")
    shape = pl.col("shape").fill_null("") != "" if "shape" in df.columns else pl.lit(False)
    df = df.with_columns(
        pl.when((pl.col("family") == "throughput") & shape)
        .then(pl.lit(FAMILY_WORDS["shape"]))
        .otherwise(pl.col("family").replace_strict(FAMILY_WORDS, default=pl.col("family")))
        .alias("group"),
        pl.col("metric").replace_strict(METRIC_WORDS, default=pl.col("metric")).alias("measure"),
    )
    groups = list(dict.fromkeys(FAMILY_WORDS.values())) + sorted(set(df["group"]) - set(FAMILY_WORDS.values()))
    df = df.with_columns(
        pl.col("group").replace_strict({g: i for i, g in enumerate(groups)}, return_dtype=pl.Int64).alias("group_order")
    )
    first = df.group_by("group", "label").agg(pl.col("order").min().alias("row_order"), pl.col("group_order").first())
    df = df.join(first.select("group", "label", "row_order"), on=["group", "label"])
    rows = first.sort("group_order", "row_order")
    left: list[str] = []
    if rows.height > max_rows:
        passing = (
            df.filter(pl.col("family") == "control")
            .group_by("group", "label")
            .agg((pl.col("verdict") == "no difference").all().alias("ok"))
        )
        quiet = passing.filter(pl.col("ok")).select("group", "label")
        if quiet.height:
            rows = rows.join(quiet, on=["group", "label"], how="anti").sort("group_order", "row_order")
            left.append(f"{quiet.height} controls that found no difference")
    kept_rows = [(g, lab) for g, lab in rows.select("group", "label").iter_rows()]
    dropped: dict[str, int] = {}
    for floor in (MIN_GROUP_ROWS, 0):  # the later groups give way first, each down to a few rows, then further
        for group in reversed(groups):
            while len(kept_rows) > max_rows and sum(g == group for g, _ in kept_rows) > floor:
                kept_rows.pop(max(i for i, (g, _) in enumerate(kept_rows) if g == group))
                dropped[group] = dropped.get(group, 0) + 1
    left += [f"{n} rows of {g}" for g, n in dropped.items()]
    keep = pl.DataFrame(kept_rows, schema=["group", "label"], orient="row")
    kept = df.join(keep, on=["group", "label"]).sort("group_order", "row_order", "order")
    return kept, ("not drawn (all in contrasts.csv): " + "; ".join(left)) if left else ""


def contrasts_chart(contrasts: pl.DataFrame) -> alt.FacetChart | alt.Chart:
    """Every contrast with its 95% interval on one log-scale axis where > 1 means caching helps (a forest plot):
    one row per point, a mark per metric (TTFT, end-to-end, throughput), coloured by the claim rule's verdict, the
    faint band around 1 the contrast's minimum detectable effect, grouped as the report's verdict table is."""
    title = "Every contrast, > 1: caching helps (95% intervals; faint band: ± the minimum detectable effect)"
    if contrasts.is_empty() or "ratio" not in contrasts.columns:
        return note("No contrast in this run (contrasts.csv is empty)", "Every contrast")
    df, left = forest_rows(contrasts)
    df = df.with_columns(
        pl.when(pl.col("mde_pct").is_not_null()).then(1 / (1 + pl.col("mde_pct") / 100)).alias("mde_lo"),
        pl.when(pl.col("mde_pct").is_not_null()).then(1 + pl.col("mde_pct") / 100).alias("mde_hi"),
        pl.when(pl.col("ratio").is_null()).then(pl.lit(1.0)).alias("missing_at"),
        pl.when((pl.col("family") == "control") & pl.col("verdict").is_in(["faster", "slower"]))
        .then(pl.lit(CONTROL_DIFFERS))
        .otherwise(pl.col("verdict"))
        .alias("shown"),
    )
    finite = [v for c in ("lo", "hi", "ratio", "mde_lo", "mde_hi") for v in df[c].drop_nulls().to_list() if v and v > 0]
    lo, hi = min([*finite, 1.0]), max([*finite, 1.0])
    domain = [lo / 1.08, hi * 1.08]
    x = alt.X(
        "ratio:Q", title="effect (ratio; > 1: caching helps, log scale)", scale=alt.Scale(type="log", domain=domain, nice=False)
    )
    measures = [m for m in METRIC_WORDS.values() if m in set(df["measure"].to_list())]
    y = alt.Y("label:N", title=None, sort=alt.SortField("row_order"), axis=alt.Axis(labelLimit=320))
    y_off = alt.YOffset("measure:N", sort=measures, scale=alt.Scale(domain=measures))
    present = [v for v in VERDICT_COLORS if v in set(df["shown"].to_list())]
    color = alt.Color(
        "shown:N",
        title="verdict",
        sort=present,
        scale=alt.Scale(domain=present, range=[VERDICT_COLORS[v] for v in present]),
        legend=alt.Legend(orient="bottom", direction="horizontal"),
    )
    tips = [
        _tip("label:N", "point"),
        _tip("measure:N", "metric"),
        _tip("design:N", "design"),
        _tip("ratio:Q", "ratio", ".3f"),
        _tip("lo:Q", "95% CI low", ".3f"),
        _tip("hi:Q", "95% CI high", ".3f"),
        _tip("mde_pct:Q", "MDE (%)", ".1f"),
        _tip("baseline:Q", "baseline", ".4g"),
        _tip("treated:Q", "treated", ".4g"),
        _tip("unit:N", "unit"),
        _tip("n:Q", "n"),
        _tip("n_unit:N", "n of"),
        _tip("verdict:N", "verdict"),
        _tip("reason:N", "why"),
    ]
    base = alt.Chart().encode(y=y, yOffset=y_off)
    mde = (
        base.transform_filter("isValid(datum.mde_lo)")
        .mark_bar(color="#1f77b4", opacity=0.12, size=6)
        .encode(x=alt.X("mde_lo:Q", scale=alt.Scale(type="log", domain=domain, nice=False)), x2="mde_hi:Q")
    )
    one = alt.Chart().mark_rule(color="black", strokeDash=[3, 3]).encode(x=alt.datum(1.0))
    bars = (
        base.transform_filter("isValid(datum.lo)")
        .mark_rule(strokeWidth=2)
        .encode(x=alt.X("lo:Q", scale=alt.Scale(type="log", domain=domain, nice=False)), x2="hi:Q", color=color)
    )
    marks = (
        base.transform_filter("isValid(datum.ratio)")
        .mark_point(filled=True, size=55, opacity=1)
        .encode(
            x=x,
            color=color,
            shape=alt.Shape("measure:N", title="metric", sort=measures, legend=alt.Legend(orient="bottom")),
            tooltip=tips,
        )
    )
    missing = (
        base.transform_filter("isValid(datum.missing_at)")
        .mark_text(align="left", dx=4, fontSize=10, color="#888888")
        .encode(x=alt.X("missing_at:Q", scale=alt.Scale(type="log", domain=domain, nice=False)), text=alt.value("not measured"))
    )
    step = 8  # per metric mark: with an offset channel the step sizes the offset band
    chart = (
        alt.layer(mde, one, bars, marks, missing, data=df)
        .properties(width=380, height=alt.Step(step))
        .facet(
            row=alt.Row(
                "group:N",
                title=None,
                sort=alt.SortField("group_order"),
                header=alt.Header(
                    labelAngle=0, labelAlign="left", labelAnchor="start", labelOrient="top", labelFontWeight="bold"
                ),
            ),
            spacing=6,
        )
        .resolve_scale(y="independent")
    )
    return chart.properties(title=alt.Title(title, subtitle=textwrap.wrap(left, 110) or alt.Undefined, subtitleColor="#444444"))


# --- Drawing and saving ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartData:
    """What the drawings read: the one-shared-prefix tables, the shapes' per-request table, and the settings."""

    summary: pl.DataFrame
    ratios: pl.DataFrame  # the contrast each point is judged by (prefixbench.contrasts)
    shape_req: pl.DataFrame
    slo: dict
    model_dir: str | None
    block_size: int
    cold: list[tuple[float, float]]  # the calibration's cold requests (ideal.cold_samples), none without one
    contrasts: pl.DataFrame = field(default_factory=pl.DataFrame)  # contrasts.csv (verdicts.contrast_rows)
    records: pl.DataFrame = field(default_factory=pl.DataFrame)  # every request (aggregate.load_records)
    trace: pl.DataFrame = field(default_factory=pl.DataFrame)  # trace_capacity.csv
    hashes: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # the KV shapes' prompt block hashes
    dtype: str | None = None  # the server's dtype (the KV cache's bytes per value)
    replica_points: pl.DataFrame = field(default_factory=pl.DataFrame)  # replica_points.csv (replicas_analysis)
    routing_curve: pl.DataFrame = field(default_factory=pl.DataFrame)  # routing_curve.csv: the simulator on the trace

    @property
    def kv_bytes(self) -> float | None:
        return kv_bytes_per_token(self.model_dir, self.dtype)

    def served_trace_blocks(self) -> int | None:
        """The KV blocks of the server that replayed the trace (shape_requests.csv), None without one."""
        req = self.shape_req
        if req.is_empty() or "workload" not in req.columns or "kv_blocks" not in req.columns:
            return None
        blocks = req.filter(pl.col("workload") == "trace")["kv_blocks"].drop_nulls()
        return int(blocks.max()) if blocks.len() else None  # type: ignore[arg-type]


def _kv_capacity(d: ChartData) -> alt.TopLevelMixin:
    curve = capacity_curve(d.shape_req, d.hashes, d.block_size, CAPACITY_FACTORS) if d.hashes else pl.DataFrame()
    return kv_capacity_chart(d.shape_req, curve, d.kv_bytes, d.block_size)


# Each registered chart's drawing (prefixbench.chart_specs registers the names; a test checks both agree).
DRAW: dict[str, Callable[[ChartData], alt.TopLevelMixin]] = {
    "contrasts": lambda d: contrasts_chart(d.contrasts),
    "ttft_vs_concurrency": lambda d: ttft_vs_concurrency(d.summary),
    "throughput_vs_p95": lambda d: throughput_vs_p95(d.summary),
    "speedup": lambda d: speedup(d.ratios),
    "ttft_distribution": lambda d: ttft_distribution(d.records),
    "open_loop": lambda d: open_loop_latency(d.summary, d.slo),
    "ideal": lambda d: ideal_chart(d.summary, load_shape(d.model_dir) if d.model_dir else None, d.block_size, d.cold, d.records),
    "shapes": lambda d: shapes_chart(d.shape_req if d.shape_req.height else pl.DataFrame({"status": []})),
    "kv_capacity": _kv_capacity,
    "trace_capacity": lambda d: trace_capacity_chart(d.trace, d.served_trace_blocks(), d.kv_bytes, d.block_size),
    "replicas": lambda d: replicas_chart(d.replica_points),
    "routing_curve": lambda d: routing_curve_chart(d.routing_curve, d.replica_points),
}


def save_chart(chart: alt.TopLevelMixin, outdir: Path, name: str) -> list[Path]:
    """One chart's files (chart_specs.EXTENSIONS): the PNG at twice the size, the SVG, and the Vega-Lite spec with its
    data inline and keys sorted (so a re-render writes the same bytes)."""
    written = []
    for ext in EXTENSIONS:
        path = outdir / f"{name}.{ext}"
        if ext == "png":
            chart.save(str(path), scale_factor=2)
        elif ext == "vl.json":
            path.write_text(json.dumps(chart.to_dict(), sort_keys=True, separators=(",", ":")) + "\n")
        else:
            chart.save(str(path))
        written.append(path)
    return written


def read_csv_or_empty(path: Path | None) -> pl.DataFrame:
    return (
        pl.read_csv(path, infer_schema_length=None)
        if path and Path(path).is_file() and Path(path).stat().st_size
        else pl.DataFrame()
    )


def draw_all(
    *,
    summary_csv: Path,
    speedup_csv: Path,
    outdir: Path,
    names: list[str],
    slo: dict,
    model_dir: str | None,
    block_size: int,
    shape_csv: Path | None = None,
    calibration_json: Path | None = None,
    contrasts_csv: Path | None = None,
    records: Sequence[Path] = (),
    trace_csv: Path | None = None,
    kv_prompts: Sequence[Path] = (),
    dtype: str | None = None,
    replica_points_csv: Path | None = None,
    routing_curve_csv: Path | None = None,
    policy: str | None = None,
) -> list[Path]:
    """Every chart of `names`; behind a router, the records are the primary `policy`'s (aggregate.load_records)."""
    summary = pl.read_csv(summary_csv)
    ratios = paired_effects(pl.read_csv(speedup_csv))  # the contrast each point is judged by (prefixbench.contrasts)
    summary, ratios = single_prefix(summary, ratios)  # the shapes get their own chart
    shape_req = read_shape_table(shape_csv)
    names = names or chart_names(rates=False, shapes=False)
    needs_records = {"ttft_distribution", "ideal"} & set(names)
    data = ChartData(
        summary,
        ratios,
        shape_req,
        slo,
        model_dir,
        block_size,
        cold_samples(calibration_json),
        contrasts=read_csv_or_empty(contrasts_csv),
        records=load_records(records, policy) if records and needs_records else pl.DataFrame(),
        trace=read_csv_or_empty(trace_csv),
        hashes=load_hashes(kv_prompts) if "kv_capacity" in names else {},
        dtype=dtype,
        replica_points=read_csv_or_empty(replica_points_csv),
        routing_curve=read_csv_or_empty(routing_curve_csv),
    )
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        written += save_chart(DRAW[name](data), outdir, name)
    return written


__all__ = ["MODES", "DRAW", "ChartData", "draw_all"]
