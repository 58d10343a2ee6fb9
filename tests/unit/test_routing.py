"""The routing-policy simulator (prefixbench.routing) on hand-worked cases.

The router-facing constants below were read from the real router (vllm-router 0.1.17) on stub workers: its log prints
the key consistent_hash hashed ("Extracted hash key: ..."), and the cache_aware cases replay what it did
(/work/coord/ROUTER_FACTS.md; tests/unit/test_router_real_stub.py checks the exact policies request by request)."""

from __future__ import annotations

import random
import time
import zlib
from pathlib import Path

import pytest

from prefixbench import routing as R
from prefixbench.kvcache import Request, block_hashes, replay
from prefixbench.shapes.common import UNLIMITED_BLOCKS

ROUTER = {"cache_threshold": 0.3, "balance_abs_threshold": 64, "balance_rel_threshold": 1.5}
TRACE = Path(__file__).resolve().parents[2] / "resources" / "traces" / "mooncake" / "conversation_trace.jsonl.gz"


def words(*groups: tuple[str, int]) -> list[int]:
    """Token ids of a prompt made of `count` words `tag0 tag1 ...` per group (one token per word, as the stub)."""
    out = []
    for tag, count in groups:
        out += [zlib.crc32(f"{tag}{i}".encode()) % 50_000 for i in range(count)]
    return out


def req(key: object, ids: list[int], block_size: int = 1, session: str | None = None, at: float = 0.0, end=None):
    return R.RoutedRequest(key, tuple(block_hashes(ids, block_size)), len(ids), session, at, end)


# --- consistent_hash: the hash and the key, as the router computed them ---


def test_fbi_hash_matches_the_router():
    # the router keyed a 160-character prompt "h h h ... " as request_hash:9594ce369983b063 (its log)
    assert R.fbi_hash("h " * 80) == 0x9594CE369983B063
    assert R.hash_key({}, "h " * 80) == "request_hash:9594ce369983b063"


@pytest.mark.parametrize(
    ("headers", "text", "key"),
    [
        ({"X-Request-Id": "rid-only"}, "a", "header:x-request-id:rid-only"),
        ({"X-Session-ID": "s1", "X-Request-Id": "r"}, "a", "header:x-session-id:s1"),
        ({"X-User-ID": "bob", "X-Request-Id": "rid-3"}, "e", "header:x-user-id:bob"),
        ({"X-Correlation-ID": "corr", "X-Request-Id": "rid-4"}, "f", "header:x-correlation-id:corr"),
        ({"x-session-id": "", "X-Request-Id": "rid-5"}, "j", "header:x-request-id:rid-5"),
        ({}, "b", "request:b"),
        ({}, "g short", "request:g short"),
        ({}, "hello user: alice and more", "user:alice"),
        ({}, "the username: bob", "request:the username: bob"),  # only the first "user" is looked at
        ({}, 'x "session_id": "s9" y', "session:s9"),
        ({}, "user said hi user: carol", "request:user said hi user: carol"),
    ],
)
def test_hash_key_as_the_router_extracted_it(headers, text, key):
    assert R.hash_key(headers, text) == key


def test_hash_key_nested_session_params():
    assert R.hash_key({}, '{"session_params": {"session_id": "n1"}, "user": "u"}') == "session:n1"


def test_request_hash_key_falls_back_to_the_request_id():
    """We always send X-Request-Id: without X-Session-ID the router hashes the request id."""
    assert R.request_hash_key(R.RoutedRequest("id-7", (), 1, "sess")) == "header:x-session-id:sess"
    assert R.request_hash_key(R.RoutedRequest("id-7", (), 1, None)) == "header:x-request-id:id-7"


def test_ring_lookup_takes_the_first_point_at_or_after_the_key_and_wraps():
    h = R.fbi_hash("k")
    assert R.HashRing((h, h + 1), (0, 1)).lookup("k") == 0
    assert R.HashRing((h - 1, h + 1), (0, 1)).lookup("k") == 1
    assert R.HashRing((h - 2, h - 1), (1, 0)).lookup("k") == 1  # past the last point: the first


