"""Aggregation: the seed's columns first, the numbers right, failures counted and never hidden."""

from __future__ import annotations

import polars as pl
import pytest
from synthetic import write_run

from prefixbench.aggregate import SEED_COLUMNS, load_meta, load_records, speedups, summarize


@pytest.fixture
def summary(tmp_path):
    recs, metas = write_run(tmp_path, failed_at=("no_prefix_cache", "large", 100, 4))
    return summarize(load_records(recs), load_meta(metas))


def test_seed_columns_first_and_one_row_per_point(summary):
    assert summary.columns[:8] == SEED_COLUMNS
    assert summary.height == 2 * 2 * 2 * 2
    assert summary.select(["mode", "regime", "reuse_pct", "concurrency"]).is_unique().all()


def test_values(summary):
    row = summary.filter(
        (pl.col("mode") == "with_prefix_cache")
        & (pl.col("regime") == "large")
        & (pl.col("reuse_pct") == 100)
        & (pl.col("concurrency") == 1)
    ).row(0, named=True)
    # Latencies come from the window: at c=1 every request but the first after idle (here the cold one).
    assert row["mean_ttft_s"] == pytest.approx(0.05) and row["window_requests"] == 9
    assert row["mean_e2e_s"] == pytest.approx(0.05 + 0.16)
    assert row["mean_ttft_shared_s"] == pytest.approx((1.024 + 9 * 0.05) / 10)  # hit-rate views cover every request
    assert row["tok_s"] == pytest.approx(10 * 8 / 2.0)
    assert row["measured_hit_rate"] == pytest.approx(9 * 1024 / (10 * 1036))
    assert row["expected_hit_rate"] == pytest.approx(9 * 1024 / (10 * 1036))
    off = summary.filter(
        (pl.col("mode") == "no_prefix_cache")
        & (pl.col("regime") == "medium")
        & (pl.col("reuse_pct") == 50)
        & (pl.col("concurrency") == 4)
    ).row(0, named=True)
    assert off["mean_ttft_s"] == pytest.approx(0.512 * 1.3)
    assert off["expected_hit_rate"] == 0.0
    assert off["p95_e2e_s"] == pytest.approx(0.512 * 1.3 + 0.16)


def test_failures_counted_and_noted(summary):
    row = summary.filter(
        (pl.col("mode") == "no_prefix_cache")
        & (pl.col("regime") == "large")
        & (pl.col("reuse_pct") == 100)
        & (pl.col("concurrency") == 4)
    ).row(0, named=True)
    assert (row["requests_ok"], row["requests_failed"], row["requests_sent"]) == (9, 1, 10)
    assert row["error_rate"] == pytest.approx(0.1)
    assert row["notes"].startswith("large; reuse 100%")  # the seed table names the regime (or shape)
    assert "1 of 10 failed, means over ok only" in row["notes"]
    assert row["tok_s"] == pytest.approx(9 * 8 / 2.0)


def test_speedups(summary):
    sp = speedups(summary)
    row = sp.filter((pl.col("regime") == "large") & (pl.col("reuse_pct") == 100) & (pl.col("concurrency") == 1)).row(
        0, named=True
    )
    # The first request after idle (the cold one) is outside the c=1 window: mean on = 0.05 vs off 1.024
    assert row["ttft_speedup"] == pytest.approx(1.024 / 0.05)
    assert sp.height == 8


