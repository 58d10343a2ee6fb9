"""contrasts.csv: every contrast with the claim rule's verdict (prefixbench.verdicts)."""

from __future__ import annotations

import itertools
import json

import polars as pl
import pytest
from helpers import ROOT

from prefixbench.findings.claims import (
    KINDS,
    NO_INTERVAL_LIFETIMES,
    NO_INTERVAL_PASSES,
    NO_INTERVAL_ROUNDS,
    helped,
    hurt,
    interval_gap,
    judge,
    verdict,
)
from prefixbench.verdicts import COLUMNS, ONE_DEPLOYMENT, contrast_rows, read_contrasts

SMOL = ROOT / "docs/results/h200-2026-12-01-paired-smollm2"
OLD = ROOT / "docs/results/h200-2026-11-28b/smollm2-135m"
# The interface other parts of the project read (CONTRASTS.md): these names may not change.
INTERFACE = [
    "family",
    "regime",
    "shape",
    "reuse_pct",
    "concurrency",
    "request_rate",
    "metric",
    "design",
    "baseline",
    "treated",
    "unit",
    "ratio",
    "lo",
    "hi",
    "mde_pct",
    "n",
    "n_unit",
    "verdict",
    "reason",
    "label",
]


def tables(run=SMOL) -> tuple[pl.DataFrame, pl.DataFrame]:
    return pl.read_csv(run / "summary.csv", infer_schema_length=None), pl.read_csv(run / "speedup.csv", infer_schema_length=None)


def one(df: pl.DataFrame, **where) -> dict:
    rows = df.filter(*(pl.col(k) == v for k, v in where.items()))
    assert rows.height == 1, rows
    return rows.row(0, named=True)


@pytest.mark.parametrize(
    "ratio, ci, floor, bound, mde, failed",
    [
        (None, None, None, None, None, None),
        (1.5, (1.4, 1.6), None, None, 8.0, None),
        (1.5, (1.4, 1.6), None, None, None, "a control failed"),
        (1.5, None, None, None, None, None),
        (1.02, (0.97, 1.08), None, None, 7.5, None),
        (1.02, (0.97, 1.08), None, None, None, None),
        (1.1, (1.05, 1.15), (0.9, 1.2), None, None, None),
        (0.9, (0.85, 0.95), (0.9, 1.2), None, None, None),
        (1.5, (1.4, 1.6), (0.9, 1.2), None, None, None),
        (0.7, (0.6, 0.8), (0.9, 1.2), None, None, None),
        (3.0, (2.5, 3.5), None, (0.5, 2.0), None, None),
        (1.5, (1.4, 1.6), None, (0.5, 2.0), None, None),
    ],
)
def test_verdict_kind_follows_its_sentence(ratio, ci, floor, bound, mde, failed):
    """Each branch of the claim rule (claims.judge) gives the word its sentence says, and claims.verdict is that
    sentence."""
    v = judge(ratio, ci=ci, floor=floor, hit_bound=bound, mde_pct=mde, failed=failed)
    sentence = verdict(ratio, ci=ci, floor=floor, hit_bound=bound, mde_pct=mde, failed=failed)
    assert v.words == sentence
    expected = (
        "not measured"
        if sentence == "not measured"
        else "faster"
        if " faster (" in sentence
        else "slower"
        if " slower (" in sentence
        else "no difference"
        if sentence.startswith(("no difference larger", "no measurable difference"))
        else "not claimed"
    )
    assert v.kind == expected and v.kind in KINDS, (sentence, v.reason)
    if mde is not None and v.kind == "no difference":
        assert v.reason == f"no difference larger than {mde:.0f}%"


def test_helped_and_hurt_are_the_rule():
    """On rows, helped/hurt are faster/slower beyond noise: the interval excludes 1, clears the A/A floor on its side,
    and (a gain) does not lie wholly above what the hit rate can explain (here at most 2x)."""
    grid = itertools.product([(0.7, 0.9), (0.95, 1.05), (1.1, 1.5), (1.21, 1.4), (2.5, 3.5)], [None, (0.9, 1.2)])
    for (lo, hi), floor in grid:
        ratio = (lo + hi) / 2
        row = {
            "ttft_speedup": ratio,
            "ttft_speedup_lo": lo,
            "ttft_speedup_hi": hi,
            "floor_ttft_lo": floor[0] if floor else None,
            "floor_ttft_hi": floor[1] if floor else None,
            "window_hit_rate_on": 0.5,
            "request_rate": 0.0,
        }
        assert helped(row) == (lo > (floor[1] if floor else 1) and lo <= 2.0), row
        assert hurt(row) == (hi < (floor[0] if floor else 1)), row
        assert helped(row | {"design_failed": "the control failed"}) is False


