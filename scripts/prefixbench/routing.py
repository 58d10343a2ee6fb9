"""The routing-policy simulator: which replica vLLM's router (`vllm-router` 0.1.17) sends each request to, and the hit
rates that routing leaves, without running the router.

Why: behind a router a request can hit only what the router sent to the same replica before it. Simulating the
router's choices lets a run's measured routing be checked request by request, and lets the hit rate be drawn against
replica counts no machine here can hold (the Mooncake trace over 1 to 64 replicas), labelled as a simulation.

What is exact and what is not (docs/routing-simulator.md; facts by experiment in the router's notes):
- `round_robin`: exact. Request i (in the order the router received them) goes to the router's worker i mod N. The
  router keeps its workers in a hash map: their order (`GET /workers`) changes between starts, so pass it as
  `router_order` (replica indices in that order); without it replica 0 is taken as first.
- `consistent_hash`: exact. The router's ring (mcrouter's furc hash expanded by MurmurHash64A, 160 virtual nodes per
  worker named "<url>:<i>") is reimplemented here bit for bit and checked against the real router. The key is the
  request's X-Session-ID, else its X-Request-Id (we always send one: the router then hashes the request id, which
  spreads a session's requests), exactly as the router picks it. Exact only with the real `worker_urls` (the ring
  hashes them) and `router_order` (a collision on the ring goes to the later worker).
- `cache_aware`: a stated approximation. Per replica the set of block hashes the router sent it (its token tree,
  in KV blocks instead of tokens, never evicted); the match rate is matched full blocks x block_size / prompt length;
  above `cache_threshold` the longest-match replicas win (least loaded among them), else the least loaded; load
  imbalance beyond both thresholds sends to the least loaded. Load is the requests in flight: from each request's
  `end_s` when given, else the previous `concurrency - 1` requests (a closed loop at that concurrency), else none.
  Ties go to the first replica in the router's order.
- `random` and `power_of_two`: one draw per seed (Python's generator, not the router's): use `expectation` for the
  mean over seeds and its spread.

Hit rates (`hit_rates`) are kvcache's one-request-at-a-time unlimited replay, token-weighted: "traffic" is one cache
over every request, "kept" each replica's own cache over the requests routed to it.
"""

from __future__ import annotations

import heapq
import random
import statistics
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .kvcache import cacheable_blocks
from .sessions import trace_session_key

# --- The router's constants (vllm-project/router src/policies/consistent_hash.rs, hash_key.rs): facts, not knobs ---
VIRTUAL_NODES = 160  # ring points per worker
_M = 0xC6A4A7935BD1E995  # MurmurHash64A's multiplier
_R = 47
_MASK = (1 << 64) - 1
_SEED = 4193360111  # mcrouter hash.c's seed, used by furc and by the final expansion
_FURC_SHIFT = 23
_FURC_TRIES = 32
_FURC_MODULUS = (1 << 23) - 1
SESSION_HEADERS = ("x-session-id", "x-user-id", "x-tenant-id", "x-correlation-id", "x-request-id", "x-trace-id")
_SHORT_TEXT_BYTES = 100  # a prompt longer than this is keyed by its hash, a shorter one by itself
# Rust's char::is_whitespace (Unicode White_Space), which the router's text scan skips
_RUST_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_UNQUOTED_END = ",} ]\n\r\t"

CURVE_REPLICAS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class RoutedRequest:
    """One request as the router sees it: its id (`key`, also its X-Request-Id), its prompt's full-block hashes
    (chained, as kvcache.block_hashes makes them), prompt length in tokens, the X-Session-ID sent (None: none), when it
    reached the router and, if known, when its response ended (`end_s`: the router's in-flight count drops then)."""

    key: object
    hashes: tuple[str, ...]
    prompt_len: int
    session_key: str | None = None
    arrival_s: float = 0.0
    end_s: float | None = None


# --- consistent_hash: the router's hash, ring and key, exactly ---