def test_ring_has_160_points_per_worker_and_a_collision_goes_to_the_later_worker(monkeypatch):
    ring = R.HashRing.build(["http://a:1", "http://b:2"], [0, 1])
    assert len(ring.points) == 2 * R.VIRTUAL_NODES and sorted(set(ring.owners)) == [0, 1]
    monkeypatch.setattr(R, "fbi_hash", lambda s: 7)  # every point collides
    assert R.HashRing.build(["http://a:1", "http://b:2"], [1, 0]).owners == (0,)
    assert R.HashRing.build(["http://a:1", "http://b:2"], [0, 1]).owners == (1,)


def test_consistent_hash_keeps_a_session_and_spreads_request_ids():
    urls = ["http://127.0.0.1:8301", "http://127.0.0.1:8302", "http://127.0.0.1:8303"]
    reqs = [R.RoutedRequest(f"r{i}", (), 1, "conv-1" if i % 2 else None) for i in range(200)]
    where = R.simulate(reqs, 3, "consistent_hash", worker_urls=urls)
    assert len({where[i] for i in range(1, 200, 2)}) == 1
    assert len({where[i] for i in range(0, 200, 2)}) == 3
    ring = R.HashRing.build(urls, [0, 1, 2])
    assert where[0] == ring.lookup("header:x-request-id:r0") and where[1] == ring.lookup("header:x-session-id:conv-1")


# --- round_robin ---


def test_round_robin_follows_the_router_order():
    reqs = [R.RoutedRequest(i, (), 1) for i in range(7)]
    assert R.simulate(reqs, 3, "round_robin", router_order=[2, 0, 1]) == [2, 0, 1, 2, 0, 1, 2]
    assert R.simulate(reqs, 3, "round_robin") == [0, 1, 2, 0, 1, 2, 0]


def test_router_order_of_maps_urls_to_replicas():
    urls = ["http://h:1", "http://h:2", "http://h:3"]
    assert R.router_order_of(urls, ["http://h:3/", "http://h:1", "http://h:2"]) == [2, 0, 1]
    with pytest.raises(ValueError, match="router lists"):
        R.router_order_of(urls, ["http://h:3", "http://h:1"])


def test_simulate_refuses_what_it_cannot_simulate():
    with pytest.raises(ValueError, match="no simulator for routing policy 'kv_aware'"):
        R.simulate([], 2, "kv_aware")
    with pytest.raises(ValueError, match="worker_urls"):
        R.simulate([], 2, "round_robin", worker_urls=["http://a"])
    with pytest.raises(ValueError, match="block_size"):
        R.simulate([req(0, words(("a", 4)))], 2, "cache_aware", **ROUTER)


# --- cache_aware: the router's decisions on stubs, replayed (word tokens, block_size 1 = token level) ---

A = words(("alpha", 10))
B = words(("one", 10))
C = words(("alpha", 5), ("uno", 5))
D = words(("alpha", 3), ("dos", 7))


def ca(reqs, n=2, order=None, **extra):
    return R.simulate(reqs, n, "cache_aware", router_order=order, block_size=1, **ROUTER | extra)


def test_cache_aware_at_concurrency_one_sends_everything_to_the_first_worker():
    """No load: misses go to the least loaded = the first in the router's order, and so do the hits."""
    reqs = [req(i, p) for i, p in enumerate([A, B, A, C, D, B])]
    assert ca(reqs, order=[1, 0]) == [1] * 6


def test_cache_aware_threshold_is_strict():
    """3 of 10 tokens matched is 0.3: not above the threshold, so the least loaded (r1 while r0 is busy)."""
    reqs = [req(0, A, at=0, end=10), req(1, D, at=1, end=2), req(2, C, at=3, end=4)]
    assert ca(reqs) == [0, 1, 0]  # D: 0.3 -> least loaded; C: 0.5 -> A's replica, busy or not


def test_cache_aware_a_longer_match_beats_a_lower_load():
    """10/10 on a busy replica wins over 5/10 on an idle one (the router did the same)."""
    p5 = words(("alpha", 5), ("o", 15))  # 5/20 = 0.25 against A: a miss, to the idle replica
    reqs = [req(0, A, at=0, end=1), req(1, words(("busy", 8)), at=2, end=9), req(2, p5, at=3, end=4), req(3, A, at=5, end=6)]
    assert ca(reqs) == [0, 0, 1, 0]


