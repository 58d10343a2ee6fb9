"""Across replicas (issue 23): the cache model replayed per replica on hand-worked cases, the three hit rates, the
policies' contrasts, the simulator beside the measurement, and the section's sentences only where they hold."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest
from synthetic import POLICIES, write_replicated_run

from prefixbench import OFF, ON
from prefixbench.aggregate import EVERY_POLICY, load_records, primary_only, primary_policy, write_summary
from prefixbench.findings.replicas import NOT_MEASURED, NOT_RUN, replicas_section
from prefixbench.replicas_analysis import (
    PASS_KEYS,
    ReplicaTables,
    RouterRun,
    Simulator,
    load_point_hashes,
    read_passes,
    read_table,
    replica_contrasts,
    replica_points,
    replica_requests,
    router_run,
    routing_curve,
    routing_module,
    routing_sim,
    unlimited_blocks,
    within,
    write_replica_tables,
)
from prefixbench.results_file import Setup, build_results, validate
from prefixbench.shapes.results import arrival_starts, replayed

B = 4  # block size of the hand-worked cases: a 10-token prompt has 2 full blocks, both cacheable (8 tokens)
DOCS = {"A": ["a1", "a2"], "B": ["b1", "b2"], "C": ["c1", "c2"]}
RUN = RouterRun(("round_robin", "consistent_hash"), 2, {})


def hand_records(docs: str, policy: str = "round_robin", mode: str = ON, kv_blocks: int = 64, repeat: int = 0) -> pl.DataFrame:
    """One pass of 10-token prompts, one request at a time, routed round robin (request k to replica k % 2); each
    record's measured cached tokens are left 0 (the tests set them where they matter)."""
    rows = []
    for k, d in enumerate(docs):
        rows.append(
            {
                "mode": mode, "instance": 1, "regime": "pool", "reuse_pct": 100, "concurrency": 1, "request_rate": 0.0,
                "repeat": repeat, "policy": policy, "workload": "prefix_pool", "request_index": k, "request_id": f"{policy}-{k}",
                "replica": k % 2, "replica_unknown": None, "session_key": f"doc-{d}", "kv_blocks": kv_blocks,
                "status": "ok", "in_window": True, "arm": None, "start_s": float(k), "ttft_s": 0.01, "e2e_s": 0.5,
                "prompt_tokens": 10, "completion_tokens": 1, "cached_tokens": 0, "document": d,
            }
        )  # fmt: skip
    return pl.DataFrame(rows)


def hand_hashes(docs: str) -> dict[tuple, list[str]]:
    return {("pool", 100, k): DOCS[d] for k, d in enumerate(docs)}


def test_each_replica_is_its_own_cache_and_a_document_hits_only_on_its_own_replica():
    """Round robin over two replicas: A to 0, B to 1, A to 0 (hit: A lives there), A to 1 (miss: A lives on 0, though
    the traffic repeats it), B to 0 (miss), B to 1 (hit)."""
    docs = "ABAABB"
    req = replica_requests(hand_records(docs), hand_hashes(docs), B)
    assert req["replica"].to_list() == [0, 1, 0, 1, 0, 1]
    assert req["traffic_cached_tokens"].to_list() == [0, 0, 8, 8, 8, 8]  # one cache: every repeat hits
    assert req["kept_cached_tokens"].to_list() == [0, 0, 8, 0, 0, 8]  # a replica's cache: only its own repeats
    assert req["predicted_cached_tokens"].to_list() == [0, 0, 8, 0, 0, 8]  # room for all: delivered = kept
    assert req["unpredicted"].null_count() == req.height