def murmur64a(key: bytes, seed: int) -> int:
    """MurmurHash64A (mcrouter lib/fbi/hash.c), as the router's consistent_hash.rs writes it."""
    h = (seed ^ (len(key) * _M)) & _MASK
    full = len(key) - len(key) % 8
    for i in range(0, full, 8):
        k = (int.from_bytes(key[i : i + 8], "little") * _M) & _MASK
        k = ((k ^ (k >> _R)) * _M) & _MASK
        h = ((h ^ k) * _M) & _MASK
    if full < len(key):
        h = ((h ^ int.from_bytes(key[full:], "little")) * _M) & _MASK
    h = ((h ^ (h >> _R)) * _M) & _MASK
    return h ^ (h >> _R)


def _rehash64a(k: int) -> int:
    """MurmurHash64A of one u64 with the fixed seed (furc's next 64 bits)."""
    h = (_SEED ^ (8 * _M)) & _MASK
    k = (k * _M) & _MASK
    k = ((k ^ (k >> _R)) * _M) & _MASK
    h = ((h ^ k) * _M) & _MASK
    h = ((h ^ (h >> _R)) * _M) & _MASK
    return h ^ (h >> _R)


def furc_hash(key: bytes, m: int) -> int:
    """mcrouter's furc_hash: a consistent hash of `key` onto 0..m-1, from a stream of hash bits."""
    if m <= 1:
        return 0
    words: list[int] = []

    def bit(idx: int) -> int:
        while len(words) <= idx >> 6:
            words.append(murmur64a(key, _SEED) if not words else _rehash64a(words[-1]))
        return (words[idx >> 6] >> (idx & 63)) & 1

    d = max(m - 1, 1).bit_length()  # the least d with m <= 2**d
    a = d
    for _ in range(_FURC_TRIES):
        while not bit(a):
            if d == 0:
                return 0
            d -= 1
            a = d
        a += _FURC_SHIFT
        num = 1
        for _ in range(max(d - 1, 0)):
            num = (num << 1) | bit(a)
            a += _FURC_SHIFT
        if num < m:
            return num
    return 0


@lru_cache(maxsize=1 << 16)
def fbi_hash(key: str) -> int:
    """The router's 64-bit ring position of a string: furc onto 2**23 - 1 values, expanded by MurmurHash64A."""
    return murmur64a(furc_hash(key.encode(), _FURC_MODULUS).to_bytes(4, "little"), _SEED)


@dataclass(frozen=True)
class HashRing:
    """The router's ring: sorted positions and the replica owning each (a later worker takes a colliding point)."""

    points: tuple[int, ...]
    owners: tuple[int, ...]

    @classmethod
    def build(cls, worker_urls: Sequence[str], order: Sequence[int], virtual_nodes: int = VIRTUAL_NODES) -> HashRing:
        """`worker_urls[i]` is replica i's URL as given to --worker-urls; `order` the replicas in the router's order."""
        ring: dict[int, int] = {}
        for replica in order:
            for i in range(virtual_nodes):
                ring[fbi_hash(f"{worker_urls[replica]}:{i}")] = replica
        points = tuple(sorted(ring))
        return cls(points, tuple(ring[p] for p in points))

    def lookup(self, key: str) -> int:
        """The replica owning the first point at or after the key's position, wrapping around."""
        from bisect import bisect_left

        j = bisect_left(self.points, fbi_hash(key))
        return self.owners[j % len(self.points)]


def _skip_ws(text: str, start: int) -> int:
    while start < len(text) and text[start] in _RUST_WHITESPACE:
        start += 1
    return start


def _after_colon(text: str, pattern: str) -> int | None:
    """Just past the ':' that follows the FIRST occurrence of `pattern` (whitespace between allowed), else None."""
    pos = text.find(pattern)
    if pos < 0:
        return None
    at = _skip_ws(text, pos + len(pattern))
    return at + 1 if at < len(text) and text[at] == ":" else None


def _field_value(text: str, name: str) -> str | None:
    """The router's naive scan for `name: value` in text (hash_key.rs extract_field_value): the first occurrence of
    "name", 'name', then name; a double-, single-quoted or unquoted value."""
    for pattern in (f'"{name}"', f"'{name}'", name):
        at = _after_colon(text, pattern)
        if at is None:
            continue
        rest = text[_skip_ws(text, at) :]
        if rest[:1] in ('"', "'"):
            end = rest.find(rest[0], 1)
            if end >= 0:
                return rest[1:end]
        else:
            end = next((i for i, c in enumerate(rest) if c in _UNQUOTED_END), len(rest))
            if end > 0:
                return rest[:end]
    return None


