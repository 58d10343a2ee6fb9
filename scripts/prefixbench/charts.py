"""Altair charts of the summary, saved as PNG and SVG through vl-convert (no network needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import polars as pl

from . import MODES
from .aggregate import closed_loop, open_loop, single_prefix
from .chart_specs import EXTENSIONS, chart_names
from .contrasts import paired_effects
from .ideal import Shape, cold_samples, ideal_rows, load_shape
from .shapes.results import read_shape_table

SPEEDUP_TITLE = "TTFT speed-up (off / on, log scale)"
PAIRED_TITLE = "TTFT speed-up (forced miss / hit, log scale)"
MODE_COLORS = alt.Scale(domain=list(MODES), range=["#d62728", "#1f77b4"])
# A reader's words for the settings in every legend ("cache off" / "cache on"), the data keeping the mode names.
MODE_LEGEND = alt.Legend(labelExpr=f"datum.label == '{MODES[0]}' ? 'cache off' : 'cache on'")


def mode_color() -> alt.Color:
    return alt.Color("mode:N", scale=MODE_COLORS, title="cache", legend=MODE_LEGEND)


def reuse_rows() -> alt.Row:
    """One row per reuse level, the highest first (numeric order, not the labels' alphabetical one)."""
    return alt.Row("reuse:N", title=None, sort=alt.SortField("reuse_pct", order="descending"))


def _with_labels(summary: pl.DataFrame) -> pl.DataFrame:
    return summary.with_columns(
        pl.format("{} ({} tok)", pl.col("regime"), pl.col("prefix_len_tokens")).alias("prefix"),
        pl.format("reuse {}%", pl.col("reuse_pct")).alias("reuse"),
    )


def _concurrency_axis(summary: pl.DataFrame) -> alt.X:
    levels = sorted(set(summary["concurrency"].to_list()))
    return alt.X(
        "concurrency:Q",
        scale=alt.Scale(type="log", base=2),
        title="concurrency (requests in flight)",
        axis=alt.Axis(values=levels, format="d"),
    )


TTFT_COLUMNS = ("mean_ttft_s", "p50_ttft_s", "p95_ttft_s")


def ttft_vs_concurrency(summary: pl.DataFrame) -> alt.FacetChart:
    """Mean TTFT against concurrency, cache off vs on, one panel per (prefix length, reuse)."""
    summary = closed_loop(summary)
    df = _with_labels(summary).with_columns((pl.col(c) * 1000).alias(c.replace("_s", "_ms")) for c in TTFT_COLUMNS)
    base = alt.Chart(df).encode(
        x=_concurrency_axis(summary),
        y=alt.Y("mean_ttft_ms:Q", title="TTFT (ms)"),
        color=mode_color(),
        tooltip=["mode", "prefix_len_tokens", "reuse_pct", "concurrency", "mean_ttft_ms", "p95_ttft_ms"],
    )
    layer = base.mark_line(point=True) + base.mark_errorbar().encode(
        y=alt.Y("p50_ttft_ms:Q", title="TTFT (ms)"), y2="p95_ttft_ms:Q"
    )
    return (
        layer.properties(width=220, height=160)
        .facet(
            column=alt.Column("prefix:N", title="shared prefix", sort=alt.SortField("prefix_len_tokens")),
            row=reuse_rows(),
        )
        .properties(title="Time to first token vs concurrency (line: mean; bar: p50 to p95)")
    )


def throughput_vs_p95(summary: pl.DataFrame) -> alt.FacetChart:
    """Output tokens/s against p95 end-to-end latency; each point is one concurrency level."""
    df = _with_labels(closed_loop(summary))
    base = alt.Chart(df).encode(
        x=alt.X("p95_e2e_s:Q", title="p95 end-to-end latency (s)"),
        y=alt.Y("tok_s:Q", title="output tokens/s"),
        color=mode_color(),
        order="concurrency:Q",
        tooltip=["mode", "prefix_len_tokens", "reuse_pct", "concurrency", "tok_s", "p95_e2e_s"],
    )
    labels = base.mark_text(dx=8, dy=-6, fontSize=10).encode(text=alt.Text("concurrency:Q", format="d"))
    return (
        (base.mark_line(point=True) + labels)
        .properties(width=220, height=160)
        .facet(
            column=alt.Column("prefix:N", title="shared prefix", sort=alt.SortField("prefix_len_tokens")),
            row=reuse_rows(),
        )
        .properties(title="Throughput vs p95 latency (labels: concurrency); up and left is better")
    )


def speedup(speedups: pl.DataFrame) -> alt.VConcatChart:
    """TTFT speed-up as the prefix grows and as reuse falls, per concurrency: the paired contrast (forced miss over
    hit inside the cache-on lifetimes) where the point ran it, as the report judges it, else off over on."""
    paired = "contrast" in speedups.columns and (speedups["contrast"] == "paired").any()
    title = PAIRED_TITLE if paired else SPEEDUP_TITLE
    df = closed_loop(speedups).with_columns(
        pl.format("reuse {}%", pl.col("reuse_pct")).alias("reuse"),
        pl.format("c={}", pl.col("concurrency")).alias("conc"),
    )
    # Layers carry no data of their own, so the facet splits the layered data per panel.
    rule = alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(1.0))
    by_len = (
        alt.Chart()
        .mark_line(point=True)
        .encode(
            x=alt.X("prefix_len_tokens:Q", title="shared prefix length (tokens)"),
            y=alt.Y("ttft_speedup:Q", title=title, scale=alt.Scale(type="log")),
            color=alt.Color("reuse:N", title="reuse"),
            tooltip=["regime", "prefix_len_tokens", "reuse_pct", "concurrency", "ttft_speedup", "throughput_gain"],
        )
    )
    by_reuse = (
        alt.Chart()
        .mark_line(point=True)
        .encode(
            x=alt.X("reuse_pct:Q", title="requests sharing the prefix (%)", scale=alt.Scale(domain=[0, 100])),
            y=alt.Y("ttft_speedup:Q", title=title, scale=alt.Scale(type="log")),
            color=alt.Color("prefix_len_tokens:N", title="prefix tokens"),
            tooltip=["regime", "prefix_len_tokens", "reuse_pct", "concurrency", "ttft_speedup", "throughput_gain"],
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
    bars_len = (
        by_len.transform_filter("isValid(datum.ttft_speedup_lo)")
        .mark_errorbar(ticks=True)
        .encode(y=alt.Y("ttft_speedup_lo:Q", title=title, scale=alt.Scale(type="log")), y2="ttft_speedup_hi:Q")
    )
    bars_reuse = (
        by_reuse.transform_filter("isValid(datum.ttft_speedup_lo)")
        .mark_errorbar(ticks=True)
        .encode(y=alt.Y("ttft_speedup_lo:Q", title=title, scale=alt.Scale(type="log")), y2="ttft_speedup_hi:Q")
    )
    top = (
        alt.layer(band, by_len, bars_len, rule, data=df)
        .properties(width=200, height=160)
        .facet(column=alt.Column("conc:N", title="concurrency", sort=alt.SortField("concurrency")))
        .properties(title=f"Speed-up as the prefix grows (bars: 95% CI; {band_words}dashed: no change)")
    )
    bottom = (
        alt.layer(band, by_reuse, bars_reuse, rule, data=df)
        .properties(width=200, height=160)
        .facet(column=alt.Column("conc:N", title="concurrency", sort=alt.SortField("concurrency")))
        .properties(title=f"Speed-up as reuse falls (bars: 95% CI; {band_words}dashed: no change)")
    )
    return alt.vconcat(top, bottom).resolve_scale(color="independent")


def open_loop_latency(summary: pl.DataFrame, slo: dict) -> alt.FacetChart:
    """p95 TTFT against offered request rate (open loop), with the SLO as a dashed line."""
    df = _with_labels(open_loop(summary))
    base = alt.Chart().encode(
        x=alt.X("request_rate:Q", title="offered load (requests/s, open loop)"),
        y=alt.Y("p95_ttft_s:Q", title="p95 TTFT (s)", scale=alt.Scale(type="log")),
        color=mode_color(),
        tooltip=["mode", "prefix_len_tokens", "reuse_pct", "request_rate", "p95_ttft_s", "p95_e2e_s", "req_s"],
    )
    target = alt.Chart().mark_rule(strokeDash=[4, 4], color="gray").encode(y=alt.datum(slo["p95_ttft_s"]))
    return (
        alt.layer(base.mark_line(point=True), target, data=df)
        .properties(width=220, height=160)
        .facet(
            column=alt.Column("prefix:N", title="shared prefix", sort=alt.SortField("prefix_len_tokens")),
            row=reuse_rows(),
        )
        .properties(title=f"Open loop: p95 TTFT vs offered load (dashed: SLO {slo['p95_ttft_s']:g} s)")
    )


def ideal_chart(
    summary: pl.DataFrame, shape: Shape | None, block_size: int, cold: Sequence[tuple[float, float]] = ()
) -> alt.Chart:
    """Cold, FLOPs-ideal and measured warm TTFT per regime (full reuse, lowest concurrency). `cold`: the
    calibration's cold requests (ideal.cold_samples), so the fixed cost is fitted as the report's text fits it."""
    rows = ideal_rows(summary, shape, block_size, list(cold)) if shape else []
    if not rows:
        return (
            alt.Chart(pl.DataFrame({"t": ["Not computed: no local model config.json"]}))
            .mark_text(size=14)
            .encode(text="t:N")
            .properties(width=400, height=60, title="Expected vs measured TTFT")
        )
    data = pl.DataFrame(
        [
            {
                "regime": f"{r['regime']} ({r['prefix_len_tokens']} tok)",
                "kind": kind,
                "ttft_s": r[key],
                "order": i,
                "prefix_len_tokens": r["prefix_len_tokens"],
            }
            for r in rows
            for i, (kind, key) in enumerate(
                [("cold (cache off)", "cold_s"), ("ideal warm (FLOPs)", "ideal_s"), ("measured warm", "warm_s")]
            )
        ]
    )
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("kind:N", title=None, sort=alt.SortField("order"), axis=alt.Axis(labelAngle=0)),
            y=alt.Y("ttft_s:Q", title="TTFT (s)"),
            color=alt.Color(
                "kind:N", title=None, sort=alt.SortField("order"), scale=alt.Scale(range=["#d62728", "#98df8a", "#1f77b4"])
            ),
            column=alt.Column("regime:N", title="shared prefix", sort=alt.SortField("prefix_len_tokens")),
            tooltip=["regime", "kind", "ttft_s"],
        )
        .properties(width=260, height=200, title="TTFT: cache off, the FLOPs ideal with the prefix cached, and measured")
    )