def test_a_replica_too_small_for_two_documents_delivers_less_than_routing_kept():
    """kv_blocks 4 (3 usable, one 3-block request at a time): replica 0 gets A, B, A; B's request evicts A's blocks
    (the free queue's head), so the second A misses: kept 8, delivered 0. With room for both it hits."""
    docs = "AABBAB"  # replica 0: A, B, A; replica 1: A, B, B
    small = replica_requests(hand_records(docs, kv_blocks=4), hand_hashes(docs), B)
    assert small["kept_cached_tokens"].to_list() == [0, 0, 0, 0, 8, 8]
    assert small["predicted_cached_tokens"].to_list() == [0, 0, 0, 0, 0, 8]
    roomy = replica_requests(hand_records(docs, kv_blocks=64), hand_hashes(docs), B)
    assert roomy["predicted_cached_tokens"].to_list() == [0, 0, 0, 0, 8, 8]


def test_a_replica_replays_its_requests_in_the_order_it_received_them():
    """Two requests of one replica sent 1 ms apart share document A's first block (their second blocks differ) and
    overlap. The router swapped them (cache_aware tokenizes each on every worker first): the replica's log has the
    later-sent one first (replica_seq 0), so it computed a1 and the earlier-sent one hit it (4 tokens), as measured.
    Replayed in send order the model would say the opposite: the earlier-sent one computes, the later one hits."""
    recs = hand_records("AA").with_columns(
        pl.Series("start_s", [0.000, 0.001]),
        pl.lit(0).alias("replica"),
        pl.Series("replica_seq", [1, 0]),
        pl.Series("cached_tokens", [4, 0]),
    )
    h = {("pool", 100, 0): ["a1", "x2"], ("pool", 100, 1): ["a1", "y2"]}
    req = replica_requests(recs, h, B)
    assert req["predicted_cached_tokens"].to_list() == [4, 0] == req["cached_tokens"].to_list()
    assert req["kept_cached_tokens"].to_list() == [4, 0]  # the replica's own unlimited cache: the same order
    assert req["traffic_cached_tokens"].to_list() == [0, 4]  # one cache in front of the router: the send order
    assert req["replica_seq"].to_list() == [1, 0]
    sent = replica_requests(recs.drop("replica_seq"), h, B)  # no arrival order recorded: the send order
    assert sent["predicted_cached_tokens"].to_list() == [0, 4]


def test_arrival_starts_are_the_running_maximum_of_send_times_in_arrival_order():
    # Arrival order 1, 0, 2 (sent at 1 ms, 0 ms, 0.5 ms): none can reach the replica before the one received ahead of
    # it was sent; a row without a place keeps its send time and comes last.
    order, starts = arrival_starts([1, 0, 2, None], [0.000, 0.001, 0.0005, 0.3])
    assert order == [1, 0, 2, 3] and starts == [0.001, 0.001, 0.001, 0.3]
    assert arrival_starts([0, 1], [0.0, 0.2]) == ([0, 1], [0.0, 0.2])  # in send order: unchanged


def test_the_unlimited_size_replays_as_a_million_blocks_does():
    docs = "ABACABCA"
    recs = hand_records(docs).with_columns(pl.col("start_s") * 0.1)  # overlapping requests
    h = hand_hashes(docs)
    assert unlimited_blocks(recs, B) < 100
    assert replayed(recs, h, B, unlimited_blocks(recs, B), ("regime", "reuse_pct", "request_index")) == replayed(
        recs, h, B, 1 << 20, ("regime", "reuse_pct", "request_index")
    )


def test_a_request_without_a_known_replica_is_not_predicted_and_says_why():
    docs = "AAAA"
    recs = hand_records(docs).with_columns(
        pl.when(pl.col("request_index") == 3).then(None).otherwise(pl.col("replica")).alias("replica"),
        pl.when(pl.col("request_index") == 3).then(pl.lit("not in any replica's log")).otherwise(None).alias("replica_unknown"),
    )
    req = replica_requests(recs, hand_hashes(docs), B)
    last = req.row(3, named=True)
    assert last["predicted_cached_tokens"] is None and last["kept_cached_tokens"] is None
    assert last["unpredicted"] == "its replica is not known (not in any replica's log)"
    assert last["traffic_cached_tokens"] == 8  # the traffic still repeats it


