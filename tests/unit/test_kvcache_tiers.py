"""The two-tier cache model (GPU pool + vLLM's CPU offload tier) on hand-worked cases, and against the GPU-only model."""

from __future__ import annotations

import random

import pytest

from prefixbench.kvcache import Request, block_hashes, replay_detail
from prefixbench.kvcache_tiers import (
    CpuTier,
    TierHit,
    TwoTierModel,
    cpu_tier_blocks,
    replay_draws,
    replay_tiers,
    sequential_hit_rate,
    summarize_draws,
)

B = 4


def doc(tag: int, n: int) -> list[int]:
    return [tag * 100_000 + i for i in range(n)]


def cyclic(docs: int, passes: int, doc_tokens: int = 8, question: int = 1, output_tokens: int = 1) -> list[Request]:
    """`passes` passes over `docs` documents, one request at a time: each prompt a document plus its own last tokens."""
    reqs, n = [], 0
    for _ in range(passes):
        for d in range(docs):
            prompt = doc(d, doc_tokens) + [900_000 + n * 10 + j for j in range(question)]
            reqs.append(Request(n, tuple(block_hashes(prompt, B)), len(prompt), output_tokens, 2.0 * n, 2.0 * n + 1))
            n += 1
    return reqs


def split(got: dict[object, TierHit], reqs: list[Request]) -> list[tuple[int, int]]:
    return [(got[r.key].gpu_tokens, got[r.key].cpu_tokens) for r in reqs]


def test_cpu_blocks_follow_vllms_arithmetic():
    # Phi-3-mini: 2 x 32 layers x 32 KV heads x 96 x 2 bytes = 393,216 bytes a token; 16 tokens = 6 MiB a block
    assert cpu_tier_blocks(4, 393_216, 16) == 682  # int(4 << 30) // 6,291,456
    assert cpu_tier_blocks(12, 393_216, 16) == 2048
    assert cpu_tier_blocks(0.5, 23_040, 16) == 1456  # SmolLM2-135M: 2 x 30 x 3 x 64 x 2 bytes a token
    with pytest.raises(ValueError):
        cpu_tier_blocks(1, 0, 16)


def test_a_working_set_the_gpu_holds_hits_the_gpu_only():
    # 9-token prompts: 2 full blocks + 1 token, 3 blocks with the output; 6 usable GPU blocks hold both documents
    reqs = cyclic(docs=2, passes=3)
    got, unplaced = replay_tiers(reqs, 7, 8, B)
    assert not unplaced
    assert split(got, reqs) == [(0, 0), (0, 0)] + [(8, 0)] * 4


def test_between_the_gpu_and_the_cpu_capacity_hits_come_from_the_cpu():
    # 3 usable GPU blocks hold one document, the 4-block CPU tier both: every later request is a CPU hit of 2 blocks
    reqs = cyclic(docs=2, passes=3)
    off, _ = replay_tiers(reqs, 4, 0, B)
    on, _ = replay_tiers(reqs, 4, 4, B)
    assert split(off, reqs) == [(0, 0)] * 6  # without the tier, LRU thrash
    assert split(on, reqs) == [(0, 0), (0, 0)] + [(0, 8)] * 4


def test_the_tier_is_inclusive_so_gpu_plus_cpu_is_not_the_capacity():
    # GPU holds 1 document, CPU 2: three documents exceed the CPU alone, and the GPU adds nothing to it (the CPU tier
    # keeps a copy of what the GPU holds), so 3 documents thrash although GPU + CPU = 3 documents
    reqs = cyclic(docs=3, passes=3)
    got, _ = replay_tiers(reqs, 4, 4, B, random.Random(0))
    assert split(got, reqs) == [(0, 0)] * 9


def test_beyond_the_cpu_tier_lru_thrash_gives_nothing():
    reqs = cyclic(docs=6, passes=3)
    preds, _ = replay_draws(reqs, 4, 4, B, draws=16, seed=1)
    assert all(p.exact and p.cpu_max == 0 and p.gpu_max == 0 for p in preds.values())


def test_the_tier_off_is_todays_model_exactly():
    rng = random.Random(5)
    reqs = []
    for n in range(60):  # overlapping requests: admission waits, pinned blocks, eviction
        prompt = doc(rng.randrange(6), rng.choice((5, 9, 13))) + [800_000 + n]
        start = n * 0.7 + rng.random()
        reqs.append(Request(n, tuple(block_hashes(prompt, B)), len(prompt), rng.randrange(1, 6), start, start + rng.random() * 3))
    want, want_unplaced = replay_detail(reqs, 9, B)
    got, unplaced = replay_tiers(reqs, 9, 0, B)
    assert unplaced == want_unplaced and {k: v.gpu_tokens for k, v in got.items()} == want
    assert all(v.cpu_tokens == 0 for v in got.values())
    assert unplaced  # the case exercises the admission loop (some requests the model could not place)