def test_published_paired_run():
    """The H200 SmolLM2 run: the paired 100%-reuse c=1 contrast is claimed, with its interval and MDE."""
    df = read_contrasts(SMOL / "summary.csv", SMOL / "speedup.csv")
    assert df.columns[: len(INTERFACE)] == INTERFACE
    r = one(df, family="cache_effect", metric="ttft", reuse_pct=100, concurrency=1)
    assert r["design"] == "paired" and r["verdict"] == "faster"
    assert (round(r["ratio"], 2), round(r["lo"], 2), round(r["hi"], 2), round(r["mde_pct"], 1)) == (1.52, 1.44, 1.61, 8.7)
    assert (r["n"], r["n_unit"], r["unit"]) == (25, "pairs", "ms")
    assert r["baseline"] == pytest.approx(25.873) and r["treated"] == pytest.approx(16.858)
    assert r["label"] == "large 1024 tok · 100% reuse · c=1"
    # its 0%-reuse control (both arms miss) found nothing, so the design held
    ctl = one(df, family="control", design="paired", concurrency=1)
    assert ctl["verdict"] == "no difference" and ctl["reason"] == "no difference larger than 7%"
    # the flag cost is oriented as every other effect: on/off TTFT 0.72 reads 1/0.72, and one lifetime gives no interval
    cost = one(df, family="flag_cost", metric="ttft", concurrency=1)
    assert cost["ratio"] == pytest.approx(1 / 0.720998) and cost["lo"] is None
    assert (cost["verdict"], cost["n"], cost["n_unit"]) == ("not claimed", 1, "lifetime pairs")
    # the E2E ratio across lifetimes lies inside the run's A/A floor: shown, not claimed
    e2e = one(df, family="cache_effect", metric="e2e", concurrency=1)
    assert e2e["design"] == "lifetimes" and e2e["verdict"] == "not claimed" and "A/A" in e2e["reason"]
    assert set(df["verdict"]) <= {"faster", "slower", "no difference", "not claimed", "not measured"}
    assert set(df["family"]) == {"cache_effect", "throughput", "flag_cost", "control"}


def test_no_interval_says_its_cause():
    """A ratio without an interval names why: one lifetime pair (the flag cost's t interval needs two), one measured
    pass (a throughput interval pairs the slowest and fastest), else too few bootstrap rounds; the sentence says the
    same as the reason."""
    assert interval_gap() == NO_INTERVAL_ROUNDS
    assert interval_gap(lifetimes=1) == NO_INTERVAL_LIFETIMES and interval_gap(passes=1) == NO_INTERVAL_PASSES
    assert interval_gap(passes=3, lifetimes=2) == NO_INTERVAL_ROUNDS
    v = judge(1.4, no_interval=NO_INTERVAL_LIFETIMES)
    assert (v.kind, v.reason) == ("not claimed", f"no interval: {NO_INTERVAL_LIFETIMES}")
    assert v.words == f"1.40× off/on, not claimed (no interval: {NO_INTERVAL_LIFETIMES})"
    assert verdict(1.4) == "1.40× off/on, not claimed (no interval: too few independent rounds)"  # unchanged
    # The SmolLM2 run: one lifetime and one repeat per setting.
    df = read_contrasts(SMOL / "summary.csv", SMOL / "speedup.csv")
    cost = one(df, family="flag_cost", metric="ttft", concurrency=1)
    assert cost["reason"] == "no interval: one server lifetime per setting; benchmark.instances: 2 or more gives one"
    for r in df.filter((pl.col("metric") == "throughput") & pl.col("lo").is_null()).iter_rows(named=True):
        assert r["reason"] == f"no interval: {NO_INTERVAL_PASSES}", r["key"]
    # Two repeats give a throughput interval; a flag cost over two lifetime pairs would give one too.
    summary, sp = tables()
    two = summary.with_columns(
        pl.lit(2).alias("repeats_measured"), pl.col("tok_s").alias("tok_s_lo"), pl.col("tok_s").alias("tok_s_hi")
    )
    tp = one(contrast_rows(two, sp), family="throughput", concurrency=1)
    assert tp["lo"] is not None and "no interval" not in tp["reason"]


