"""The charts of a replicated run (issue 23), from aggregation's replica tables (prefixbench.replicas_analysis):

- `replicas`: per point and routing policy, the three hit rates side by side (in the traffic, kept by the routing,
  delivered as the cache model predicted) with the measured delivered rate and its 95% interval on them; mean TTFT
  with its interval, p50 and p90; and the requests each replica served.
- `routing_curve`: the policy simulator's hit rate against the replica count on the whole Mooncake trace (log x),
  titled as the simulation it is, with this run's measured points at its own replica count.

Registered in chart_specs (drawn only where the run has a router); charts.DRAW calls these.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from .shapes import SHAPES

RATE_WORDS = {
    "traffic_hit_rate": "in the traffic",
    "kept_hit_rate": "kept by the routing",
    "predicted_hit_rate": "delivered, predicted",
}
RATE_COLORS = ["#9e9e9e", "#6baed6", "#08519c"]
MEASURED = "delivered, measured (95% CI)"


def note(text: str, title: str) -> alt.Chart:
    """A chart that says why it has nothing to draw (a registered chart is always written)."""
    return (
        alt.Chart(pl.DataFrame({"t": [text]})).mark_text(size=14).encode(text="t:N").properties(width=460, height=60, title=title)
    )


# The tables' number columns: read back from CSV, a column empty in every row (no interval from one pass, no peak
# KV usage recorded) reads as text, and arithmetic or a quantitative axis on it fails.
NUMBERS = [f"{r}_hit_{k}" for r in ("traffic", "kept", "predicted", "measured") for k in ("rate", "lo", "hi")]
NUMBERS += ["ttft_mean_s", "ttft_lo_s", "ttft_hi_s", "ttft_p50_s", "ttft_p90_s", "prompt_tokens", "load_imbalance"]
NUMBERS += ["traffic_hit_rate", "kept_hit_min", "kept_hit_max", "request_rate"]


def as_numbers(df: pl.DataFrame) -> pl.DataFrame:
    """The number columns as floats, however the CSV reader typed them (NUMBERS)."""
    return df.with_columns(pl.col(c).cast(pl.Float64, strict=False) for c in dict.fromkeys(NUMBERS) if c in df.columns)


def point_label(points: pl.DataFrame) -> pl.DataFrame:
    """A `point` column naming each point as the report does: the regime or shape, a regime's reuse level, the load."""
    load = (
        pl.when(pl.col("request_rate") > 0)
        .then(pl.format("open loop {} req/s", pl.col("request_rate")))
        .otherwise(pl.format("c={}", pl.col("concurrency")))
    )
    shaped = pl.col("workload").is_in(list(SHAPES)) if "workload" in points.columns else pl.lit(False)
    name = (
        pl.when(shaped)
        .then(pl.format("{} {}", pl.col("regime"), load))
        .otherwise(pl.format("{} reuse {}% {}", pl.col("regime"), pl.col("reuse_pct"), load))
    )
    return points.with_columns(name.alias("point"))


def point_sort(df: pl.DataFrame) -> list[str]:
    return (
        df.sort(["regime", "reuse_pct", "request_rate", "concurrency"], descending=[False, True, False, False])["point"]
        .unique(maintain_order=True)
        .to_list()
    )


def hit_panel(points: pl.DataFrame, policies: list[str], rows: list[str]) -> alt.FacetChart:
    measured = ["measured_hit_rate", "measured_hit_lo", "measured_hit_hi"]
    long = points.unpivot(index=["point", "policy", *measured], on=list(RATE_WORDS), variable_name="rate", value_name="hit_rate")
    long = long.with_columns(pl.col("rate").replace_strict(RATE_WORDS).alias("rate"))
    x = alt.X("policy:N", sort=policies, title=None, axis=alt.Axis(labelAngle=-30))
    y = alt.Y("hit_rate:Q", title="prompt tokens from cache", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]))
    series = [*RATE_WORDS.values(), MEASURED]
    color = alt.Color(
        "rate:N",
        title="hit rate",
        sort=series,
        scale=alt.Scale(domain=series, range=[*RATE_COLORS, "black"]),
        legend=alt.Legend(orient="bottom", direction="vertical"),
    )
    slots = alt.Scale(domain=list(RATE_WORDS.values()))  # the three bars of a policy, left to right
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=x,
            xOffset=alt.XOffset("rate:N", scale=slots),
            y=y,
            color=color,
            tooltip=[alt.Tooltip("policy:N"), alt.Tooltip("rate:N"), alt.Tooltip("hit_rate:Q", format=".1%")],
        )
    )
    # One data set for the facet: the measured rate rides on the first rate's row of each policy (drawn once), and is
    # drawn on the predicted bar, the one it checks.
    first, predicted = list(RATE_WORDS.values())[0], RATE_WORDS["predicted_hit_rate"]
    dot = (
        alt.Chart()
        .transform_filter(alt.datum.rate == first)
        .transform_calculate(rate=f"'{MEASURED}'", slot=f"'{predicted}'")
        .encode(x=x, xOffset=alt.XOffset("slot:N", scale=slots), color=color)
    )
    layer = alt.layer(
        bars,
        dot.mark_rule().encode(y="measured_hit_lo:Q", y2="measured_hit_hi:Q"),
        dot.mark_point(filled=True, size=60, opacity=1).encode(
            y="measured_hit_rate:Q",
            tooltip=[
                alt.Tooltip("policy:N"),
                alt.Tooltip("measured_hit_rate:Q", title="measured", format=".1%"),
                alt.Tooltip("measured_hit_lo:Q", title="95% CI low", format=".1%"),
                alt.Tooltip("measured_hit_hi:Q", title="95% CI high", format=".1%"),
            ],
        ),
    )
    return layer.properties(width=200, height=170).facet(row=alt.Row("point:N", title=None, sort=rows), data=long)