def _nested_session_id(text: str) -> str | None:
    """session_params.session_id by the router's scan: the first '{' after "session_params": and brace matching."""
    for pattern in ('"session_params"', "'session_params'"):
        at = _after_colon(text, pattern)
        if at is None:
            continue
        start = text.find("{", at)
        if start < 0:
            return None
        depth = 0
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return _field_value(text[start : i + 1], "session_id")
        return None
    return None


def hash_key(headers: Mapping[str, str], text: str = "") -> str:
    """The string consistent_hash hashes for a request (hash_key.rs extract_hash_key, checked against the router):
    the first non-empty of SESSION_HEADERS (names case-insensitive), else fields scanned in the prompt text, else the
    prompt text itself (its hash when longer than 100 bytes)."""
    lower = {k.lower(): v for k, v in headers.items()}
    for name in SESSION_HEADERS:
        if lower.get(name):
            return f"header:{name}:{lower[name]}"
    if text:
        for prefix, value in (
            ("session", _nested_session_id(text)),
            ("user", _field_value(text, "user")),
            ("session", _field_value(text, "session_id")),
            ("user", _field_value(text, "user_id")),
        ):
            if value is not None:
                return f"{prefix}:{value}"
    if len(text.encode()) > _SHORT_TEXT_BYTES:
        return f"request_hash:{fbi_hash(text):016x}"
    return f"request:{text}"


def request_hash_key(req: RoutedRequest) -> str:
    """The key of a request we send: X-Session-ID when it has one, else its X-Request-Id (always sent)."""
    if req.session_key:
        return hash_key({"x-session-id": req.session_key})
    return hash_key({"x-request-id": str(req.key)})


# --- Load: the router's in-flight requests per replica ---


class InFlight:
    """Requests in flight per replica as the router counts them (routed, response not yet ended): from each
    request's end_s when it has one, else a closed loop of `concurrency` (the previous concurrency - 1 requests)."""

    def __init__(self, n: int, concurrency: int) -> None:
        self.loads = [0] * n
        self._ends: list[tuple[float, int, int]] = []  # (end_s, sequence, replica)
        self._window: deque[int] = deque()
        self._others = max(concurrency - 1, 0)
        self._seq = 0

    def arrive(self, req: RoutedRequest) -> None:
        """Retire what ended before `req` reached the router."""
        while self._ends and self._ends[0][0] <= req.arrival_s:
            self.loads[heapq.heappop(self._ends)[2]] -= 1
        while len(self._window) > self._others:
            self.loads[self._window.popleft()] -= 1

    def add(self, req: RoutedRequest, replica: int) -> None:
        self.loads[replica] += 1
        self._seq += 1
        if req.end_s is not None:
            heapq.heappush(self._ends, (req.end_s, self._seq, replica))
        else:
            self._window.append(replica)


def _f32(x: float) -> float:
    """x rounded to an f32, as the router compares match rates and loads."""
    return float(struct.unpack("f", struct.pack("f", x))[0])


# --- The policies ---


@dataclass(frozen=True)
class RouteContext:
    """What a policy needs besides the requests: replica count, the router's worker order, the ring's URLs, the seed
    and the policy's parameters (the router's: cache_threshold, balance_abs_threshold, balance_rel_threshold; the
    simulator's: block_size, concurrency, render)."""

    n: int
    order: tuple[int, ...]
    worker_urls: tuple[str, ...]
    seed: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def rank(self) -> list[int]:
        """rank[replica] = its position in the router's order (ties go to the lowest)."""
        out = [0] * self.n
        for pos, replica in enumerate(self.order):
            out[replica] = pos
        return out

    def param(self, name: str) -> Any:
        if name not in self.params or self.params[name] is None:
            raise ValueError(f"the {name!r} parameter is needed (the router's value, from the target's router: block)")
        return self.params[name]


