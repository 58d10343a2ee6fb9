"""The design of experiment: interleaved server lifetimes, seeded point order, and what instances add to the floor."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from synthetic import write_run

from prefixbench import OFF, ON
from prefixbench.aggregate import load_meta, load_records, point_totals, speedups, summarize, with_confidence
from prefixbench.design import point_order, previous_slot, slot_order
from prefixbench.stats import cluster_ratio_ci


def test_lifetimes_alternate_in_a_counterbalanced_order():
    for seed in range(6):
        order = slot_order(3, seed)
        assert sorted(order) == sorted((m, i) for m in (OFF, ON) for i in (1, 2, 3))
        # ABBA: each pair has both settings, and the setting that opens a pair alternates
        assert [{order[2 * k][0], order[2 * k + 1][0]} for k in range(3)] == [{OFF, ON}] * 3
        assert order[0][0] != order[2][0] and order[2][0] == order[5][0]
    assert {slot_order(1, s)[0][0] for s in range(20)} == {OFF, ON}  # the seed decides who opens


def test_previous_slot_chains_the_order():
    order = slot_order(2, 7)
    assert previous_slot(*order[0], 2, 7) is None
    assert [previous_slot(*s, 2, 7) for s in order[1:]] == order[:-1]


def test_point_order_is_seeded_shared_by_both_settings_and_differs_between_instances():
    points = list(range(12))
    assert point_order(points, 7, 1) == point_order(points, 7, 1)
    assert sorted(point_order(points, 7, 1)) == points
    assert point_order(points, 7, 1) != point_order(points, 7, 2)


def test_two_stage_bootstrap_widens_when_lifetimes_disagree():
    rng = np.random.default_rng(1)
    on = rng.normal(1.0, 0.02, 80)
    on_clusters = [i // 4 for i in range(80)]
    off = np.concatenate([rng.normal(1.0, 0.02, 40), rng.normal(1.3, 0.02, 40)])  # two lifetimes, 30% apart
    off_clusters = [i // 4 for i in range(80)]
    flat = cluster_ratio_ci(off, off_clusters, on, on_clusters)
    staged = cluster_ratio_ci(off, off_clusters, on, on_clusters, off_groups=[i // 40 for i in range(80)])
    assert flat and staged
    assert (staged[1] - staged[0]) > 2 * (flat[1] - flat[0])
    assert staged[0] < 1.05 and staged[1] > 1.25  # both lifetimes' levels are plausible


def test_meta_of_several_lifetimes_adds_up(tmp_path):
    recs, metas = write_run(tmp_path, instances=2, n=8)
    meta = load_meta(metas)
    totals = point_totals(meta)
    assert meta.height == 2 * totals.height
    row = totals.filter((pl.col("mode") == ON) & (pl.col("regime") == "large") & (pl.col("reuse_pct") == 100)).row(0, named=True)
    assert row["wall_s"] == 4.0 and row["requests_sent"] == 16 and row["instances"] == 2
    assert row["measured_hit_rate"] == pytest.approx(7 * 1024 / (8 * (1024 + 12)))
    summary = summarize(load_records(recs), meta)
    assert summary.height == totals.height and (summary["requests_ok"] == 16).all()


def _floor(tmp_path, **kw):
    recs, metas = write_run(tmp_path, reuses=(100, 0), concs=(1,), n=24, jitter=0.05, **kw)
    records = load_records(recs)
    return with_confidence(speedups(summarize(records, load_meta(metas))), records)


def test_one_lifetime_leaves_the_instance_controls_empty(tmp_path):
    sp = _floor(tmp_path)
    assert sp["inst_off_ttft_ratio"].is_null().all()
    assert (sp["floor_ttft_lo"] == sp["aa_ttft_lo"]).all()


def test_a_slow_lifetime_widens_the_floor_and_blocks_claims_inside_it(tmp_path):
    calm = _floor(tmp_path / "calm", instances=2)
    slow = _floor(tmp_path / "slow", instances=2, instance_speed={2: 1.6})
    row_calm = calm.row(0, named=True)
    row_slow = slow.row(0, named=True)
    assert row_calm["inst_off_ttft_lo"] < 1 < row_calm["inst_off_ttft_hi"]  # identical lifetimes: A/A holds
    assert row_slow["inst_off_ttft_hi"] < 0.8  # lifetime 1 over lifetime 2: clearly faster
    assert row_slow["floor_ttft_lo"] < row_calm["floor_ttft_lo"]


def test_server_infos_list_the_lifetimes_in_run_order_then_the_small_kv_ones():
    """One list serves the DAG's chain and scripts/device_sweep.sh: main lifetimes as slot_order runs them, then
    the small-KV lifetimes in the order the first pair used."""
    from prefixbench.design import kv_order, server_infos, slot_order

    slots = slot_order(2, 7)
    infos = server_infos(slots, kv_order(slots))
    assert infos[:4] == [f"results/raw/{m}/i{i}/server.json" for m, i in slots]
    assert infos[4:] == [f"results/raw/{m}/kv/server.json" for m, _ in slots[:2]]
    assert server_infos(slots, []) == infos[:4]


def test_requests_of_a_single_lifetime_leave_the_pooled_instance_control_alone(tmp_path):
    """A small-KV sweep runs one lifetime per setting: its requests cannot say how lifetimes differ."""
    from prefixbench.aggregate import aa_floor, with_clusters

    recs, _ = write_run(tmp_path, reuses=(100, 0), concs=(1,), n=24, jitter=0.05, instances=2, instance_speed={2: 1.6})
    records = with_clusters(load_records(recs).filter(pl.col("in_window")))
    single = records.filter(pl.col("instance") == 1).with_columns(pl.lit("overflow_ws50").alias("regime"))
    pooled = aa_floor(records).filter(pl.col("regime") == "*").row(0, named=True)
    with_single = aa_floor(pl.concat([records, single])).filter(pl.col("regime") == "*").row(0, named=True)
    for k in ("inst_off_ttft_ratio", "inst_off_ttft_lo", "inst_off_ttft_hi"):
        assert with_single[k] == pytest.approx(pooled[k], rel=0.05)
    assert pooled["inst_off_ttft_hi"] < 0.8  # the slow second lifetime is seen


def test_a_points_file_names_come_from_one_function():
    """The stem `c{c}` / `rate{q:g}` was written in the rules and again in measure.Point.label; now both call
    design.point_stem, and the rules' paths come from design.point_path."""
    from pathlib import Path

    from prefixbench.design import KV_LIFETIME, lifetime_name, point_path, point_stem, server_info
    from prefixbench.measure import Point

    assert point_stem(4, 0.0) == "c4" and point_stem(0, 2.5) == "rate2.5" and point_stem(0, 8.0) == "rate8"
    for conc, rate in [(4, 0.0), (0, 2.5)]:
        assert Point("r", 100, conc, Path("p"), Path("r"), Path("m"), rate).label == point_stem(conc, rate)
    assert point_path(OFF, lifetime_name(2), ("large", 50, 4, 0.0), "jsonl") == f"results/raw/{OFF}/i2/large/reuse50_c4.jsonl"
    assert point_path("{mode}", lifetime_name("{instance}"), ("t", 100, 0, 0.5), "meta.json") == (
        "results/raw/{mode}/i{instance}/t/reuse100_rate0.5.meta.json"
    )
    assert server_info(ON, KV_LIFETIME) == f"results/raw/{ON}/kv/server.json"


def test_lifetime_points_put_each_shape_where_its_kind_runs():
    """The rules' POINTS and KV_POINTS: regimes at every reuse level and load (closed loop, then open loop), then each
    shape at its kind's loads (a trace open loop at its own rate), kv_overflow in the small-KV lifetimes."""
    import yaml
    from helpers import ROOT

    from prefixbench.config import regimes, shapes
    from prefixbench.design import lifetime_points

    config = yaml.safe_load((ROOT / "config/cpu-shapes.yaml").read_text())
    main, small = lifetime_points(regimes(config), shapes(config), [1, 4], [2.0])
    first = next(iter(config["regimes"]))
    assert main[:6] == [(first, r, c, q) for r in (100, 0) for c, q in ((1, 0.0), (4, 0.0), (0, 2.0))]
    assert ("chat", 100, 1, 0.0) in main and ("chat", 100, 4, 0.0) in main
    assert [p for p in main if p[0] == "trace"] == [("trace", 100, 0, 0.25)]  # open loop at the trace's own rate
    assert [p[0] for p in small] == [f"overflow_ws{w}" for w in (50, 100, 150, 200, 300)]
    assert all(c == 1 and q == 0.0 for _, _, c, q in small) and not any(p[0].startswith("overflow") for p in main)