def test_cache_aware_equal_matches_go_to_the_least_loaded_then_the_first():
    p = words(("p", 10), ("a", 10))
    q = words(("p", 5), ("b", 15))  # 0.25 while p runs on r0: a miss, to r1
    tie = words(("p", 5), ("c", 5))  # 5 tokens on both
    busy = words(("x", 10))
    tie2 = words(("p", 5), ("e", 5))  # 5 tokens on both again (r0 learnt `tie`, not this)
    reqs = [
        req(0, p, at=0, end=2),
        req(1, q, at=1, end=2),
        req(2, tie, at=3, end=4),
        req(3, busy, at=5, end=9),
        req(4, tie2, at=6, end=7),
    ]
    assert ca(reqs) == [0, 1, 0, 0, 1]


def test_cache_aware_balances_load_past_both_thresholds():
    reqs = [req(0, A, at=0, end=9), req(1, A, at=1, end=9), req(2, A, at=2, end=9)]
    assert ca(reqs) == [0, 0, 0]
    assert ca(reqs, balance_abs_threshold=1) == [0, 0, 1]  # 2 vs 0 in flight: imbalanced, the full match is ignored


def test_cache_aware_closed_loop_concurrency_spreads_misses():
    reqs = [req(i, words((f"u{i}", 8))) for i in range(6)]
    assert ca(reqs, concurrency=2) == [0, 1, 0, 1, 0, 1]
    assert ca(reqs, concurrency=3, n=3) == [0, 1, 2, 0, 1, 2]


def test_cache_aware_without_token_ids_is_least_loaded_first():
    """No render endpoint (missing_tokens): the third request goes to the idle replica, not to B's."""
    reqs = [req(i, p) for i, p in enumerate([A, B, B])]
    assert ca(reqs, concurrency=2) == [0, 1, 1]
    assert ca(reqs, render=False, concurrency=2) == [0, 1, 0]


# --- random, power_of_two ---


def test_random_is_one_draw_per_seed_and_uniform():
    reqs = [R.RoutedRequest(i, (), 1) for i in range(4000)]
    a, b = R.simulate(reqs, 4, "random", seed=1), R.simulate(reqs, 4, "random", seed=2)
    assert a == R.simulate(reqs, 4, "random", seed=1) and a != b
    assert all(900 < c < 1100 for c in R.load(a, 4))


def test_power_of_two_takes_the_less_loaded_of_two():
    """Two replicas: the pair is always both, so with one request in flight the other replica wins."""
    reqs = [R.RoutedRequest(i, (), 1) for i in range(50)]
    where = R.simulate(reqs, 2, "power_of_two", concurrency=2, seed=3)
    assert all(x != y for x, y in zip(where, where[1:]))
    assert R.simulate(reqs, 1, "power_of_two") == [0] * 50


def test_expectation_reports_the_spread_over_seeds():
    reqs = [req(i, words((f"s{i % 40}", 40), (f"t{i}", 8)), block_size=16) for i in range(200)]
    got = R.expectation(reqs, 4, "random", 16, seeds=range(5))
    assert got["seeds"] == 5 and got["kept"]["min"] <= got["kept"]["mean"] <= got["kept"]["max"]
    assert got["kept"]["sd"] > 0 and got["traffic"]["sd"] == 0
    one = R.expectation(reqs, 4, "round_robin", 16)
    assert one["seeds"] == 1 and one["kept"]["sd"] == 0


# --- hit rates and load ---


def test_hit_rates_hand_worked():
    """Two identical 33-token prompts, 16-token blocks: the second hits 2 blocks (the last token is never counted)."""
    ids = list(range(33))
    reqs = [req(0, ids, 16), req(1, ids, 16)]
    assert R.hit_rates(reqs, [0, 0], 16) == {"traffic": 32 / 66, "kept": 32 / 66}
    assert R.hit_rates(reqs, [0, 1], 16) == {"traffic": 32 / 66, "kept": 0.0}
    assert R.replay_hits(reqs, [0, 1], 16) == ([0, 32], [0, 0])