def ttft_panel(points: pl.DataFrame, policies: list[str], rows: list[str]) -> alt.FacetChart:
    df = points.with_columns(
        *(
            (pl.col(c) * 1000).alias(c.removesuffix("_s") + "_ms")
            for c in ("ttft_mean_s", "ttft_lo_s", "ttft_hi_s", "ttft_p50_s", "ttft_p90_s")
        )
    )
    x = alt.X("policy:N", sort=policies, title=None, axis=alt.Axis(labelAngle=-30))
    base = alt.Chart(df).encode(x=x)
    tips = [alt.Tooltip("policy:N")] + [
        alt.Tooltip(f"{c}:Q", title=t, format=".1f")
        for c, t in (
            ("ttft_mean_ms", "mean (ms)"),
            ("ttft_lo_ms", "95% CI low"),
            ("ttft_hi_ms", "95% CI high"),
            ("ttft_p50_ms", "p50"),
            ("ttft_p90_ms", "p90"),
        )
    ]
    layer = alt.layer(
        base.mark_rule(color="#08519c").encode(y=alt.Y("ttft_lo_ms:Q", title="TTFT (ms)"), y2="ttft_hi_ms:Q"),
        base.mark_point(filled=True, size=70, color="#08519c").encode(y="ttft_mean_ms:Q", tooltip=tips),
        base.mark_tick(color="#777777", thickness=2, size=18).encode(y="ttft_p50_ms:Q", tooltip=tips),
        base.mark_tick(color="#d62728", thickness=2, size=18).encode(y="ttft_p90_ms:Q", tooltip=tips),
    )
    return (
        layer.properties(width=150, height=170)
        .facet(row=alt.Row("point:N", title=None, sort=rows))
        .resolve_scale(y="independent")
    )


def load_panel(points: pl.DataFrame, policies: list[str], rows: list[str]) -> alt.FacetChart:
    """The requests each replica served, stacked per policy (the router's split)."""
    per = points.select("point", "policy", pl.col("requests_per_replica").str.split("/").alias("n")).with_columns(
        pl.int_ranges(0, pl.col("n").list.len()).alias("replica")
    )
    per = per.explode("n", "replica").with_columns(
        pl.col("n").cast(pl.Int64).alias("requests"), pl.format("replica {}", pl.col("replica")).alias("replica")
    )
    chart = (
        alt.Chart(per)
        .mark_bar()
        .encode(
            x=alt.X("policy:N", sort=policies, title=None, axis=alt.Axis(labelAngle=-30)),
            y=alt.Y("requests:Q", title="requests served, per replica"),
            color=alt.Color("replica:N", title=None, legend=alt.Legend(orient="bottom", direction="vertical")),
            order=alt.Order("replica:N", sort="ascending"),
            tooltip=[alt.Tooltip("policy:N"), alt.Tooltip("replica:N"), alt.Tooltip("requests:Q")],
        )
    )
    return chart.properties(width=150, height=170).facet(row=alt.Row("point:N", title=None, sort=rows))