def test_cache_off_predicts_nothing_but_the_traffic_still_offers_reuse():
    docs = "AA"
    req = replica_requests(hand_records(docs, mode=OFF), hand_hashes(docs), B)
    assert req["predicted_cached_tokens"].to_list() == [0, 0]
    assert req["traffic_cached_tokens"].to_list() == [0, 8]


def test_the_three_hit_rates_per_policy_and_point():
    """Round robin keeps half the traffic's reuse; consistent hash (by document) keeps all of it; measured as the
    cached tokens say, with an interval over two passes."""
    docs = "ABAABB"
    parts = []
    for repeat in (0, 1):
        rr = hand_records(docs, "round_robin", repeat=repeat).with_columns(
            pl.Series("cached_tokens", [0, 0, 8, 0, 0, 8 - 4 * repeat])
        )  # the second pass measures one hit short
        ch = hand_records(docs, "consistent_hash", repeat=repeat).with_columns(
            pl.Series("replica", [0 if d == "A" else 1 for d in docs]), pl.Series("cached_tokens", [0, 0, 8, 8, 8, 8])
        )
        parts += [rr, ch]
    req = replica_requests(pl.concat(parts), hand_hashes(docs), B)
    pts = replica_points(req, pl.DataFrame(), RUN)
    rr, ch = (pts.filter(pl.col("policy") == p).row(0, named=True) for p in RUN.policies)
    assert (rr["traffic_hit_rate"], rr["kept_hit_rate"], rr["predicted_hit_rate"]) == (32 / 60, 16 / 60, 16 / 60)
    assert rr["measured_hit_rate"] == pytest.approx((16 + 12) / 120)
    assert rr["measured_hit_lo"] < rr["measured_hit_rate"] < rr["measured_hit_hi"]  # two passes: an interval
    assert rr["exact"] == 12 - 1 and rr["predicted_requests"] == 12
    assert (ch["traffic_hit_rate"], ch["kept_hit_rate"], ch["measured_hit_rate"]) == (32 / 60, 32 / 60, 32 / 60)
    assert rr["requests_per_replica"] == "6/6" and rr["load_imbalance"] == 1.0
    assert ch["requests_per_replica"] == "6/6"
    pairs = replica_contrasts(req, pl.DataFrame(), RUN).row(0, named=True)
    assert (pairs["policy_a"], pairs["policy_b"], pairs["pairs"]) == ("round_robin", "consistent_hash", 2)
    assert pairs["hit_diff"] == pytest.approx(((16 - 32) / 60 + (12 - 32) / 60) / 2)


def test_only_the_primary_policy_reaches_the_single_server_analysis(tmp_path):
    recs, _, _ = write_replicated_run(tmp_path)
    every = load_records(recs, EVERY_POLICY)
    assert set(every["policy"].unique()) == set(POLICIES)
    assert primary_policy(every) == POLICIES[0]  # the cache-off lifetimes run it alone
    assert set(load_records(recs)["policy"].unique()) == {POLICIES[0]}
    assert set(load_records(recs, "round_robin")["policy"].unique()) == {"round_robin"}
    on = every.filter(pl.col("mode") == ON)
    with pytest.raises(ValueError, match="none named the primary"):
        primary_only(on)
    single = every.drop("policy")
    assert primary_only(single).height == single.height  # no router: every record kept
    unrouted = every.with_columns(pl.lit(None).alias("policy"))  # records of one server: policy null
    assert primary_policy(unrouted) is None and primary_only(unrouted).height == every.height


def test_router_run_reads_the_target_with_the_schemas_defaults():
    assert router_run({"replicas": 1, "python": "py"}) is None and router_run({"python": "py"}) is None
    target = {"replicas": 2, "python": "py", "router": {"policies": ["round_robin", "cache_aware"], "cache_threshold": 0.5}}
    run = router_run(target)
    assert run is not None and run.primary == "round_robin" and run.params["cache_threshold"] == 0.5
    default = router_run({"replicas": 4, "python": "py"})
    assert default is not None and default.primary == "cache_aware" and default.replicas == 4
    assert default.params["balance_abs_threshold"] == 64


