"""Existing OpenAI-compatible endpoints: benchmark a deployment that already runs instead of starting one.

Two endpoints stand for the two cache settings (e.g. two deployments, one with prefix caching off), or one
deployment with caching on stands for both: its cache-off setting salts every request (`salt_every_request`), so each
is a forced miss, the miss arm of the paired design (prefixbench.paired) sent for a whole lifetime. The off setting
then hits nothing by construction, and what the flag itself costs is not measured: forced_miss_notes says so.
prefixbench does not own these servers, so it cannot time their start, read their memory, or see
their GPU; it probes what each endpoint offers (the engine's `/metrics` counters and latency histograms,
its cache reset and version paths: engines/) once, uses what is there, and records the rest as not measured so
the report can say so. The API key is read from the named environment variable at the moment it is
sent and is never written anywhere; a base URL is recorded without any user:password part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from . import OFF
from .client import bearer
from .engines import Engine
from .server import ServerError


def cache_off_forced(lifetimes: Sequence[dict]) -> bool:
    """Whether a run's cache-off setting was forced misses on its cache-on deployment, from the lifetimes' recorded
    server.json: then nothing in it compares caching off with caching on, and what the flag costs (on vs off at 0%
    reuse) must read as not measured."""
    return any(i.get("mode") == OFF and (i.get("endpoint") or {}).get("salt_every_request") for i in lifetimes)


def redact_url(url: str) -> str:
    """The URL without credentials or query (tokens sometimes ride in either)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


async def fetch_metrics(session: aiohttp.ClientSession, base_url: str, engine: Engine) -> dict[str, float]:
    async with session.get(f"{base_url}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
        r.raise_for_status()
        return engine.parse_metrics(await r.text())


async def fetch_kv_blocks(session: aiohttp.ClientSession, base_url: str, engine: Engine) -> int | None:
    """The server's KV capacity in blocks, as its /metrics states it (None when it does not)."""
    try:
        async with session.get(f"{base_url}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
            return engine.kv_blocks(await r.text()) if r.status == 200 else None
    except aiohttp.ClientError:
        return None


async def reset_prefix_cache(session: aiohttp.ClientSession, base_url: str, engine: Engine) -> str:
    """'ok', or why not (vLLM's exists only in dev mode, which only loopback servers get).

    A 200 whose body says the reset did not happen (vLLM: blocks still held by an offload transfer) is retried for a
    few seconds: a pass must start from an empty cache, the second tier's included (engine.cache_reset_params)."""
    url = f"{base_url}{engine.cache_reset_path}"
    params = dict(engine.cache_reset_params)
    try:
        for _ in range(RESET_ATTEMPTS):
            async with session.post(url, params=params, timeout=aiohttp.ClientTimeout(total=30)) as r:
                if r.status != 200:
                    return f"HTTP {r.status}"
                if engine.cache_reset_ok(r.status, await r.text()):
                    return "ok"
            await asyncio.sleep(0.5)
        return "HTTP 200 success=false"
    except aiohttp.ClientError as exc:
        return f"unavailable ({type(exc).__name__})"


RESET_ATTEMPTS = 10  # 0.5 s apart: an offload transfer in flight finishes well within that


@dataclass
class Capabilities:
    """What one endpoint offered when probed; everything missing here is reported as not measured."""

    models: list[str] = field(default_factory=list)
    metrics: bool = False  # /metrics answered in Prometheus format
    prefix_cache_counters: bool = False  # the engine's prefix-cache query and hit counters among them
    latency_histograms: bool = False  # server-side TTFT / E2E, for the client cross-check
    idle_gauges: bool = False  # running/waiting gauges: "server idle before a point"
    kv_usage: bool = False
    cache_reset: str = "not tried"  # "ok", or why not
    version: str | None = None

    @classmethod
    def everything(cls, version: str | None = None) -> Capabilities:
        """A server prefixbench started itself: every endpoint on, the cache reset included (vLLM: dev mode)."""
        return cls(metrics=True, prefix_cache_counters=True, latency_histograms=True, idle_gauges=True,
                   kv_usage=True, cache_reset="ok", version=version)  # fmt: skip

    def not_measured(self, engine: Engine) -> list[str]:
        """Plain sentences: what this endpoint kept the run from measuring."""
        out = [
            "server start time and server process memory (prefixbench did not start this server)",
            "GPU memory of the server (not visible from the benchmark machine)",
        ]
        if not self.metrics:
            out.append(
                "everything server-side from `/metrics`: prefix-cache hits, server-side latency, KV-cache "
                "usage (the endpoint does not serve Prometheus metrics)"
            )
        else:
            if not self.prefix_cache_counters:
                out.append(
                    f"prefix-cache hit counters (`{engine.metrics.prefix_hits}` not exported): hits rest on "
                    "the `cached_tokens` the endpoint reports per request, if any"
                )
            if not self.latency_histograms:
                out.append("server-side TTFT/E2E histograms, so client timings were not cross-checked")
            if not self.kv_usage:
                out.append("KV-cache usage")
        if not self.idle_gauges:
            out.append(
                "that the server was idle before each point (no running/waiting gauges): other traffic on "
                "a shared deployment would be measured too"
            )
        if self.cache_reset != "ok":
            out.append(
                f"a cache reset before each point ({self.cache_reset}): points start from whatever the "
                "endpoint's cache already holds, so cold-start hits are not guaranteed"
            )
        if not self.version:
            out.append(f"the engine version (no `{engine.version_path}`)")
        return out


@dataclass
class Endpoint:
    """An existing server (or a gateway in front of several): measure.py talks to it as a target.MeasuredTarget."""

    base_url: str
    model: str
    engine: Engine = field(kw_only=True)  # what the server runs: its metric names and paths
    api_key_env: str | None = None
    log_path: Path = Path("endpoint.log")
    salt_every_request: bool = field(default=False, kw_only=True)  # every request a forced miss (cache off, realized)
    # The run's cache-off setting is forced misses on this deployment (both settings' lifetimes say so in the report)
    cache_off_forced: bool = field(default=False, kw_only=True)
    proc = None
    port: int | None = None
    startup_s: float | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)

    def __post_init__(self) -> None:
        # OpenAI-style base URLs often carry /v1; the client adds it itself.
        self.base_url = self.base_url.rstrip("/").removesuffix("/v1")

    def check_alive(self) -> None:
        """A remote server has no process to poll; a dead one shows up as failed requests."""

    def forced_miss_notes(self) -> list[str]:
        """What a run whose cache-off setting is forced misses on this (cache-on) deployment cannot measure; both
        settings' lifetimes record it, so the report lists it once for the run. Nothing for two deployments.

        A salted request misses with caching on, so such a run compares hits with misses on one deployment: the
        flag's own cost (a cache-on server keeping the books of a cache that never hits) is inside both settings."""
        if not self.cache_off_forced:
            return []
        return [
            "what the prefix-caching flag itself costs (cache on vs off at 0% reuse): both settings were one "
            f"deployment, `{redact_url(self.base_url)}` (model `{self.model}`), with caching on, so caching was never off",
            f'a deployment with caching off: "cache off" ({OFF}) means forced misses on that deployment, every request '
            "with a unique `cache_salt`; every off-vs-on comparison in this report is hits against forced misses on "
            "one deployment, not two deployments",
        ]

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc) -> None:
        return None