def replicas_chart(points: pl.DataFrame) -> alt.TopLevelMixin:
    """Per point and policy: the three hit rates with the measured one, TTFT with intervals, load per replica."""
    title = "Across replicas: hit rates, first-token latency and load per routing policy"
    if points.is_empty():
        return note("No replicated run: one server, no router", title)
    df = point_label(as_numbers(points))
    policies = df["policy"].unique(maintain_order=True).to_list()
    rows = point_sort(df)
    panels = alt.hconcat(hit_panel(df, policies, rows), ttft_panel(df, policies, rows), load_panel(df, policies, rows))
    return panels.resolve_scale(color="independent", shape="independent").properties(
        title=alt.Title(
            title,
            subtitle=[
                "left: hit rates (share of prompt tokens); black, on the predicted bar: the measured delivered rate, with its 95% CI over passes",
                "middle: mean TTFT with its 95% CI (blue), p50 (grey tick), p90 (red tick); right: requests each replica served",
            ],
            subtitleColor="#444444",
        )
    )


def routing_curve_chart(curve: pl.DataFrame, points: pl.DataFrame) -> alt.TopLevelMixin:
    """The simulator on the trace, per policy against replicas (log x): the hit rate each replica's own cache keeps,
    with the traffic's own reuse dashed and this run's measured kept hit rate per policy at its replica count (its own
    traffic); beside it, the load the routing puts on the busiest replica (a policy that keeps every hit by sending
    everything to one replica shows there)."""
    title = "Simulation: hit rate kept by each routing policy vs replica count (Mooncake trace)"
    if curve.is_empty():
        return note("The policy simulator did not run: no curve", title)
    curve, points = as_numbers(curve), as_numbers(points)
    policies = curve["policy"].unique(maintain_order=True).to_list()
    counts = sorted(set(curve["replicas"].to_list()))
    x = alt.X(
        "replicas:Q",
        title="replicas (log scale)",
        scale=alt.Scale(type="log", base=2, domain=[counts[0], counts[-1]]),
        axis=alt.Axis(values=counts, format="d"),
    )
    color = alt.Color("policy:N", sort=policies, title="policy", legend=alt.Legend(orient="bottom"))
    # Policies whose curves coincide stay apart: each its own dash and point shape.
    dash = alt.StrokeDash("policy:N", sort=policies, legend=None)
    shape = alt.Shape("policy:N", sort=policies, legend=None)
    tips = [
        alt.Tooltip("policy:N"),
        alt.Tooltip("replicas:Q"),
        alt.Tooltip("kept_hit_rate:Q", title="kept (simulated)", format=".1%"),
        alt.Tooltip("load_imbalance:Q", title="busiest / mean", format=".2f"),
    ]
    line = (
        alt.Chart(curve)
        .mark_line(point=alt.OverlayMarkDef(filled=True, size=50))
        .encode(x=x, color=color, strokeDash=dash, shape=shape, tooltip=tips)
    )
    y = alt.Y("kept_hit_rate:Q", title="prompt tokens kept as hits", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]))
    hits: list[alt.Chart] = [
        line.encode(y=y),
        alt.Chart(curve.head(1)).mark_rule(strokeDash=[4, 3], color="#555555").encode(y="traffic_hit_rate:Q"),
    ]
    subtitle = ["left: lines simulated on the whole trace, dashed grey the reuse the trace offers (one cache)"]
    if points.height:
        measured = points.group_by("policy", maintain_order=True).agg(
            pl.col("replicas").first(), (pl.col("kept_hit_rate") * pl.col("prompt_tokens")).sum() / pl.col("prompt_tokens").sum()
        )
        hits.append(
            alt.Chart(measured)
            .mark_point(shape="diamond", filled=True, size=140, stroke="black", opacity=1)
            .encode(x="replicas:Q", y="kept_hit_rate:Q", color=color, tooltip=[alt.Tooltip("policy:N"), alt.Tooltip("kept_hit_rate:Q", title="kept (measured, this run)", format=".1%")])
        )  # fmt: skip
        subtitle.append("diamonds: this run's measured kept hit rate at its replica count (its own traffic, not the trace)")
    subtitle.append("right: the busiest replica's requests over the mean (1 = even; N = all on one of N)")
    if "in_flight" in curve.columns:  # the trace has no end times: the in-flight load a balancing policy saw
        for policy, how in curve.select("policy", "in_flight").drop_nulls().unique(maintain_order=True).iter_rows():
            subtitle.append(f"{policy}: requests in flight simulated as a {how} (the trace gives no end times)")
    load = line.encode(
        y=alt.Y("load_imbalance:Q", title="busiest replica / mean (log scale)", scale=alt.Scale(type="log", base=2), axis=alt.Axis(format="~g"))
    )  # fmt: skip
    return alt.hconcat(alt.layer(*hits).properties(width=360, height=260), load.properties(width=260, height=260)).properties(
        title=alt.Title(title, subtitle=subtitle, subtitleColor="#444444")
    )