# --- The policy simulator (prefixbench.routing) beside the measurement ---


def test_the_simulator_beside_the_measurement_round_robin_exactly():
    docs = "ABAABB"
    parts = [
        hand_records(docs, "round_robin", repeat=r).with_columns(pl.Series("cached_tokens", [0, 0, 8, 0, 0, 8])) for r in (0, 1)
    ]
    req = replica_requests(pl.concat(parts), hand_hashes(docs), B)
    run = RouterRun(("round_robin",), 2, {})
    pts = replica_points(req, pl.DataFrame(), run)
    sim = Simulator(hand_hashes(docs), B, run, routing_module())
    row = routing_sim(req, pts, pl.DataFrame(), sim).row(0, named=True)
    # Round robin is the router's exact rule (request k of the pass to replica k % 2): the simulated pass is the measured one.
    assert row["sim_kept_hit_rate"] == row["sim_predicted_hit_rate"] == pytest.approx(16 / 60)
    assert row["sim_requests_per_replica"] == "6/6"  # both passes, as the measured table counts
    assert row["predicted_within"] == "yes" and row["kept_within"] == "yes"  # a zero-width interval holds it exactly
    # The measured passes' arrival order belongs to the router's replicas, not the simulator's: it is not used there.
    # (Overlapping requests in a one-request cache, where the order decides which are placed at all.)
    tight = req.with_columns(pl.col("start_s") * 0.1, pl.lit(4).alias("kv_blocks"))
    reversed_seq = tight.with_columns((10 - pl.col("request_index")).alias("replica_seq"))
    assert routing_sim(reversed_seq, pts, pl.DataFrame(), sim).row(0, named=True) == routing_sim(
        tight, pts, pl.DataFrame(), sim
    ).row(0, named=True)
    assert replica_requests(reversed_seq, hand_hashes(docs), B)["predicted_cached_tokens"].to_list() != (
        replica_requests(tight, hand_hashes(docs), B)["predicted_cached_tokens"].to_list()
    )  # where the order is the replica's own, it decides
    # The router's worker order reversed (its GET /workers lists replica 1 first): request 0 goes to replica 1.
    passes = pl.DataFrame({c: [req[c][0]] * 2 for c in PASS_KEYS if c != "repeat"}).with_columns(
        pl.Series("repeat", [0, 1]), pl.lit("1/0").alias("worker_order")
    )
    swapped = routing_sim(req, pts, passes, sim).row(0, named=True)
    assert swapped["sim_kept_hit_rate"] == pytest.approx(16 / 60) and swapped["sim_requests_per_replica"] == "6/6"
    assert sim.assignments(req.filter(pl.col("repeat") == 0), "1/0") == [[1, 0, 1, 0, 1, 0]]
    assert routing_sim(req, pts, pl.DataFrame(), None).is_empty()  # no simulator: nothing beside


def test_within_says_yes_no_or_no_interval():
    assert within(0.5, 0.4, 0.6) == "yes" and within(0.7, 0.4, 0.6) == "no"
    assert within(0.5, None, None) == "no interval" and within(None, 0.4, 0.6) == "not simulated"


