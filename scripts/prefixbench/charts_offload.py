"""The second KV tier's charts (issue 24): hit rate and TTFT against the working set / GPU pool, without and with the
CPU tier, the two-tier model's prediction as a line (its 95% range over draws as a band) and the measured points.
Drawn by rules/offload.smk from prefixbench.offload's tables, in the formats every chart has (charts.save_chart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from .charts import _tip, in_order, log_ticks, note, save_chart
from .offload import HIT_CLASSES, OFFLOAD_CHART_NAMES, mean_ci

TIER_ORDER = ["without tier", "with tier"]
TIER_COLORS = ["#d62728", "#1f77b4"]
CLASS_COLORS = ["#2ca02c", "#1f77b4", "#7f7f7f"]  # GPU hit, CPU hit, miss


def _tier_color(title: str = "GPU pool", legend: bool = True) -> alt.Color:
    return alt.Color(
        "tier:N",
        title=title,
        sort=TIER_ORDER,
        scale=alt.Scale(domain=TIER_ORDER, range=TIER_COLORS),
        legend=alt.Undefined if legend else None,
    )


def _x(points: pl.DataFrame) -> alt.X:
    lo, hi = float(points["working_set"].min()) / 1.3, float(points["working_set"].max()) * 1.3  # type: ignore[arg-type]
    return alt.X(
        "working_set:Q",
        title="working set / GPU pool (log scale)",
        scale=alt.Scale(type="log", domain=[lo, hi], nice=False),
        axis=alt.Axis(values=log_ticks(lo, hi) or alt.Undefined),
    )


def _facet_label(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.format("{}-token documents", pl.col("doc_tokens")).alias("prompts"))


def hit_rate_chart(points: pl.DataFrame) -> alt.TopLevelMixin:
    """Per pass: measured hit rate (filled), its CPU-tier part (hollow), the model's mean (line) and 95% range over
    draws (band); the GPU pool and the CPU tier's capacity as rules, in units of the GPU pool."""
    title = "Prefix-cache hit rate vs working set, without and with a CPU tier"
    if not points.height:
        return note("No KV-overflow pass ran in the tier lifetimes", title)
    pts = _facet_label(points).sort("working_set")
    agg = pts.group_by("prompts", "doc_tokens", "tier", "working_set").agg(
        pl.col("measured_hit_rate").mean().alias("measured"),
        pl.col("cpu_hit_rate").mean().alias("cpu"),
        pl.col("predicted_hit_rate").mean().alias("predicted"),
        pl.col("predicted_lo_hit_rate").mean().alias("lo"),
        pl.col("predicted_hi_hit_rate").mean().alias("hi"),
        pl.col("exact").sum().alias("exact"),
        pl.col("predicted_requests").sum().alias("predicted_requests"),
    )
    x, color = _x(pts), _tier_color()
    rules = [{"working_set": 1.0, "what": "GPU pool"}]
    cap = pts.filter(pl.col("tier_on") & pl.col("cpu_blocks").is_not_null())
    if cap.height:
        rules.append({"working_set": float(cap["cpu_blocks"][0]) / (float(cap["kv_blocks"][0]) - 1), "what": "CPU tier"})
    panels = [
        _hit_panel(agg.filter(pl.col("prompts") == p), x, color, pl.DataFrame(rules), p if agg["prompts"].n_unique() > 1 else "")
        for p in in_order(agg, "prompts", "doc_tokens")
    ]
    chart = panels[0] if len(panels) == 1 else alt.concat(*panels, columns=2)
    return chart.properties(
        title=alt.Title(
            title,
            subtitle=[
                "dots: measured per working set (diamonds: the part from the CPU tier); dashed: the two-tier model, band: "
                "its 95% range over the order vLLM makes stored blocks evictable in.",
                "dotted rules: the GPU pool (1x) and the CPU tier's capacity. vLLM's tier is inclusive: hits last until "
                "the working set outgrows the larger of the two.",
            ],
            subtitleColor="#444444",
        )
    )