def test_flag_cost_not_measured_on_one_deployment(tmp_path):
    """A run whose cache off was forced misses on the cache-on deployment (its server.json files say so) never had
    caching off: every flag-cost row reads not measured, with no number, and the other families are untouched."""
    infos = []
    for mode, salted in (("no_prefix_cache", True), ("with_prefix_cache", False)):
        path = tmp_path / f"{mode}.json"
        path.write_text(json.dumps({"mode": mode, "endpoint": {"salt_every_request": salted}}))
        infos.append(path)
    plain = read_contrasts(SMOL / "summary.csv", SMOL / "speedup.csv")
    df = read_contrasts(SMOL / "summary.csv", SMOL / "speedup.csv", None, infos)
    cost = df.filter(pl.col("family") == "flag_cost")
    assert cost.height == plain.filter(pl.col("family") == "flag_cost").height == 4
    assert set(cost["verdict"]) == {"not measured"} and set(cost["reason"]) == {ONE_DEPLOYMENT}
    assert ONE_DEPLOYMENT == "one deployment: cache off was forced misses on the cache-on server"
    assert cost["ratio"].null_count() == cost["baseline"].null_count() == cost.height
    assert set(plain.filter(pl.col("family") == "flag_cost")["verdict"]) == {"not claimed"}  # two deployments: judged
    rest = pl.col("family") != "flag_cost"
    assert df.filter(rest).equals(plain.filter(rest))


def test_failed_control_claims_nothing_of_its_level():
    """A 0%-reuse paired control whose interval excludes 1 fails its regime's design at that concurrency."""
    summary, sp = tables()
    bad = sp.with_columns(
        pl.when(pl.col("reuse_pct") == 0).then(1.3).otherwise(pl.col("paired_lo")).alias("paired_lo"),
        pl.when(pl.col("reuse_pct") == 0).then(1.6).otherwise(pl.col("paired_hi")).alias("paired_hi"),
    )
    df = contrast_rows(summary, bad)
    r = one(df, family="cache_effect", metric="ttft", reuse_pct=100, concurrency=1)
    assert r["verdict"] == "not claimed" and "control" in r["reason"]
    ctl = one(df, family="control", design="paired", concurrency=1)
    assert ctl["verdict"] == "faster" and "design failed" in ctl["reason"]


def test_unmeasured_point_says_why():
    summary, sp = tables()
    gone = sp.with_columns(
        pl.when(pl.col("reuse_pct") == 100).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("paired_ratio", "paired_lo", "paired_hi", "ttft_speedup", "ttft_speedup_lo", "ttft_speedup_hi")
    ).with_columns(
        pl.when(pl.col("reuse_pct") == 100).then(0).otherwise(pl.col("window_requests_on")).alias("window_requests_on")
    )
    r = one(contrast_rows(summary, gone), family="cache_effect", metric="ttft", reuse_pct=100, concurrency=16)
    assert r["verdict"] == "not measured" and "steady-state window" in r["reason"]


def test_lifetime_run_with_shapes():
    """A run from before the paired design: lifetime contrasts judged against the A/A floor, shapes as their own
    family (named by kind), and the CSV round-trips."""
    df = read_contrasts(OLD / "summary.csv", OLD / "speedup.csv")
    assert set(df["design"]) == {"lifetimes"}
    shapes = df.filter(pl.col("family") == "shape")
    assert shapes.height and shapes["shape"].null_count() == 0 and "pool_skewed" in shapes["regime"].to_list()
    assert df.filter(pl.col("family") == "cache_effect")["reuse_pct"].min() > 0
    r = one(df, family="cache_effect", metric="ttft", regime="medium", reuse_pct=100, concurrency=1)
    assert r["verdict"] == "not claimed" and r["reason"].startswith("not clear of the A/A noise floor")
    assert r["floor_lo"] is not None and r["mde_pct"] is not None  # an MDE from its interval where none was recorded


def test_csv_round_trip(tmp_path):
    df = read_contrasts(SMOL / "summary.csv", SMOL / "speedup.csv")
    df.write_csv(tmp_path / "c.csv")
    back = pl.read_csv(tmp_path / "c.csv", infer_schema_length=None)
    assert back.columns == COLUMNS and back.height == df.height


def test_shape_predictions_join():
    summary, sp = tables(OLD)
    points = pl.DataFrame(
        {
            "regime": ["pool_skewed"],
            "concurrency": [16],
            "request_rate": [0.0],
            "expected_hit_rate": [0.9],
            "predicted_hit_rate": [0.8],
        }
    )
    df = contrast_rows(summary, sp, points)
    pool = df.filter((pl.col("regime") == "pool_skewed") & (pl.col("family") == "shape"))
    got = dict(zip(pool["concurrency"].to_list(), pool["predicted_hit_rate"].to_list()))
    assert got[16] == 0.8 and all(v is None for c, v in got.items() if c != 16)
    assert (
        df.filter(pl.col("family") != "shape")["predicted_hit_rate"].null_count() == df.filter(pl.col("family") != "shape").height
    )


@pytest.mark.parametrize("run", [SMOL, OLD])
def test_keys_name_each_contrast_once(run):
    """compare matches two runs on `key`: one row per key, and no design in it (a paired and a lifetime run meet)."""
    df = read_contrasts(run / "summary.csv", run / "speedup.csv")
    assert df["key"].n_unique() == df.height
    assert "cache_effect/ttft/large/100/c1/point" in df["key"].to_list()