Policy = Callable[[Sequence[RoutedRequest], RouteContext], list[int]]


def round_robin(requests: Sequence[RoutedRequest], ctx: RouteContext) -> list[int]:
    """Request i to the router's worker i mod N (the counter starts at 0 with each router start)."""
    return [ctx.order[i % ctx.n] for i in range(len(requests))]


def consistent_hash(requests: Sequence[RoutedRequest], ctx: RouteContext) -> list[int]:
    """Each request to the ring's owner of its key (X-Session-ID, else X-Request-Id)."""
    ring = HashRing.build(ctx.worker_urls, ctx.order)
    return [ring.lookup(request_hash_key(r)) for r in requests]


def random_policy(requests: Sequence[RoutedRequest], ctx: RouteContext) -> list[int]:
    """Uniform over the replicas, one draw per request (one realization per seed)."""
    rng = random.Random(ctx.seed)
    return [rng.randrange(ctx.n) for _ in requests]


def power_of_two(requests: Sequence[RoutedRequest], ctx: RouteContext) -> list[int]:
    """Two distinct workers drawn uniformly, the less loaded wins (the first drawn on a tie); load in flight."""
    rng = random.Random(ctx.seed)
    flight = InFlight(ctx.n, int(ctx.params.get("concurrency") or 1))
    out = []
    for req in requests:
        flight.arrive(req)
        if ctx.n == 1:
            pick = 0
        else:
            a = rng.randrange(ctx.n)
            b = rng.randrange(ctx.n - 1)
            b += b >= a  # a second, distinct worker, uniformly
            first, second = ctx.order[a], ctx.order[b]
            pick = first if flight.loads[first] <= flight.loads[second] else second
        flight.add(req, pick)
        out.append(pick)
    return out


class _Trees:
    """Every replica's approximate tree in KV blocks: block hash -> bit mask of the replicas it was routed to."""

    def __init__(self) -> None:
        self.holders: dict[str, int] = {}

    def match(self, hashes: Sequence[str], everyone: int) -> tuple[int, int]:
        """(blocks of the longest match, mask of the replicas having it); (0, everyone) when none matches."""
        mask, depth = everyone, 0
        for h in hashes:
            narrower = mask & self.holders.get(h, 0)
            if not narrower:
                break
            mask, depth = narrower, depth + 1
        return depth, mask

    def insert(self, hashes: Sequence[str], replica: int) -> None:
        bit = 1 << replica
        for h in hashes:
            self.holders[h] = self.holders.get(h, 0) | bit


def _least_loaded(candidates: Iterable[int], loads: Sequence[int], rank: Sequence[int]) -> int:
    return min(candidates, key=lambda r: (loads[r], rank[r]))


def cache_aware(requests: Sequence[RoutedRequest], ctx: RouteContext) -> list[int]:
    """The router's cache_aware on block hashes (module docstring: what is approximated)."""
    threshold = _f32(float(ctx.param("cache_threshold")))
    abs_gap, rel_gap = int(ctx.param("balance_abs_threshold")), _f32(float(ctx.param("balance_rel_threshold")))
    block_size = int(ctx.param("block_size"))
    render = bool(ctx.params.get("render", True))
    flight = InFlight(ctx.n, int(ctx.params.get("concurrency") or 1))
    rank, trees, everyone = ctx.rank(), _Trees(), (1 << ctx.n) - 1
    replicas = range(ctx.n)
    out = []
    for req in requests:
        flight.arrive(req)
        loads = flight.loads
        hi, lo = max(loads), min(loads)
        if hi - lo > abs_gap and _f32(hi) > _f32(lo * rel_gap):
            pick = _least_loaded(replicas, loads, rank)  # load_imbalance
        else:
            depth, mask = trees.match(req.hashes, everyone) if render else (0, everyone)
            rate = _f32(depth * block_size / req.prompt_len) if req.prompt_len else 0.0
            if rate > threshold:  # prefix_hit: the longest match, least loaded among its holders
                pick = _least_loaded((r for r in replicas if mask >> r & 1), loads, rank)
            else:  # prefix_miss (or missing_tokens without render)
                pick = _least_loaded(replicas, loads, rank)
        if render:
            trees.insert(req.hashes, pick)
        flight.add(req, pick)
        out.append(pick)
    return out