def _hit_panel(agg: pl.DataFrame, x: alt.X, color: alt.Color, rules: pl.DataFrame, title: str) -> alt.LayerChart | alt.FacetChart:
    """One prompt length's panel: the model's band and line, the measured points, the capacities as rules."""
    y = alt.Y("measured:Q", title="prompt tokens served from cache", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]))
    tips = [
        _tip("tier:N", "GPU pool"),
        _tip("working_set:Q", "working set / GPU pool", ".3g"),
        _tip("measured:Q", "measured", ".1%"),
        _tip("cpu:Q", "of which from the CPU tier", ".1%"),
        _tip("predicted:Q", "model (mean of draws)", ".1%"),
        _tip("lo:Q", "model 95% low", ".1%"),
        _tip("hi:Q", "model 95% high", ".1%"),
        _tip("exact:Q", "requests predicted exactly"),
        _tip("predicted_requests:Q", "requests predicted"),
    ]
    base = alt.Chart(agg)
    return alt.layer(
        base.mark_area(opacity=0.15).encode(x=x, y=alt.Y("lo:Q"), y2="hi:Q", color=color),
        base.mark_line(strokeDash=[6, 3]).encode(x=x, y=alt.Y("predicted:Q"), color=color),
        base.mark_point(filled=True, size=80, opacity=1).encode(x=x, y=y, color=color, tooltip=tips),
        base.transform_filter("datum.cpu > 0")
        .mark_point(shape="diamond", size=70, filled=False)
        .encode(x=x, y=alt.Y("cpu:Q"), color=color, tooltip=tips),
        alt.Chart(rules)
        .mark_rule(color="black", strokeDash=[2, 2])
        .encode(x="working_set:Q", tooltip=[_tip("what:N", "capacity"), _tip("working_set:Q", "x GPU pool", ".3g")]),
        alt.Chart(rules)
        .mark_text(align="left", dx=3, dy=6, baseline="top", fontSize=10)
        .encode(x="working_set:Q", y=alt.value(0), text="what:N"),
    ).properties(width=340, height=230, title=title)


def point_ttft(requests: pl.DataFrame) -> pl.DataFrame:
    """Mean TTFT per working set, prompt length and tier setting, with its 95% interval (first request after idle out)."""
    use = requests.filter((pl.col("status") == "ok") & ~pl.col("after_idle") & pl.col("ttft_s").is_not_null())
    rows: list[dict[str, Any]] = []
    for (doc, tier, ws), grp in use.group_by(["doc_tokens", "tier", "working_set"], maintain_order=True):
        ttft = grp["ttft_s"].to_list()
        ci = mean_ci(ttft, seed=len(rows))
        rows.append(
            {
                "doc_tokens": doc,
                "tier": tier,
                "working_set": ws,
                "ttft_ms": 1000 * sum(ttft) / len(ttft),
                "lo_ms": 1000 * ci[0] if ci else None,
                "hi_ms": 1000 * ci[1] if ci else None,
                "requests": len(ttft),
            }
        )
    return pl.DataFrame(rows)


