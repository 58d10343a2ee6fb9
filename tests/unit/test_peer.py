"""The peer check (scripts/peer_compare.py): vLLM's own client's arguments, and a comparison that can fail."""

import math
import random
from pathlib import Path

import pytest

from prefixbench.peer import TOOLS, bench_serve_args, equivalence, level_verdict, peer_table, window_mean_ttft


def test_bench_serve_args_send_the_prompts_as_they_are_at_the_same_concurrency():
    args = bench_serve_args("http://127.0.0.1:8000", "m", "tok", Path("p.jsonl"), 128, 16, 32)
    pairs = dict(zip(args[::1], args[1::1]))
    assert pairs["--max-concurrency"] == "16" and pairs["--num-prompts"] == "128"
    assert pairs["--custom-output-len"] == "32" and pairs["--request-rate"] == "inf"
    assert {"--skip-chat-template", "--disable-shuffle", "--ignore-eos"} <= set(args)


def _level(conc: int, ratio: float, noise: float, pairs: int = 10, order: float = 1.0, seed: int = 0) -> dict:
    """Pairs of runs where prefixbench reads `ratio` x vllm bench serve's TTFT, with per-run noise and a penalty for
    running first (`order`); the server saw 0.9x of what either client saw."""
    rng = random.Random(seed)
    out = []
    for k in range(pairs):
        first = TOOLS if k % 4 in (0, 3) else TOOLS[::-1]
        pair: dict = {"order": list(first)}
        for pos, tool in enumerate(first):
            base = 0.020 * (ratio if tool == "prefixbench" else 1.0) * math.exp(rng.gauss(0, noise))
            base *= order if pos == 0 else 1.0
            pair[tool] = {"mean_ttft_s": base, "all_mean_ttft_s": base, "server_mean_ttft_s": base * 0.9}
        out.append(pair)
    return {"concurrency": conc, "requests": 16 * conc, "pairs": out}


def test_equivalent_differs_and_inconclusive_are_all_reachable():
    """The old check ('within the larger tool's spread') could not fail below a 50-85 % difference; this one can."""
    assert level_verdict(_level(1, 1.02, 0.02))["client"]["verdict"] == "equivalent"
    assert level_verdict(_level(1, 1.30, 0.02))["client"]["verdict"] == "differs"
    assert equivalence([0.30, -0.20, 0.10])["verdict"] == "inconclusive"  # three noisy pairs span the margin
    assert equivalence([0.01])["verdict"] == "inconclusive"  # one pair: no interval


def test_the_order_effect_is_estimated_and_cancelled_by_the_balanced_order():
    level = _level(16, 1.0, 0.01, pairs=12, order=1.5)  # whichever tool runs first is 1.5x slower
    v = level_verdict(level)
    assert v["order_effect"] == pytest.approx(1.5, rel=0.03)
    assert v["client"]["ratio"] == pytest.approx(1.0, abs=0.05)  # AB BA BA AB: cancelled
    assert v["server_gap"]["prefixbench"] == pytest.approx(1 / 0.9)


def test_the_window_drops_the_cold_first_wave_and_the_drain():
    start = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    e2e = [1.0] * 8 + [1.0, 1.5, 1.5, 1.5]  # the drain: once the queue is empty, the level decays
    ttft = [0.5] * 4 + [0.1] * 4 + [0.1, 0.5, 0.5, 0.5]  # a cold first wave, and a drain at another level
    w = window_mean_ttft(start, ttft, e2e, 4)
    assert w["window_requests"] == 5 and w["mean_ttft_s"] == pytest.approx(0.1)
    one = window_mean_ttft([0, 1, 2, 3], [0.3, 0.1, 0.1, 0.1], [0.5] * 4, 1)
    assert one["window_requests"] == 3 and one["mean_ttft_s"] == pytest.approx(0.1)  # the first after the pause


def test_peer_table_states_the_verdicts():
    result = {
        "server": {"script": "serve.sh", "version": "0.26.0", "model": "m"},
        "prompts": "results/prompts/large.jsonl",
        "reuse_pct": 100,
        "max_tokens": 32,
        "pairs": 10,
        "margin": 0.1,
        "levels": [_level(1, 1.02, 0.02), _level(64, 1.3, 0.02)],
    }
    md = peer_table(result)
    assert "vLLM 0.26.0" in md and "10 pairs of runs" in md and "±10%" in md
    rows = [line for line in md.splitlines() if line.startswith("| 1 |") or line.startswith("| 64 |")]
    assert "**equivalent**" in rows[0] and "**differs**" in rows[1]