def test_the_cpu_lookup_continues_from_the_gpu_hit():
    m = TwoTierModel(8, B, cpu_blocks=8)  # 7 usable GPU blocks
    a = doc(1, 12) + [1]  # 3 full blocks + 1 token
    ha = block_hashes(a, B)
    assert m.start("a", ha, 13, 14) == 0
    m.finish("a")
    # a's blocks are in both tiers; evict a's last full block from the GPU only
    m.cached.pop(ha[2])
    m.key_of = {b: h for h, b in m.cached.items()}
    assert m.start("b", ha, 13, 14) == 12 and m.tiers["b"] == TierHit(8, 4)


def test_a_full_prompt_hit_counts_the_last_block_from_the_cpu():
    # a prompt of whole blocks: the GPU lookup leaves its last block out (the last token is recomputed), the CPU lookup
    # does not (vLLM recomputes the last token after the load), so cached_tokens = the prompt
    m = TwoTierModel(8, B, cpu_blocks=8)
    p = doc(2, 8)
    h = block_hashes(p, B)
    m.start("a", h, 8, 9)
    m.finish("a")
    assert m.start("b", h, 8, 9) == 8 and m.tiers["b"] == TierHit(4, 4)


def test_a_partly_evicted_document_keeps_a_prefix_only_in_some_orders():
    # CPU of 3 blocks, two 2-block documents: storing b evicts one of a's blocks, which one depends on the order vLLM
    # makes a's stored blocks evictable in (a set's): a keeps its first block (a 4-token hit) or nothing
    reqs = cyclic(docs=2, passes=2)
    first = replay_tiers(reqs, 4, 3, B)[0]  # request order: a's first block is the oldest, evicted first
    assert first[2].cpu_tokens == 0
    preds, _ = replay_draws(reqs, 4, 3, B, draws=32, seed=3)
    a2 = preds[2]
    assert (a2.cpu_min, a2.cpu_max) == (0, 4) and not a2.exact and 0 < a2.cpu_mean < 4
    assert a2.holds(0, 0) and a2.holds(0, 4) and not a2.holds(0, 8)
    assert preds[0].exact and preds[1].exact  # the first pass can hit nothing, in any order


def test_lookups_touch_last_block_first_so_a_tail_is_evicted_before_a_head():
    t = CpuTier(4)
    t.store(["a0", "a1"], ["a0", "a1"])
    t.store(["b0", "b1"], ["b0", "b1"])
    t.touch(["a0", "a1"])
    assert list(t.lru) == ["b0", "b1", "a1", "a0"]
    assert t.store(["c0"], ["c0"]) == 1 and "b0" not in t.stored


def test_a_store_without_room_is_skipped_whole():
    t = CpuTier(3)
    t.store(["a0", "a1"], ["a0", "a1"])
    t.load(["a0"])  # held while loading in vLLM; evictable again here, once complete
    assert t.store(["x0", "x1", "x2", "x3"], ["x0", "x1", "x2", "x3"]) == 0  # more than the tier: nothing stored
    assert t.failed_stores == 1 and t.stored == {"a0", "a1"}


def test_a_store_never_evicts_the_blocks_it_covers():
    t = CpuTier(2)
    t.store(["a0", "a1"], ["a0", "a1"])
    # a request storing a1 (present) and n0 (new): a1 is protected, a0 goes
    assert t.store(["a1", "n0"], ["a0", "a1", "n0"]) == 1 and t.stored == {"a1", "n0"}


def test_reset_clears_both_tiers():
    m = TwoTierModel(8, B, cpu_blocks=8)
    h = block_hashes(doc(3, 9), B)
    m.start("a", h, 9, 10)
    m.finish("a")
    m.reset()
    assert m.start("b", h, 9, 10) == 0 and not m.tiers["b"].cpu_tokens


def test_summarize_draws_gives_ranges_and_the_modal_pair():
    runs = [{"r": TierHit(0, 8)}, {"r": TierHit(0, 8)}, {"r": TierHit(0, 4)}]
    p = summarize_draws(runs)["r"]
    assert (p.cpu_min, p.cpu_max, p.modal_cpu, p.draws) == (4, 8, 8, 3) and p.modal_share == pytest.approx(2 / 3)
    assert p.cpu_mean == pytest.approx(20 / 3) and not p.exact


def test_sequential_hit_rate_in_trace_blocks():
    prompts = [["x", "y"], ["x", "y", "z"], ["p", "q"], ["x", "y"]]
    # 4 GPU units: the third prompt evicts y, so the last finds x on the GPU and y only in the CPU tier
    no_tier, _ = sequential_hit_rate(prompts, 4, 0)
    tier, left_out = sequential_hit_rate(prompts, 4, 5)
    assert left_out == 0 and tier > no_tier
    assert (no_tier, tier) == (pytest.approx(3 / 9), pytest.approx(4 / 9))  # request 2 hits x, y; request 4 x (+ y from the CPU)
    assert sequential_hit_rate([["a"] * 10], 4, 0)[1] == 1  # a prompt larger than the GPU pool is left out