def ttft_chart(requests: pl.DataFrame, ttft: pl.DataFrame) -> alt.TopLevelMixin:
    """Left: mean TTFT against working set, both settings (95% CIs). Right: TTFT per hit class (GPU hit, CPU hit, miss)
    and prompt length, with the tier, where the crossover shows."""
    title = "Time to first token, without and with a CPU tier"
    per = point_ttft(requests) if requests.height else pl.DataFrame()
    if not per.height:
        return note("No KV-overflow request with a TTFT in the tier lifetimes", title)
    per = _facet_label(per)
    x, color = _x(per), _tier_color()
    y = alt.Y("ttft_ms:Q", title="mean TTFT (ms)")
    tips = [
        _tip("tier:N", "GPU pool"),
        _tip("prompts:N", "prompts"),
        _tip("working_set:Q", "working set / GPU pool", ".3g"),
        _tip("ttft_ms:Q", "mean TTFT (ms)", ".1f"),
        _tip("lo_ms:Q", "95% CI low", ".1f"),
        _tip("hi_ms:Q", "95% CI high", ".1f"),
        _tip("requests:Q", "requests"),
    ]
    shape = alt.Shape("prompts:N", title="prompts", sort=in_order(per, "prompts", "doc_tokens"))
    left = alt.layer(
        alt.Chart(per).mark_line().encode(x=x, y=y, color=color, detail="prompts:N"),
        alt.Chart(per.filter(pl.col("lo_ms").is_not_null()))
        .mark_errorbar(ticks=True)
        .encode(x=x, y=alt.Y("lo_ms:Q", title="mean TTFT (ms)"), y2="hi_ms:Q", color=color),
        alt.Chart(per).mark_point(filled=True, size=70, opacity=1).encode(x=x, y=y, color=color, shape=shape, tooltip=tips),
    ).properties(width=330, height=240, title="per working set")
    if not ttft.height:
        return left.properties(title=title)
    cls = _facet_label(ttft.filter(pl.col("tier_on"))).with_columns(
        (pl.col("mean_ttft_s") * 1000).alias("ttft_ms"),
        (pl.col("ttft_ci_lo_s") * 1000).alias("lo_ms"),
        (pl.col("ttft_ci_hi_s") * 1000).alias("hi_ms"),
    )
    present = [c for c in HIT_CLASSES if c in set(cls["hit_class"].to_list())]
    ccolor = alt.Color(
        "hit_class:N",
        title="served as",
        sort=present,
        scale=alt.Scale(domain=present, range=[CLASS_COLORS[HIT_CLASSES.index(c)] for c in present]),
    )
    xdoc = alt.X("prompts:N", title=None, sort=in_order(cls, "prompts", "doc_tokens"), axis=alt.Axis(labelAngle=0))
    ctips = [
        _tip("prompts:N", "prompts"),
        _tip("hit_class:N", "served as"),
        _tip("ttft_ms:Q", "mean TTFT (ms)", ".1f"),
        _tip("lo_ms:Q", "95% CI low", ".1f"),
        _tip("hi_ms:Q", "95% CI high", ".1f"),
        _tip("requests:Q", "requests"),
        _tip("cached_share:Q", "share of the prompt cached", ".0%"),
    ]
    offset = alt.XOffset("hit_class:N", sort=present, scale=alt.Scale(domain=present))
    right = alt.layer(
        alt.Chart(cls)
        .mark_bar(opacity=0.8)
        .encode(x=xdoc, xOffset=offset, y=alt.Y("ttft_ms:Q", title="mean TTFT (ms)"), color=ccolor, tooltip=ctips),
        alt.Chart(cls.filter(pl.col("lo_ms").is_not_null()))
        .mark_errorbar(ticks=True, color="black")
        .encode(x=xdoc, xOffset=offset, y=alt.Y("lo_ms:Q", title="mean TTFT (ms)"), y2="hi_ms:Q"),
    ).properties(width=260, height=240, title="with the tier, by where the prefix came from")
    return (
        alt.hconcat(left, right)
        .resolve_scale(color="independent", shape="independent")
        .properties(
            title=alt.Title(
                title,
                subtitle=[
                    "left: mean TTFT of each working set (95% CI; the first request after each reset left out); right: the tier's "
                    "lifetime, requests by where their prefix came from.",
                    "A CPU hit beats recomputing where its bar is below the miss bar of the same prompts.",
                ],
                subtitleColor="#444444",
            )
        )
    )


def draw_offload_charts(requests: pl.DataFrame, points: pl.DataFrame, ttft: pl.DataFrame, outdir: Path) -> list[Path]:
    """Both charts (OFFLOAD_CHART_NAMES), every format."""
    outdir.mkdir(parents=True, exist_ok=True)
    charts = {"hit_rate": hit_rate_chart(points), "ttft": ttft_chart(requests, ttft)}
    return [p for name in OFFLOAD_CHART_NAMES for p in save_chart(charts[name], outdir, f"offload_{name}")]
