"""Async streaming client for `/v1/completions`: one record per request, ok or failed, never dropped.

Closed loop: `concurrency` workers each send the next prompt as soon as their previous one ends.
Records go to a sink as they complete, so a crash loses nothing already measured.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import aiohttp

from .engines import Engine
from .settings import BenchSettings, api_key


@dataclass
class RequestRecord:
    """What one request did. `status` is "ok" or "failed"; failed ones carry `error`."""

    request_index: int
    status: str = "failed"
    error: str | None = None
    http_status: int | None = None
    start_s: float = 0.0
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)  # per output token: a chunk's gap spread over the tokens it carried
    chunk_gaps_s: list[float] = field(default_factory=list)  # per chunk after the first, as received
    chunk_tokens: list[int] = field(default_factory=list)  # output tokens each of those chunks carried
    tpot_s: float | None = None  # (e2e - ttft) / (completion_tokens - 1): the mean time per output token after the first
    schedule_lag_s: float | None = None  # open loop: how late the client sent it after its scheduled time
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    output_chunks: int = 0
    request_id: str | None = None  # sent as the X-Request-Id header and the body's request_id: names it in server logs
    session_key: str | None = None  # sent as X-Session-ID (a router's consistent_hash keys on it); None: not sent


# One request to send: (index, prompt) or (index, prompt, cache salt); a prompt is text or token ids.
Turn = tuple[int, str | list[int]] | tuple[int, str | list[int], str | None]


@dataclass(frozen=True)
class ClientConfig:
    base_url: str
    model: str
    max_tokens: int
    request_timeout_s: float
    stall_timeout_s: float
    api_key: str | None = None
    engine: Engine = field(kw_only=True)  # the server's request and usage fields (cache salt, cached tokens)
    # Every request a fresh salt (a forced miss) unless it brings its own: the cache-off setting realized on a
    # deployment with caching on (targets.endpoint.endpoints.no_prefix_cache.salt_every_request).
    salt_every_request: bool = field(default=False, kw_only=True)
    # Request ids `{id_prefix}-{index}`: unique in a pass as the indices are, so a replica's request log names each
    # request it served (replicas.attribute). None: a random id per request (calibration, warm-up).
    id_prefix: str | None = field(default=None, kw_only=True)
    # index -> the X-Session-ID to send (the shape's session, or its prefix group); an index not in it sends none.
    session_keys: Mapping[int, str] = field(default_factory=dict, kw_only=True)

    def request_id(self, index: int) -> str:
        """The id request `index` carries (random where the pass gave no prefix)."""
        return f"{self.id_prefix}-{index}" if self.id_prefix is not None else f"pb-{uuid.uuid4().hex}"

    def headers(self, request_id: str, session_key: str | None) -> dict[str, str]:
        """One request's headers: the key, its id, and its session where it has one (built before the clock starts)."""
        return bearer(self.api_key) | {"X-Request-Id": request_id} | ({"X-Session-ID": session_key} if session_key else {})

    @classmethod
    def of(
        cls, base_url: str, model: str, settings: BenchSettings, engine: Engine, *, salt_every_request: bool = False
    ) -> ClientConfig:
        """The client's settings from the run's: one place for the calibration and the measuring passes."""
        return cls(
            base_url,
            model,
            settings.max_tokens,
            settings.request_timeout_s,
            settings.stall_timeout_s,
            api_key(settings),
            engine=engine,
            salt_every_request=salt_every_request,
        )


def fresh_salt() -> str:
    """A salt no other request carries (random, so unique across passes, lifetimes and runs on a shared server; 35
    characters, within vLLM's 1-128 and free of its forbidden `@ / \\` and NUL)."""
    return f"pb-{uuid.uuid4().hex}"