POLICIES: dict[str, Policy] = {
    "round_robin": round_robin,
    "consistent_hash": consistent_hash,
    "cache_aware": cache_aware,
    "random": random_policy,
    "power_of_two": power_of_two,
}
STOCHASTIC = frozenset({"random", "power_of_two"})  # one draw per seed: see expectation()


def stand_in_urls(n: int) -> tuple[str, ...]:
    """Worker URLs for a simulation without real ones (the trace curve): the ring is then a ring like the router's,
    with the same statistics, not the assignment of any real run."""
    return tuple(f"http://replica-{i}" for i in range(n))


def router_order_of(worker_urls: Sequence[str], router_urls: Sequence[str]) -> list[int]:
    """Replica indices in the router's order, from the URLs `GET /workers` lists (trailing '/' ignored)."""
    index = {u.rstrip("/"): i for i, u in enumerate(worker_urls)}
    missing = [u for u in router_urls if u.rstrip("/") not in index]
    if missing or len(router_urls) != len(worker_urls):
        raise ValueError(f"the router lists {list(router_urls)}, the replicas are {list(worker_urls)}")
    return [index[u.rstrip("/")] for u in router_urls]


def simulate(
    requests: Sequence[RoutedRequest],
    n_replicas: int,
    policy: str,
    *,
    worker_urls: Sequence[str] | None = None,
    router_order: Sequence[int] | None = None,
    seed: int = 0,
    **policy_params: Any,
) -> list[int]:
    """The replica (0-based, in --worker-urls order) the router sends each request to, in the given order (the order
    the router received them). `worker_urls`: the replicas' URLs (consistent_hash hashes them; stand-ins without);
    `router_order`: replica indices in the router's order (`GET /workers`; router_order_of); `policy_params`:
    cache_threshold, balance_abs_threshold, balance_rel_threshold, block_size (cache_aware), concurrency
    (cache_aware, power_of_two: in-flight model when requests have no end_s), render (False: no token ids)."""
    if policy not in POLICIES:
        raise ValueError(f"no simulator for routing policy {policy!r}; simulated: {', '.join(POLICIES)}")
    if n_replicas < 1:
        raise ValueError("n_replicas must be at least 1")
    urls = tuple(worker_urls) if worker_urls is not None else stand_in_urls(n_replicas)
    order = tuple(router_order) if router_order is not None else tuple(range(n_replicas))
    if len(urls) != n_replicas or sorted(order) != list(range(n_replicas)):
        raise ValueError(f"{n_replicas} replicas, but worker_urls {list(urls)} and router_order {list(order)}")
    return POLICIES[policy](requests, RouteContext(n_replicas, order, urls, seed, policy_params))


# --- What the routing leaves: hit rates and load ---


