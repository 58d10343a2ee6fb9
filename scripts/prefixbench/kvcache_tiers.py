"""A model of vLLM's two KV tiers: the GPU prefix cache exactly as kvcache.PrefixCacheModel has it, plus the CPU tier
of vLLM's OffloadingConnector (`--kv-offloading-size GiB --kv-offloading-backend native`, CPUOffloadingSpec, LRU), to
predict every request's GPU hits and CPU hits (vLLM 0.26.0; file and line references in docs/offload.md).

What the CPU tier does, in vLLM's order and granularity:

- Its blocks are the GPU's (16 tokens; `blocks_per_chunk` 1), keyed by the same hash chain; it holds
  floor(GiB x 2^30 / bytes of one GPU block) of them (cpu_tier_blocks).
- It is inclusive, written on computation, not on GPU eviction: after a request is computed, every full *prompt*
  block it holds that the tier lacks is stored (a request with a CPU hit starts storing after the loaded blocks;
  one without stores from its first block, so a block evicted from the CPU but hit on the GPU is written back).
- A request looks it up after the GPU prefix lookup, continuing from the GPU hit, over its full prompt blocks (the
  last token need not be left out: on a full hit vLLM recomputes it, and `cached_tokens` still counts every block).
  A hit is loaded back into the GPU pool, where it is cached again like computed blocks.
- Every lookup touches the request's blocks in the tier, last block first, so its first block is the most recent.
- Eviction (LRU head first) happens when a store needs room; the blocks the store covers are protected; if too
  few others are evictable the whole store is skipped. Stored and loaded blocks become evictable when their transfer
  completes, in the order of a Python set (`keys=set(...)` in the connector's job status): an order this model
  cannot know, so it draws it (`rng`) and predictions come as a range over draws (replay_draws). Where no request is
  partly evicted, every draw agrees and the prediction is exact.

Modelled for requests one at a time (the kv_overflow sweep): transfers complete before the next request is looked
up (a lookup that found a store still running would wait for it and hit), and a prompt is prefilled in one step
(one store per request: prompts shorter than the engine's max_num_batched_tokens).
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice

from .kvcache import PrefixCacheModel, Request, replay_detail

GIB = 1 << 30


def cpu_tier_blocks(cpu_gib: float, bytes_per_token: float, block_size: int) -> int:
    """CPU blocks `--kv-offloading-size cpu_gib` buys (vLLM: int(GiB << 30) // bytes of one GPU block, every layer)."""
    if bytes_per_token <= 0 or block_size <= 0:
        raise ValueError("bytes_per_token and block_size must be positive")
    return int(cpu_gib * GIB) // int(round(bytes_per_token * block_size))


@dataclass
class CpuTier:
    """The CPU tier's blocks: every stored key, and the evictable ones in LRU order (head = next to evict)."""

    capacity: int
    rng: random.Random | None = None  # the order a transfer's blocks become evictable in; None: request order
    lru: OrderedDict[str, None] = field(default_factory=OrderedDict)
    stored: set[str] = field(default_factory=set)
    failed_stores: int = 0  # stores skipped for want of evictable blocks

    def reset(self) -> None:
        """`reset_prefix_cache?reset_external=true`: every block dropped."""
        self.lru.clear()
        self.stored.clear()

    def prefix(self, keys: Sequence[str], start: int) -> int:
        """Consecutive stored blocks of `keys` from index `start`."""
        n = 0
        for k in keys[start:]:
            if k not in self.stored:
                break
            n += 1
        return n

    def touch(self, keys: Sequence[str]) -> None:
        """A lookup's use: evictable keys move to the tail, last key first (so the first is the most recent)."""
        for k in reversed(keys):
            if k in self.lru:
                self.lru.move_to_end(k)

    def _completed(self, keys: Sequence[str]) -> None:
        """A transfer completed: its blocks become evictable, at the tail, in the set's (unknown) order."""
        order = list(keys)
        if self.rng is not None:
            self.rng.shuffle(order)
        for k in order:
            self.lru[k] = None

    def load(self, keys: Sequence[str]) -> None:
        """Blocks loaded back into the GPU pool: held during the transfer, evictable again when it completes."""
        for k in keys:
            self.lru.pop(k, None)
        self._completed(keys)

    def store(self, keys: Sequence[str], touch: Sequence[str]) -> int:
        """Store the keys the tier lacks, evicting from the LRU head (never one of `keys`); a store that cannot find
        room is skipped whole. `touch`: the request's keys, touched once the store is prepared. Returns blocks stored."""
        new = [k for k in keys if k not in self.stored]
        if not new:
            return 0
        need = len(new) - (self.capacity - len(self.stored))
        if need > 0:
            protected = set(keys)
            victims = list(islice((k for k in self.lru if k not in protected), need))
            if len(victims) < need:
                self.failed_stores += 1
                return 0
            for k in victims:
                del self.lru[k]
                self.stored.discard(k)
        self.stored.update(new)
        self.touch(touch)
        self._completed(new)
        return len(new)


@dataclass(frozen=True)
class TierHit:
    """One request's cached tokens by tier: GPU prefix-cache hits, then CPU-tier hits continuing from them."""

    gpu_tokens: int
    cpu_tokens: int

    @property
    def cached_tokens(self) -> int:
        return self.gpu_tokens + self.cpu_tokens


@dataclass
class TwoTierModel(PrefixCacheModel):
    """vLLM's GPU block pool (PrefixCacheModel, unchanged) with the CPU tier behind it (`cpu_blocks` 0: no tier)."""

    cpu_blocks: int = 0
    rng: random.Random | None = None
    cpu: CpuTier = field(init=False)
    tiers: dict[object, TierHit] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cpu = CpuTier(self.cpu_blocks, self.rng)
        self.tiers = {}

    def reset(self) -> None:
        """The cache reset prefixbench sends before a pass clears both tiers (reset_external)."""
        super().reset()
        self.cpu.reset()

    def start(
        self, request: object, hashes: Sequence[str], prompt_len: int, total_tokens: int, output_keys: Sequence[str] = ()
    ) -> int:
        """Admit a request: GPU lookup, CPU lookup from the GPU hit, load, allocate and cache on the GPU as
        PrefixCacheModel does, then store the prompt's full blocks the CPU lacks. Returns GPU + CPU cached tokens."""
        gpu = self.lookup(hashes, prompt_len)
        if not self.cpu_blocks:
            self.tiers[request] = TierHit(super().start(request, hashes, prompt_len, total_tokens, output_keys), 0)
            return self.tiers[request].cached_tokens
        keys = list(hashes[: prompt_len // self.block_size])  # the tier's keys: full prompt blocks
        cpu = self.cpu.prefix(keys, gpu) if gpu < len(keys) else 0
        self.cpu.touch(keys)
        if cpu:
            self.cpu.load(keys[gpu : gpu + cpu])
        got = super().start(request, hashes, prompt_len, total_tokens, output_keys)  # the GPU hit; loaded blocks cached
        first = gpu + cpu if cpu else 0  # block-level policy: a loaded request skips its hit blocks
        self.cpu.store(keys[first:], keys)
        self.tiers[request] = TierHit(got, cpu * self.block_size)
        return self.tiers[request].cached_tokens


def replay_tiers(
    requests: Iterable[Request], gpu_blocks: int, cpu_blocks: int, block_size: int, rng: random.Random | None = None
) -> tuple[dict[object, TierHit], dict[object, str]]:
    """Every request's GPU and CPU hits, replayed in time order by kvcache.replay_detail (its admission loop) against
    the GPU pool with the CPU tier behind it (with `cpu_blocks` 0, exactly the GPU-only model), and the requests the
    model could not place, with the reason."""
    model = TwoTierModel(gpu_blocks, block_size, cpu_blocks=cpu_blocks, rng=rng)
    _, unplaced = replay_detail(requests, gpu_blocks, block_size, model=model)
    return dict(model.tiers), unplaced


@dataclass(frozen=True)
class TierPrediction:
    """One request's hits by tier over the model's draws of the order vLLM makes blocks evictable in: the range and
    mean of each tier's tokens, and how often the most frequent (GPU, CPU) pair came up."""

    gpu_min: int
    gpu_max: int
    cpu_min: int
    cpu_max: int
    gpu_mean: float
    cpu_mean: float
    modal_gpu: int
    modal_cpu: int
    modal_share: float
    draws: int

    @property
    def exact(self) -> bool:
        """Every draw agreed: the order did not matter, so the prediction is one number per tier."""
        return self.gpu_min == self.gpu_max and self.cpu_min == self.cpu_max

    def holds(self, gpu_tokens: float, cpu_tokens: float) -> bool:
        """Whether a measured split lies within the draws' ranges."""
        return self.gpu_min <= gpu_tokens <= self.gpu_max and self.cpu_min <= cpu_tokens <= self.cpu_max


def summarize_draws(runs: Sequence[dict[object, TierHit]]) -> dict[object, TierPrediction]:
    """Per request, the draws' ranges, means and modal pair (a request missing from a draw was unplaced there)."""
    out: dict[object, TierPrediction] = {}
    for key in dict.fromkeys(k for run in runs for k in run):
        hits = [run[key] for run in runs if key in run]
        pairs: dict[tuple[int, int], int] = {}
        for h in hits:
            pairs[(h.gpu_tokens, h.cpu_tokens)] = pairs.get((h.gpu_tokens, h.cpu_tokens), 0) + 1
        (mg, mc), count = max(pairs.items(), key=lambda kv: (kv[1], -kv[0][0] - kv[0][1]))
        g, c = [h.gpu_tokens for h in hits], [h.cpu_tokens for h in hits]
        out[key] = TierPrediction(
            min(g), max(g), min(c), max(c), sum(g) / len(g), sum(c) / len(c), mg, mc, count / len(hits), len(hits)
        )
    return out


def replay_runs(
    requests: Sequence[Request], gpu_blocks: int, cpu_blocks: int, block_size: int, draws: int, seed: object
) -> tuple[list[dict[object, TierHit]], dict[object, str]]:
    """replay_tiers `draws` times, each with its own seeded order of evictable blocks (once without a tier: the order
    only matters to the CPU tier). Unplaced requests are those of the first draw (admission is the GPU's)."""
    runs: list[dict[object, TierHit]] = []
    unplaced: dict[object, str] = {}
    for d in range(draws if cpu_blocks else 1):
        got, missed = replay_tiers(requests, gpu_blocks, cpu_blocks, block_size, random.Random(f"tiers:{seed}:{d}"))
        runs.append(got)
        unplaced = unplaced or missed
    return runs, unplaced


def replay_draws(
    requests: Sequence[Request], gpu_blocks: int, cpu_blocks: int, block_size: int, draws: int, seed: object
) -> tuple[dict[object, TierPrediction], dict[object, str]]:
    """Per request, the range of its hits by tier over `draws` replays (replay_runs), and the unplaced requests."""
    runs, unplaced = replay_runs(requests, gpu_blocks, cpu_blocks, block_size, draws, seed)
    return summarize_draws(runs), unplaced


def sequential_hit_rate(
    prompts: Sequence[Sequence[str]], gpu_blocks: int, cpu_blocks: int, rng: random.Random | None = None
) -> tuple[float, int]:
    """Token-weighted prefix hit rate of prompts sent one at a time through both tiers, each prompt given as its block
    keys (one unit each: a trace's own blocks), and how many did not fit the GPU pool (left out). Used for the trace's
    "how much CPU memory buys how much hit rate" curve."""
    model = TwoTierModel(gpu_blocks + 1, 1, cpu_blocks=cpu_blocks, rng=rng)  # +1: vLLM's null block
    hit = total = left_out = 0
    for n, keys in enumerate(prompts):
        if len(keys) + 1 > model.usable_blocks:
            left_out += 1
            continue
        # one extra unit after the blocks (the recomputed last token), one output unit: total len(keys) + 1 units
        got = model.start(n, keys, len(keys) + 1, len(keys) + 1)
        model.finish(n)
        hit, total = hit + got, total + len(keys)
    return (hit / total if total else math.nan), left_out