def bearer(api_key: str | None) -> dict[str, str]:
    """The Authorization header for an API key (none without one); the only place a key is put anywhere."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def completion_payload(
    cfg: ClientConfig, prompt: str | list[int], salt: str | None = None, request_id: str | None = None
) -> dict:
    """Fixed-length greedy generation (`ignore_eos`) so every mode decodes the same number of tokens (a prompt may
    be token ids, which vLLM takes as they are). A `salt` (the engine's cache-salt field, vLLM's `cache_salt`) makes
    the request share no cached block with any other: the forced miss of the paired design (prefixbench.paired). The
    `request_id` goes in the body as well as the X-Request-Id header: vLLM takes either (the header first), and a
    router in front forwards the body whatever it does with headers."""
    extra = {cfg.engine.cache_salt_field: salt} if salt else {}
    extra |= {"request_id": request_id} if request_id else {}
    return extra | {
        "model": cfg.model,
        "prompt": prompt,
        "max_tokens": cfg.max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        # continuous_usage_stats: every chunk says how many output tokens so far, so ITL is per token, not per chunk.
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }


def _apply_usage(rec: RequestRecord, usage: dict, engine: Engine) -> None:
    rec.prompt_tokens = usage.get("prompt_tokens", rec.prompt_tokens)
    rec.completion_tokens = usage.get("completion_tokens", rec.completion_tokens)
    cached = engine.cached_tokens(usage)
    if cached is not None:
        rec.cached_tokens = cached


def per_token_latencies(rec: RequestRecord) -> None:
    """TPOT and per-token ITL from the chunk timings (a chunk's gap is spread over the tokens it carried).

    Without per-chunk token counts (a server without continuous usage), each chunk counts as one token
    and the last chunk takes whatever the usage total leaves."""
    if rec.ttft_s is None or rec.e2e_s is None:
        return
    n = rec.completion_tokens
    if n and n > 1:
        rec.tpot_s = (rec.e2e_s - rec.ttft_s) / (n - 1)
    counts = rec.chunk_tokens if len(rec.chunk_tokens) == len(rec.chunk_gaps_s) else [1] * len(rec.chunk_gaps_s)
    rec.itl_s = (
        [gap / k for gap, k in zip(rec.chunk_gaps_s, counts) for _ in range(k)]
        if all(k >= 1 for k in counts)
        else list(rec.chunk_gaps_s)
    )


def sse_data(line: str) -> str | None:
    """The data of one server-sent-events line, or None for a line the SSE specification says to skip here: a blank
    line (an event's end), a comment (`:`), and every other field (`event:`, `id:`, `retry:`, unknown ones), which
    gateways send and a completion stream does not need. Each data line is one chunk, as OpenAI servers send them."""
    field, _, value = line.partition(":")
    return value.strip() or None if field == "data" else None


@dataclass
class StreamState:
    """What one response stream has said so far: when the last token chunk came, how many tokens so far, whether
    usage and the final `[DONE]` arrived."""

    t0: float
    last: float
    tokens_so_far: int = 0
    usage_seen: bool = False
    done: bool = False

    async def read(self, resp: aiohttp.ClientResponse, rec: RequestRecord, engine: Engine) -> None:
        async for raw in resp.content:
            data = sse_data(raw.decode("utf-8", errors="replace").strip())
            if data is None:
                continue
            if data == "[DONE]":
                self.done = True
                return
            self.on_chunk(rec, json.loads(data), engine)

    def on_chunk(self, rec: RequestRecord, chunk: dict, engine: Engine) -> None:
        if "error" in chunk:
            raise ValueError(f"server error in stream: {str(chunk['error'])[:200]}")
        now = time.perf_counter()
        choices = chunk.get("choices") or []
        usage = chunk.get("usage") or {}
        if choices and (choices[0].get("text") or rec.ttft_s is not None):
            self.on_token_chunk(rec, usage, now)
        if usage:
            _apply_usage(rec, usage, engine)
            self.usage_seen = True

    def on_token_chunk(self, rec: RequestRecord, usage: dict, now: float) -> None:
        """The first chunk with text is the TTFT; each later one a gap, spread over the tokens it carried."""
        if rec.ttft_s is None:
            rec.ttft_s = now - self.t0
        else:
            rec.chunk_gaps_s.append(now - self.last)
            if "completion_tokens" in usage:
                rec.chunk_tokens.append(usage["completion_tokens"] - self.tokens_so_far)
        self.tokens_so_far = usage.get("completion_tokens", self.tokens_so_far)
        self.last = now
        rec.output_chunks += 1

    def error(self, rec: RequestRecord) -> str | None:
        """Why a stream that ended is not a complete response (None: it is)."""
        if not self.done:
            return "stream ended without [DONE]"
        if rec.ttft_s is None:
            return "no token received"
        if not self.usage_seen:
            return "no usage in stream"
        return None


async def send_one(
    session: aiohttp.ClientSession,
    cfg: ClientConfig,
    index: int,
    prompt: str | list[int],
    t_origin: float,
    salt: str | None = None,
) -> RequestRecord:
    """Send one streaming completion and time it; every failure mode ends as a failed record. Without a `salt` of its
    own, a request to a `salt_every_request` target gets a fresh one: a forced miss, as the paired design's miss arm."""
    rid, key = cfg.request_id(index), cfg.session_keys.get(index)
    rec = RequestRecord(request_index=index, request_id=rid, session_key=key)
    if salt is None and cfg.salt_every_request:
        salt = fresh_salt()
    headers = cfg.headers(rid, key)
    payload = completion_payload(cfg, prompt, salt, rid)
    timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s, sock_read=cfg.stall_timeout_s)
    t0 = time.perf_counter()
    rec.start_s = t0 - t_origin
    try:
        async with session.post(f"{cfg.base_url}/v1/completions", json=payload, headers=headers, timeout=timeout) as resp:
            rec.http_status = resp.status
            if resp.status != 200:
                body = (await resp.text())[:300]
                rec.error = f"HTTP {resp.status}: {body}"
                rec.e2e_s = time.perf_counter() - t0
                return rec
            stream = StreamState(t0, t0)
            await stream.read(resp, rec, cfg.engine)
        rec.e2e_s = time.perf_counter() - t0
        rec.error = stream.error(rec)
        if rec.error is None:
            rec.status = "ok"
    except TimeoutError:
        rec.error = f"timeout after {time.perf_counter() - t0:.1f} s"
    except Exception as exc:  # noqa: BLE001 - any failure is a failed record, never a lost one
        rec.error = f"{type(exc).__name__}: {exc}"[:300]
    if rec.status != "ok" and rec.e2e_s is None:
        rec.e2e_s = time.perf_counter() - t0
    per_token_latencies(rec)
    return rec


def not_sent(cfg: ClientConfig, index: int, why: str) -> RequestRecord:
    """The failed record of a request never sent, with the id and session it would have carried."""
    return RequestRecord(index, error=why, request_id=cfg.request_id(index), session_key=cfg.session_keys.get(index))


async def run_closed_loop(
    cfg: ClientConfig, prompts: Sequence[Turn], concurrency: int, on_record: Callable[[RequestRecord], None]
) -> float:
    """Send every prompt with at most `concurrency` in flight (each its own one-turn session); returns the wall time.

    A prompt is (index, text or token ids), or (index, prompt, cache salt)."""
    return await run_sessions(cfg, [[p] for p in prompts], concurrency, 0.0, on_record)


async def run_sessions(
    cfg: ClientConfig,
    sessions: Sequence[Sequence[Turn]],
    concurrency: int,
    think_time_s: float,
    on_record: Callable[[RequestRecord], None],
) -> float:
    """Multi-turn traffic: `concurrency` workers each take the next session and send its turns in order, one
    after the other with `think_time_s` between an answer and the next question; sessions interleave across
    workers. A failed turn ends its session (the next turn's history would be a lie); the turns it skips are
    recorded as failed, never dropped. Returns the wall time."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    queue: asyncio.Queue[Sequence[Turn]] = asyncio.Queue()
    for session in sessions:
        queue.put_nowait(session)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    t_origin = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while True:
                try:
                    turns = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                for k, (index, prompt, *salt) in enumerate(turns):
                    rec = await send_one(http, cfg, index, prompt, t_origin, salt[0] if salt else None)
                    on_record(rec)
                    if rec.status != "ok":
                        for skipped, *_ in turns[k + 1 :]:
                            on_record(not_sent(cfg, skipped, f"not sent: turn of request {index} failed"))
                        break
                    if think_time_s and k + 1 < len(turns):
                        await asyncio.sleep(think_time_s)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(sessions)))))
    return time.perf_counter() - t_origin


def arrival_offsets(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Send times (s from start) of an open-loop schedule: gamma inter-arrivals with mean 1/rate.

    burstiness = the gamma shape: 1 is a Poisson process, <1 burstier, >1 more regular (as in vllm bench serve)."""
    if rate <= 0 or burstiness <= 0:
        raise ValueError("rate and burstiness must be > 0")
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
    return out


async def run_open_loop(
    cfg: ClientConfig,
    prompts: Sequence[tuple[int, str]],
    rate: float,
    burstiness: float,
    seed: int,
    on_record: Callable[[RequestRecord], None],
    offsets: Sequence[float] | None = None,
) -> float:
    """Send each prompt at its scheduled time whatever is in flight (open loop); returns the wall time.

    The schedule is gamma arrivals at `rate`, or `offsets` (seconds from the start) when given (a trace)."""
    if offsets is None:
        offsets = arrival_offsets(len(prompts), rate, burstiness, seed)
    connector = aiohttp.TCPConnector(limit=0)
    t_origin = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(index: int, prompt: str, at: float) -> None:
            rec = await send_one(session, cfg, index, prompt, t_origin)
            # Latency counts from the scheduled send (no coordinated omission): the lag is kept beside it.
            rec.schedule_lag_s = max(0.0, rec.start_s - at)
            on_record(rec)

        tasks = []
        for (index, prompt), at in zip(prompts, offsets):
            delay = t_origin + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, prompt, at)))
        await asyncio.gather(*tasks)
    return time.perf_counter() - t_origin


def record_dict(rec: RequestRecord, **context) -> dict:
    return {**context, **asdict(rec)}