def shapes_chart(req: pl.DataFrame) -> alt.HConcatChart | alt.Chart:
    """Multi-turn: mean TTFT by turn, off vs on; KV overflow: hit rate predicted vs measured by working set."""
    ok = req.filter(pl.col("status") == "ok")
    panels = []
    mt = ok.filter(pl.col("workload") == "multi_turn")
    if mt.height:
        # Sorted: group_by's order is not stable, and the SVG's marks follow the rows (charts re-render byte-identical).
        keys = ["regime", "concurrency", "turn", "mode"]
        turns = mt.group_by(keys).agg(pl.col("ttft_s").mean().alias("mean_ttft_s")).sort(keys)
        turns = turns.with_columns(pl.format("{} c={}", pl.col("regime"), pl.col("concurrency")).alias("series"))
        panels.append(
            alt.Chart(turns)
            .mark_line(point=True)
            .encode(
                x=alt.X("turn:O", title="turn (history grows)"),
                y=alt.Y("mean_ttft_s:Q", title="mean TTFT (s)"),
                color=mode_color(),
                shape=alt.Shape("series:N", title="shape, load"),
                strokeDash=alt.StrokeDash("series:N", legend=None),
                tooltip=["series", "mode", "turn", "mean_ttft_s"],
            )
            .properties(width=300, height=230, title="Multi-turn chat: TTFT by turn")
        )
    ov = ok.filter((pl.col("workload") == "kv_overflow") & (pl.col("mode") == MODES[1]))
    if ov.height:
        rates = (
            ov.group_by("working_set")
            .agg(
                (pl.col("predicted_cached_tokens").sum() / pl.col("prompt_tokens").sum()).alias("predicted"),
                (pl.col("cached_tokens").sum() / pl.col("prompt_tokens").sum()).alias("measured"),
            )
            .sort("working_set")
        )
        x = alt.X("working_set:Q", title="working set / KV capacity")
        y_axis = alt.Axis(format="%")
        predicted = (
            alt.Chart(rates)
            .mark_line(color="#7f7f7f", strokeDash=[6, 3])
            .encode(x=x, y=alt.Y("predicted:Q", title="prefix-cache hit rate (cache on)", axis=y_axis))
        )
        measured = (
            alt.Chart(rates)
            .mark_point(filled=True, size=90, color="#1f77b4")
            .encode(x=x, y=alt.Y("measured:Q", axis=y_axis), tooltip=["working_set", "predicted", "measured"])
        )
        cliff = alt.Chart(pl.DataFrame({"x": [1.0]})).mark_rule(color="black").encode(x="x:Q")
        panels.append(
            (predicted + measured + cliff).properties(
                width=300,
                height=230,
                title="KV overflow: hit rate, measured (dots) vs model (dashed); line: capacity",
            )
        )
    if not panels:
        return (
            alt.Chart(pl.DataFrame({"note": ["no multi-turn or overflow shape in this run"]})).mark_text().encode(text="note:N")
        )
    return alt.hconcat(*panels).resolve_scale(color="independent")


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