def test_replay_hits_equal_kvcache_replay_unlimited_one_at_a_time():
    rng = random.Random(5)
    docs = [[rng.randrange(1000) for _ in range(rng.randrange(10, 80))] for _ in range(6)]
    prompts = [
        rng.choice(docs)[: rng.randrange(5, 80)] + [rng.randrange(1000) for _ in range(rng.randrange(0, 20))] for _ in range(120)
    ]
    reqs = [req(i, p, 8) for i, p in enumerate(prompts)]
    where = R.simulate(reqs, 3, "random", seed=4)
    traffic, kept = R.replay_hits(reqs, where, 8)

    def kv(subset):
        return replay(
            [Request(r.key, r.hashes, r.prompt_len, 4, 2.0 * i, 2.0 * i + 1) for i, r in enumerate(subset)], UNLIMITED_BLOCKS, 8
        )

    everyone = kv(reqs)
    assert traffic == [everyone[r.key] for r in reqs]
    per = {k: kv([r for r, w in zip(reqs, where) if w == k]) for k in range(3)}
    assert kept == [per[w][r.key] for r, w in zip(reqs, where)]
    assert sum(kept) < sum(traffic)


def test_load_and_imbalance():
    assert R.load([0, 2, 2, 1], 4) == [1, 1, 2, 0]
    assert R.imbalance([2, 2]) == 1.0 and R.imbalance([4, 0]) == 2.0 and R.imbalance([0, 0]) is None


# --- the trace ---


def test_trace_session_key_is_the_conversation_not_the_shared_first_block():
    rows = [
        {"timestamp": 0, "input_length": 1000, "output_length": 5, "hash_ids": [0, 1]},
        {"timestamp": 500, "input_length": 1500, "output_length": 5, "hash_ids": [0, 1, 2]},
        {"timestamp": 900, "input_length": 10, "output_length": 5, "hash_ids": []},
    ]
    reqs = R.trace_routed_requests(rows)
    assert [r.session_key for r in reqs] == ["trace-0-1", "trace-0-1"]
    assert reqs[1] == R.RoutedRequest(1, ("0", "1", "2"), 1500, "trace-0-1", 0.5)


def test_trace_curve_small():
    rows = [
        {"timestamp": 10 * i, "input_length": 2048, "output_length": 1, "hash_ids": [0, 1 + i % 7, 100 + i % 7, 200 + i]}
        for i in range(70)
    ]
    reqs = R.trace_routed_requests(rows)
    curve = R.trace_curve(reqs, replicas=(1, 4), seeds=range(3), **ROUTER)
    by = {(c["policy"], c["replicas"]): c for c in curve}
    assert {c["source"] for c in curve} == {"simulation"} and len(curve) == 8
    assert all(c["kept_mean"] == c["traffic_mean"] for c in curve if c["replicas"] == 1)
    assert by[("consistent_hash", 4)]["kept_mean"] > by[("round_robin", 4)]["kept_mean"]
    assert by[("random", 4)]["seeds"] == 3 and by[("round_robin", 4)]["seeds"] == 1


@pytest.mark.skipif(not TRACE.is_file(), reason="the vendored Mooncake trace is missing")
def test_whole_trace_over_64_replicas_in_seconds():
    """Every policy over the 12,031 trace requests and 64 replicas; the timing is printed (pytest -s), not asserted."""
    from prefixbench.shapes.trace import all_rows

    reqs = R.trace_routed_requests(all_rows(TRACE))
    assert len(reqs) == 12_031
    for policy in R.POLICIES:
        t0 = time.perf_counter()
        where = R.simulate(reqs, 64, policy, block_size=512, concurrency=32, **ROUTER)
        rates = R.hit_rates(reqs, where, 512)
        print(f"{policy}: 12,031 trace requests over 64 replicas in {time.perf_counter() - t0:.2f} s, {rates}")
        assert 0 < rates["kept"] <= rates["traffic"]