def test_no_records_is_an_error(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(ValueError, match="no request records"):
        load_records([tmp_path / "e.jsonl"])


def test_regime_mode_table_keeps_one_regime_and_setting():
    from prefixbench.aggregate import regime_mode_table

    summary = pl.DataFrame(
        {
            "mode": ["no_prefix_cache", "with_prefix_cache", "with_prefix_cache", "with_prefix_cache"],
            "regime": ["a", "a", "a", "b"],
            "reuse_pct": [100, 50, 100, 100],
            "concurrency": [1, 1, 1, 1],
            "request_rate": [0.0, 0.0, 0.0, 0.0],
            "mean_ttft_s": [1.0, 2.0, 3.0, 4.0],
            "unrelated": [0, 0, 0, 0],
        }
    )
    t = regime_mode_table(summary, "a", "with_prefix_cache")
    assert t["mean_ttft_s"].to_list() == [3.0, 2.0]  # reuse 100 first
    assert "unrelated" not in t.columns and "mode" not in t.columns
    dropped = regime_mode_table(summary, "c", "with_prefix_cache")  # a regime the time budget dropped whole
    assert dropped.is_empty() and dropped.columns == t.columns


def test_a_run_without_workload_shapes_writes_its_tables(tmp_path):
    """A config with no shapes (the GPU paired preset, cpu-thorough) died writing an empty shape_requests.csv: an
    empty frame still carried the records' nested per-token columns, which CSV cannot hold."""
    from synthetic import write_run

    from prefixbench.aggregate import write_summary

    recs, metas = write_run(tmp_path / "raw", n=8)
    out = {"shape_points_csv": tmp_path / "points.csv", "trace_csv": tmp_path / "trace.csv"}
    write_summary(recs, metas, tmp_path / "s.csv", tmp_path / "sp.csv", tmp_path / "req.csv", **out)
    assert (tmp_path / "req.csv").is_file() and pl.read_csv(tmp_path / "s.csv").height > 0
    assert all(p.is_file() and not p.read_text() for p in out.values())  # the report reads them as "no shapes"


def test_every_contrast_with_an_interval_states_its_mde(tmp_path):
    """Issue 20: summary.csv's mde_ttft_pct on every point with an interval, paired or across lifetimes."""
    from synthetic import write_run

    from prefixbench.aggregate import write_summary

    recs, metas = write_run(tmp_path / "raw", n=40, jitter=0.05, reuses=(100, 0))  # unpaired: across lifetimes
    write_summary(recs, metas, tmp_path / "s.csv", tmp_path / "sp.csv")
    sp = pl.read_csv(tmp_path / "sp.csv")
    with_ci = sp.filter(pl.col("ttft_speedup_lo").is_not_null())
    assert with_ci.height and with_ci["mde_ttft_pct"].is_not_null().all() and (with_ci["mde_ttft_pct"] > 0).all()
    s = pl.read_csv(tmp_path / "s.csv")
    assert s.filter(pl.col("regime") == "large")["mde_ttft_pct"].is_not_null().all()


def test_a_replicated_run_aggregates_its_primary_policy_as_one_server_would(tmp_path):
    """Behind a router the single-server tables read the primary policy's records only: the same bytes as a run whose
    records hold that policy alone (the other policies are the Across-replicas analysis's)."""
    import json

    from synthetic import POLICIES, write_replicated_run

    from prefixbench.aggregate import write_summary

    recs, metas, _ = write_replicated_run(tmp_path / "all")
    only = []
    for path in recs:
        mine = tmp_path / "primary" / path.relative_to(tmp_path / "all")
        mine.parent.mkdir(parents=True, exist_ok=True)
        lines = [x for x in path.read_text().splitlines() if json.loads(x)["policy"] == POLICIES[0]]
        mine.write_text("\n".join(lines) + "\n")
        only.append(mine)
    for name, files, policy in (("all", recs, POLICIES[0]), ("inferred", recs, None), ("primary", only, None)):
        write_summary(files, metas, tmp_path / f"{name}_summary.csv", tmp_path / f"{name}_speedup.csv", policy=policy)
    for table in ("summary", "speedup"):
        want = (tmp_path / f"primary_{table}.csv").read_text()
        assert (tmp_path / f"all_{table}.csv").read_text() == want
        assert (tmp_path / f"inferred_{table}.csv").read_text() == want  # the cache-off records name the primary
    summary = pl.read_csv(tmp_path / "all_summary.csv")
    assert summary.filter(pl.col("mode") == "with_prefix_cache")["requests_recorded"].to_list() == [48, 48]