# Each registered chart's drawing (prefixbench.chart_specs registers the names; a test checks both agree).
DRAW: dict[str, Callable[[ChartData], alt.TopLevelMixin]] = {
    "ttft_vs_concurrency": lambda d: ttft_vs_concurrency(d.summary),
    "throughput_vs_p95": lambda d: throughput_vs_p95(d.summary),
    "speedup": lambda d: speedup(d.ratios),
    "open_loop": lambda d: open_loop_latency(d.summary, d.slo),
    "ideal": lambda d: ideal_chart(d.summary, load_shape(d.model_dir) if d.model_dir else None, d.block_size, d.cold),
    "shapes": lambda d: shapes_chart(d.shape_req if d.shape_req.height else pl.DataFrame({"status": []})),
}


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
) -> list[Path]:
    summary = pl.read_csv(summary_csv)
    ratios = paired_effects(pl.read_csv(speedup_csv))  # the contrast each point is judged by (prefixbench.contrasts)
    summary, ratios = single_prefix(summary, ratios)  # the shapes get their own chart
    shape_req = read_shape_table(shape_csv)
    data = ChartData(summary, ratios, shape_req, slo, model_dir, block_size, cold_samples(calibration_json))
    outdir.mkdir(parents=True, exist_ok=True)
    charts = {name: DRAW[name](data) for name in (names or chart_names(rates=False, shapes=False))}
    written = []
    for name, chart in charts.items():
        for ext in EXTENSIONS:
            path = outdir / f"{name}.{ext}"
            chart.save(str(path), scale_factor=2) if ext == "png" else chart.save(str(path))
            written.append(path)
    return written