def replay_hits(requests: Sequence[RoutedRequest], assignment: Sequence[int], block_size: int) -> tuple[list[int], list[int]]:
    """Cached tokens of every request, one at a time in order with unlimited caches (kvcache's model: the longest run
    of cacheable full blocks already cached, the last prompt token never counted; then its full prompt blocks are
    cached): in the traffic (one cache for all) and kept (the cache of the replica it was routed to)."""
    if len(assignment) != len(requests):
        raise ValueError(f"{len(assignment)} replicas for {len(requests)} requests")
    seen: set[str] = set()
    per: dict[int, set[str]] = {}
    traffic, kept = [], []
    for req, replica in zip(requests, assignment):
        mine = per.setdefault(replica, set())
        usable = req.hashes[: cacheable_blocks(req.prompt_len, block_size)]
        hits = []
        for cache in (seen, mine):
            n = 0
            for h in usable:
                if h not in cache:
                    break
                n += 1
            hits.append(n * block_size)
        traffic.append(hits[0])
        kept.append(hits[1])
        full = req.hashes[: req.prompt_len // block_size]
        seen.update(full)
        mine.update(full)
    return traffic, kept


def hit_rates(requests: Sequence[RoutedRequest], assignment: Sequence[int], block_size: int) -> dict[str, float]:
    """Token-weighted hit rates: `traffic` (one unlimited cache over every request) and `kept` (each replica's own
    unlimited cache over the requests routed to it); sum of cached tokens / sum of prompt tokens."""
    traffic, kept = replay_hits(requests, assignment, block_size)
    prompt = sum(r.prompt_len for r in requests)
    return {"traffic": sum(traffic) / prompt if prompt else 0.0, "kept": sum(kept) / prompt if prompt else 0.0}


def load(assignment: Sequence[int], n: int) -> list[int]:
    """Requests per replica."""
    out = [0] * n
    for r in assignment:
        out[r] += 1
    return out


def imbalance(per_replica: Sequence[int]) -> float | None:
    """The busiest replica's requests over the mean (1 = even; N = all on one of N)."""
    total = sum(per_replica)
    return max(per_replica) / (total / len(per_replica)) if total else None


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def expectation(
    requests: Sequence[RoutedRequest],
    n_replicas: int,
    policy: str,
    block_size: int,
    seeds: Iterable[int] = range(1),
    **kwargs: Any,
) -> dict[str, Any]:
    """Hit rates and load imbalance of a policy, as the mean, sd, min and max over `seeds` (one seed suffices for a
    deterministic policy: every seed gives the same routing)."""
    runs = []
    for seed in seeds:
        where = simulate(requests, n_replicas, policy, seed=seed, block_size=block_size, **kwargs)
        rates = hit_rates(requests, where, block_size)
        runs.append({**rates, "imbalance": imbalance(load(where, n_replicas)) or 0.0})
    return {k: _summary([r[k] for r in runs]) for k in ("traffic", "kept", "imbalance")} | {"seeds": len(runs)}


# --- The Mooncake trace over 1..64 replicas ---


def trace_routed_requests(rows: Sequence[Mapping[str, Any]]) -> list[RoutedRequest]:
    """Mooncake-format trace rows as the router would see them: the 512-token hash ids as block hashes, the input
    length, arrival from the timestamp (ms), and trace_session_key as X-Session-ID (the trace has no session id).
    Rows without blocks are left out."""
    return [
        RoutedRequest(n, tuple(str(h) for h in r["hash_ids"]), int(r["input_length"]), trace_session_key(r["hash_ids"]), r["timestamp"] / 1000)
        for n, r in enumerate(rows)
        if r["hash_ids"]
    ]  # fmt: skip


def trace_curve(
    trace_requests: Sequence[RoutedRequest],
    replicas: Sequence[int] = CURVE_REPLICAS,
    policies: Sequence[str] = ("round_robin", "consistent_hash", "cache_aware", "random"),
    *,
    block_size: int | None = None,
    seeds: Iterable[int] = range(5),
    **policy_params: Any,
) -> list[dict[str, Any]]:
    """Per policy and replica count: the hit rate in the traffic, kept by the routing (mean, sd, min, max over
    `seeds` for random and power_of_two; one run otherwise), and the load imbalance. A simulation on stand-in worker
    URLs: each row says so (`source`), with what consistent_hash keyed on and the in-flight model cache_aware used.
    `block_size`: the requests' block (the trace's 512 tokens by default)."""
    if block_size is None:
        from .shapes.trace import TRACE_BLOCK_TOKENS

        block_size = TRACE_BLOCK_TOKENS
    seed_list = list(seeds)
    rows = []
    for policy in policies:
        for n in replicas:
            got = expectation(trace_requests, n, policy, block_size, seed_list if policy in STOCHASTIC else [0], **policy_params)
            rows.append(
                {
                    "source": "simulation",
                    "policy": policy,
                    "replicas": n,
                    "requests": len(trace_requests),
                    "seeds": got["seeds"],
                    **{f"{k}_{s}": got[k][s] for k in ("traffic", "kept", "imbalance") for s in ("mean", "sd", "min", "max")},
                    "hash_key": "X-Session-ID of each request (trace_session_key: its first two block ids)",
                    "in_flight": f"closed loop of {policy_params.get('concurrency') or 1}" if policy in ("cache_aware", "power_of_two") else None,
                }
            )  # fmt: skip
    return rows