def test_the_curve_over_replica_counts_on_a_trace(tmp_path):
    trace = tmp_path / "t.jsonl.gz"
    rows = [
        {"timestamp": k * 10, "input_length": 1030, "output_length": 5, "hash_ids": [k % 3, 100 + k % 3, 200 + k]}
        for k in range(12)
    ]
    with gzip.open(trace, "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    run = RouterRun(("round_robin", "consistent_hash"), 2, {}, trace)
    curve = routing_curve(run, routing_module(), counts=(1, 2, 4))
    assert curve["source"].unique().to_list() == ["simulation"]
    at = {(r["policy"], r["replicas"]): r for r in curve.iter_rows(named=True)}
    # Three conversations, each repeated four times: 9 of 12 requests hit their first two blocks (1024 of 1030).
    assert at[("round_robin", 1)]["kept_hit_rate"] == pytest.approx(9 * 1024 / (12 * 1030))
    assert at[("round_robin", 1)]["traffic_hit_rate"] == at[("round_robin", 4)]["traffic_hit_rate"]
    assert at[("round_robin", 4)]["kept_hit_rate"] < at[("round_robin", 2)]["kept_hit_rate"]  # round robin splits them
    assert at[("consistent_hash", 4)]["kept_hit_rate"] == pytest.approx(9 * 1024 / (12 * 1030))  # by conversation: kept
    assert at[("round_robin", 4)]["kept_hit_rate"] == 0  # request k to k % 4, conversation k % 3: never together
    assert routing_curve(run, None).is_empty()


# --- The tables aggregation writes, the section's sentences, results.json ---


def synthetic_router(trace=None) -> RouterRun:
    """The synthetic run's router: its policies, 2 replicas, the schema's cache_aware thresholds; no trace curve
    unless asked (the whole Mooncake trace takes seconds)."""
    run = router_run({"replicas": 2, "python": "py", "router": {"policies": list(POLICIES)}}, trace)
    assert run is not None
    return run


def tables(tmp_path, routing=None, **kw) -> ReplicaTables:
    recs, metas, prompts = write_replicated_run(tmp_path / "raw", **kw)
    out = ReplicaTables(*(tmp_path / f"{n}.csv" for n in ("req", "points", "contrasts", "sim", "curve")))
    write_replica_tables(recs, metas, [prompts], 16, synthetic_router(), out, routing)
    return out


def section(out: ReplicaTables):
    return replicas_section(read_table(out.points), read_table(out.contrasts), read_table(out.sim), read_table(out.curve), {})


def test_predicted_equals_measured_for_every_request_of_the_synthetic_run(tmp_path):
    out = tables(tmp_path)
    req = read_table(out.requests)
    on = req.filter(pl.col("mode") == ON)
    assert on.height == 3 * 2 * 2 * 24 and (on["predicted_cached_tokens"] == on["cached_tokens"]).all()
    words = section(out).words
    assert "predicted every one of the 288 requests it could place exactly" in words[0]


def test_the_most_hits_with_the_slowest_first_token_is_said_only_when_it_holds(tmp_path):
    # cache_aware delivers the most hits at c=4 and is made slower there by a fixed 30 ms (its tokenize calls, say).
    slow = section(tables(tmp_path / "slow", policy_ttft_s={"cache_aware": 0.03}))
    said = [w for w in slow.words if "the policy with the most hits had the slowest first token" in w]
    assert len(said) == 1 and said[0].startswith("At pool c=4, ") and "`cache_aware` delivered 59%" in said[0]
    assert "slower than `round_robin`, 95% CI" in said[0] and "slower than `consistent_hash`, 95% CI" in said[0]
    # Without the 30 ms, cache_aware and consistent_hash differ by less than the MDE: no sentence either way.
    even = section(tables(tmp_path / "even"))
    assert not any("first token" in w for w in even.words)
    assert "`cache_aware` vs `consistent_hash` | 2 | 1.07×: no difference larger than 9%" in even.contrasts_table
    fast = section(tables(tmp_path / "fast", policy_ttft_s={"consistent_hash": 0.03}))
    assert not any("slowest first token" in w for w in fast.words)
    assert any("At pool c=4, the policy with the most hits had the fastest first token: `cache_aware`" in w for w in fast.words)
    # One pass per policy: no interval, so neither claim is made.
    one = section(tables(tmp_path / "one", repeats=1, policy_ttft_s={"cache_aware": 0.03}))
    assert not any("first token" in w for w in one.words)
    assert "no interval" in one.contrasts_table


def test_lost_reuse_is_named_where_it_is_lost(tmp_path):
    words = section(tables(tmp_path)).words
    lost = [w for w in words if "`round_robin` kept 56%" in w]
    assert lost and all("(the rest: repeats of a prefix the router sent to another replica" in w for w in lost)
    assert not any("`cache_aware` kept" in w for w in words)  # it kept all the traffic offered
    assert any("the replicas' KV capacity cost hits the routing had kept" in w for w in words)


def test_a_run_without_a_router_says_not_run_and_writes_empty_tables(tmp_path):
    out = ReplicaTables(*(tmp_path / f"{n}.csv" for n in ("req", "points", "contrasts", "sim", "curve")))
    write_replica_tables([], [], [], 16, None, out)
    assert all(p.read_text() == "" for p in (out.requests, out.points, out.contrasts, out.sim, out.curve))
    s = section(out)
    assert not s.ran and s.intro == NOT_RUN
    empty = pl.DataFrame()
    routed = replicas_section(empty, empty, empty, empty, {"policies": ["round_robin"], "version": "0.1.17"})
    assert not routed.ran and routed.intro == NOT_MEASURED  # a router, and nothing measured behind it: not "one server"


def test_the_simulator_rows_and_the_sentence_on_the_synthetic_run(tmp_path):
    out = tables(tmp_path, routing=routing_module())
    sim = read_table(out.sim)
    assert sim.height == 6 and set(sim["predicted_within"].unique()) <= {"yes", "no"}
    rr = sim.filter(pl.col("policy") == "round_robin").row(0, named=True)
    assert rr["predicted_within"] == "yes"  # the synthetic router's round robin is the real one's
    s = section(out)
    assert any(w.startswith("The policy simulator re-routed every measured pass at 2 replicas") for w in s.words)
    assert "`round_robin`" in s.sim_table


def test_results_json_carries_the_replicas_section_and_validates(tmp_path):
    out = tables(tmp_path, routing=routing_module())
    recs = sorted(p for p in (tmp_path / "raw").rglob("*.jsonl") if p.parent.name != "prompts")
    metas = sorted((tmp_path / "raw").rglob("*.meta.json"))
    write_summary(recs, metas, tmp_path / "summary.csv", tmp_path / "speedup.csv", policy=POLICIES[0])
    summary = pl.read_csv(tmp_path / "summary.csv")
    setup = Setup("cpu", {"served_name": "m", "path": "m", "source": "test"}, 16, 8, "float32", {"benchmark": {}})
    from prefixbench.verdicts import contrast_rows

    contrasts = contrast_rows(summary, pl.read_csv(tmp_path / "speedup.csv"))
    tabs = (read_table(out.points), read_table(out.contrasts), read_table(out.sim))
    result = build_results(setup, [], summary, pl.read_csv(tmp_path / "speedup.csv"), contrasts, None, tabs)
    validate(json.loads(json.dumps(result)))
    assert len(result["replicas"]["points"]) == 6 and result["replicas"]["points"][0]["requests_per_replica"] == [26, 22]
    assert result["replicas"]["points"][0]["ttft_mean_ms"] > 0
    assert "replicas" not in build_results(setup, [], summary, pl.read_csv(tmp_path / "speedup.csv"), contrasts)


def test_read_passes_takes_the_policy_passes_of_the_point_meta(tmp_path):
    _, metas, prompts = write_replicated_run(tmp_path)
    passes = read_passes(metas)
    assert passes.height == 2 * 2 * 1 + 2 * 2 * 3  # cache off: the primary per repeat; cache on: every policy
    assert set(passes["policy"].unique()) == set(POLICIES)
    assert passes.filter(pl.col("mode") == ON)["peak_kv"].null_count() == 0
    assert len(load_point_hashes([prompts])) == 24


# --- What the CPU run of config/cpu-replicas.yaml showed needed saying ---


def test_a_paired_pass_counts_both_arms_as_checked_predictions_but_only_the_hit_arm_in_the_rates():
    """A paired point sends each prompt twice, a hit and a salted miss: the model predicts both (the miss 0), so both
    count as exact predictions; the hit rates stand on the main arm alone."""
    docs = "AA"
    hit = hand_records(docs).with_columns(pl.lit("hit").alias("arm"), pl.Series("cached_tokens", [0, 8]))
    miss = hand_records(docs).with_columns(pl.lit("miss").alias("arm"), pl.lit(0).alias("replica"), pl.col("start_s") + 10)
    req = replica_requests(pl.concat([hit.with_columns(pl.lit(0).alias("replica")), miss]), hand_hashes(docs), B)
    assert req.filter(pl.col("arm") == "miss")["predicted_cached_tokens"].to_list() == [0, 0]  # salted: nothing to hit
    row = replica_points(req, pl.DataFrame(), RouterRun(("round_robin",), 2, {})).row(0, named=True)
    assert (row["exact"], row["predicted_requests"]) == (4, 4)
    assert row["prompt_tokens"] == 20 and row["measured_hit_rate"] == 8 / 20


def test_one_pass_per_policy_charts_from_the_csv_tables(tmp_path):
    """One pass: every interval column is empty and reads back from CSV as text; both charts still draw."""
    from prefixbench.charts_replicas import replicas_chart, routing_curve_chart

    out = tables(tmp_path, repeats=1)
    points = read_table(out.points)
    assert points["ttft_lo_s"].dtype == pl.String  # what the chart has to cope with
    spec = replicas_chart(points).to_dict()  # raised on arithmetic with a text column before
    rows = [r for d in spec["datasets"].values() for r in d if "measured_hit_lo" in r]
    assert rows and all(r["measured_hit_lo"] is None and isinstance(r["measured_hit_rate"], float) for r in rows)
    curve = pl.DataFrame(
        {"policy": ["round_robin"] * 2, "replicas": [1, 2], "kept_hit_rate": [0.5, 0.3], "traffic_hit_rate": [0.5, 0.5],
         "load_imbalance": [1.0, 1.0], "kept_hit_min": [None, None], "in_flight": [None, None]}
    )  # fmt: skip
    assert routing_curve_chart(curve, points).to_dict()["hconcat"]


def sim_case(sim_rate: float, sim_split: str, policy: str = "round_robin", seeds: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One policy at one point, one measured pass (no interval): measured 50% delivered and kept, split 6/6."""
    point = {"policy": policy, "regime": "pool", "workload": "prefix_pool", "reuse_pct": 100, "concurrency": 2,
             "request_rate": 0.0, "replicas": 2}  # fmt: skip
    points = pl.DataFrame([point | {"measured_hit_rate": 0.5, "kept_hit_rate": 0.5, "measured_hit_lo": None,
                                    "measured_hit_hi": None, "kept_hit_lo": None, "kept_hit_hi": None,
                                    "requests_per_replica": "6/6"}])  # fmt: skip
    sim = pl.DataFrame([point | {"seeds": seeds, "sim_predicted_hit_rate": sim_rate, "sim_kept_hit_rate": 0.5,
                                 "sim_requests_per_replica": sim_split, "predicted_within": "no interval",
                                 "kept_within": "no interval"}])  # fmt: skip
    return sim, points


def test_without_intervals_the_simulator_is_held_to_the_measured_rates_and_split():
    from prefixbench.findings.replicas import sim_words

    agree = sim_words(*sim_case(0.5, "6/6"), 2)
    assert "its delivered hit rate was equal to the measured one in all 1 without a measured interval" in agree
    assert "as the router did for 1 of 1." in agree and "different" not in agree and "approximation" not in agree
    off = sim_words(*sim_case(0.4, "12/0", "cache_aware"), 2)
    assert "equal to the measured one in 0 of 1 without a measured interval (one pass per policy) (different: " in off
    assert "`cache_aware` at pool c=2: 40% simulated, 50% measured" in off
    assert "for 0 of 1 (different: `cache_aware` at pool c=2: 12/0 simulated, 6/6 measured)" in off
    assert "`cache_aware` is simulated by a stated approximation" in off
    assert "the mean over the simulator's draws" in sim_words(*sim_case(0.5, "6/6", "random", seeds=5), 2)


def test_the_trace_curve_says_when_its_in_flight_model_left_nothing_to_balance():
    from prefixbench.findings.replicas import curve_words

    def curve(imbalance_at_4: float, in_flight: str | None) -> pl.DataFrame:
        return pl.DataFrame(
            {"workload": ["trace"] * 2, "requests": [9, 9], "policy": ["cache_aware"] * 2, "replicas": [1, 4],
             "seeds": [1, 1], "traffic_hit_rate": [0.4, 0.4], "kept_hit_rate": [0.4, 0.4],
             "load_imbalance": [1.0, imbalance_at_4], "in_flight": [in_flight] * 2}
        )  # fmt: skip

    said = curve_words(curve(4.0, "closed loop of 1"))
    assert "every request on one replica" in said and "simulated as a closed loop of 1, it never sees a load" in said
    assert "never sees a load" not in curve_words(curve(1.2, "closed loop of 1"))  # it balanced: nothing to explain
    assert "never sees a load" not in curve_words(curve(4.0, None))


def test_peak_kv_usage_per_replica_or_the_highest_of_any():
    from prefixbench.findings.replicas import peak_kv

    assert peak_kv({"peak_kv_per_replica": "0.1/0.2", "peak_kv_max": 0.2}) == "10%/20%"
    assert peak_kv({"peak_kv_per_replica": None, "peak_kv_max": 0.0138}) == "not recorded per replica (the highest of any: 1.4%)"
    assert peak_kv({}) == "not recorded"


def test_kept_it_all_only_where_the_routing_kept_every_hit_token():
    """A policy a hair below the traffic is not said to keep it all: it is named with its rate (the H200 run: 86.9%
    against 88.2%)."""
    from prefixbench.findings.replicas import split_words

    row = {"regime": "chat", "workload": "multi_turn", "reuse_pct": 100, "concurrency": 8, "request_rate": 0.0,
           "traffic_hit_rate": 0.882, "predicted_hit_rate": None}  # fmt: skip
    point = [{**row, "policy": "round_robin", "kept_hit_rate": 0.827}, {**row, "policy": "cache_aware", "kept_hit_rate": 0.882},
             {**row, "policy": "consistent_hash", "kept_hit_rate": 0.869}]  # fmt: skip
    words = split_words(point)[0]
    assert "`cache_aware` kept it all" in words and "`consistent_hash` kept 86.9%" in words
    assert "`consistent_hash` kept it all" not in words


def test_the_requests_the_model_missed_are_counted_by_direction_and_size():
    from prefixbench.findings.replicas import prediction_words

    pts = pl.DataFrame({"predicted_requests": [192, 480], "exact": [168, 480], "unattributed": [0, 0],
                        "measured_above": [24, 0], "measured_below": [0, 0], "max_diff_tokens": [16, 0]})  # fmt: skip
    words = prediction_words(pts)
    assert "predicted 648 of the 672 requests" in words and "all 24 measured above the prediction, by at most 16 tokens" in words
    assert "Of the other" not in prediction_words(pts.with_columns(pl.col("predicted_requests").alias("exact")))


def test_the_attribution_check_is_stated_from_the_counted_passes():
    from prefixbench.findings.replicas import prediction_words

    pts = pl.DataFrame({"predicted_requests": [12], "exact": [12], "unattributed": [0],
                        "attribution_checked_passes": [3], "attribution_matching_passes": [2]})  # fmt: skip
    assert "in 2 of 3 passes every replica's prefix-cache hit counter equalled" in prediction_words(pts)
    assert "checked against" not in prediction_words(pts.with_columns(pl.lit(0).alias("attribution_checked_passes")))


def test_a_time_interval_reaching_below_zero_shows_only_its_high_end():
    from prefixbench.findings.replicas import ms_ci

    assert ms_ci(-0.003, 0.256) == "up to 256 ms" and ms_ci(0.0901, 0.128) == "90.1–128 ms" and ms_ci(None, 1.0) == "no interval"