async def probe(endpoint: Endpoint, api_key: str | None, try_reset: bool) -> Capabilities:
    """Ask the endpoint what it offers; fail clearly when it can't serve the benchmark at all."""
    caps = Capabilities()
    url = redact_url(endpoint.base_url)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers=bearer(api_key), timeout=timeout) as s:
        try:
            async with s.get(f"{endpoint.base_url}/v1/models") as r:
                if r.status in (401, 403):
                    hint = (
                        f"the key in ${endpoint.api_key_env} was refused"
                        if endpoint.api_key_env
                        else "it wants an API key: set api_key_env to the name of the variable holding it"
                    )
                    raise ServerError(f"endpoint {url} answered HTTP {r.status} on /v1/models: {hint}")
                r.raise_for_status()
                caps.models = [d.get("id", "") for d in (await r.json(content_type=None)).get("data", [])]
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise ServerError(
                f"endpoint {url} is not an OpenAI-compatible server we can reach ({type(exc).__name__}: {exc})"
            ) from None
        if endpoint.model not in caps.models:
            raise ServerError(f"endpoint {url} does not serve model {endpoint.model!r}; it serves {caps.models}")
        try:
            names = await fetch_metrics(s, endpoint.base_url, endpoint.engine)
            n = endpoint.engine.metrics
            caps.metrics = True
            caps.prefix_cache_counters = n.prefix_hits in names and n.prefix_queries in names
            caps.latency_histograms = all(f"{h}_count" in names for h in n.histograms)
            caps.idle_gauges = n.running in names and n.waiting in names
            caps.kv_usage = n.kv_usage in names
        except (TimeoutError, aiohttp.ClientError, ValueError):
            pass
        try:
            async with s.get(f"{endpoint.base_url}{endpoint.engine.version_path}") as r:
                if r.status == 200:
                    caps.version = str((await r.json(content_type=None)).get("version")) or None
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError):
            pass
        if try_reset:
            try:
                caps.cache_reset = await reset_prefix_cache(s, endpoint.base_url, endpoint.engine)
            except TimeoutError as exc:
                caps.cache_reset = f"unavailable ({type(exc).__name__})"
        else:
            caps.cache_reset = "not requested (benchmark.reset_cache_between_points: false)"
    endpoint.capabilities = caps
    return caps
