"""What the measuring code talks to: one URL that takes the requests, and the servers behind it.

A target is one base URL plus `servers`, each a replica with its own `/metrics`, its own prefix cache and its own
KV pool. Counters are read from every replica and summed (a point's hits are the target's hits), the cache reset
goes to each, and memory is sampled over every replica's process. A target is one server, started by prefixbench
(`of_server`) or already running (`of_endpoint`), or several replicas prefixbench started behind vLLM's router
(`of_replicas`): requests go to the router, whose own Prometheus page says what it decided (`read_router_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from .endpoint import Capabilities, Endpoint, fetch_kv_blocks, fetch_metrics, reset_prefix_cache
from .engines import Engine
from .metrics import sum_metrics
from .server import ManagedServer

if TYPE_CHECKING:
    from .replicas import ManagedRouter


def _nothing_to_poll() -> None:
    """A remote server has no process to poll; a dead one shows up as failed requests."""


@dataclass(frozen=True)
class Replica:
    """One server behind the target's URL."""

    base_url: str  # the server's own URL: its /metrics and its cache reset
    log_path: Path
    pid: int | None = None  # its process, whose tree's memory is sampled; None: not on this machine
    check_alive: Callable[[], None] = _nothing_to_poll  # raises ServerError once its process has died

    @classmethod
    def of_server(cls, server: ManagedServer) -> Replica:
        """A server prefixbench started: its URL, log, process and liveness check."""
        return cls(server.base_url, server.log_path, server.proc.pid if server.proc is not None else None, server.check_alive)


@dataclass(frozen=True)
class MeasuredTarget:
    """Requests go to `base_url`; metrics, cache resets and memory come from each of `servers`."""

    base_url: str
    servers: Sequence[Replica]
    engine: Engine
    capabilities: Capabilities  # what the servers offer (one prefixbench started: everything)
    salt_every_request: bool = False  # every request a forced miss: the cache off, realized on a cache-on deployment
    router_metrics_url: str | None = None  # the router's Prometheus page (of_replicas); None: no router
    router_alive: Callable[[], None] = _nothing_to_poll  # raises once the router's process has died

    @classmethod
    def of_server(cls, server: ManagedServer) -> MeasuredTarget:
        """A server prefixbench started (it must be running): requests and metrics at the same URL."""
        return cls(server.base_url, (Replica.of_server(server),), server.engine, Capabilities.everything())

    @classmethod
    def of_replicas(cls, router: ManagedRouter, servers: Sequence[ManagedServer]) -> MeasuredTarget:
        """Replicas prefixbench started, behind a running router: requests to the router; metrics, cache resets, KV
        pools and memory from each replica, in the order of `servers` (the replica index everywhere)."""
        return cls(
            router.base_url,
            tuple(Replica.of_server(s) for s in servers),
            servers[0].engine,
            Capabilities.everything(),
            router_metrics_url=router.metrics_url,
            router_alive=router.check_alive,
        )

    @classmethod
    def of_endpoint(cls, endpoint: Endpoint) -> MeasuredTarget:
        """An existing endpoint, with what its probe found (endpoint.probe)."""
        replica = Replica(endpoint.base_url, endpoint.log_path)
        return cls(endpoint.base_url, (replica,), endpoint.engine, endpoint.capabilities, endpoint.salt_every_request)

    @property
    def log_path(self) -> Path:
        """Where to look when it fails: the first server's log (the only one, today)."""
        return self.servers[0].log_path

    @property
    def local(self) -> bool:
        """Whether its servers run on this machine (their memory and GPU are visible)."""
        return any(r.pid is not None for r in self.servers)

    def check_alive(self) -> None:
        self.router_alive()
        for replica in self.servers:
            replica.check_alive()

    async def read_metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """Every replica's samples, summed."""
        return sum_metrics(await self.read_metrics_per_replica(session))

    async def read_metrics_per_replica(self, session: aiohttp.ClientSession) -> list[dict[str, float]]:
        """Each replica's samples, in replica order."""
        return [await fetch_metrics(session, r.base_url, self.engine) for r in self.servers]

    async def read_router_metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """The router's samples ({} without a router, or when its page does not answer), one key per label set:
        `name{label="value",...}` with labels sorted and a worker URL replaced by its replica index, so that keys
        compare across lifetimes whatever ports the replicas got."""
        if self.router_metrics_url is None:
            return {}
        try:
            async with session.get(self.router_metrics_url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                if r.status != 200:
                    return {}
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        return parse_router_metrics(text, [r.base_url for r in self.servers])

    async def reset_cache(self, session: aiohttp.ClientSession) -> str:
        """Reset every replica's prefix cache: 'ok', or the first replica's reason why not."""
        results = [await reset_prefix_cache(session, r.base_url, self.engine) for r in self.servers]
        return next((r for r in results if r != "ok"), "ok")

    async def kv_pools(self, session: aiohttp.ClientSession) -> list[int | None]:
        """Each replica's KV capacity in blocks, as its /metrics states it."""
        return [await fetch_kv_blocks(session, r.base_url, self.engine) for r in self.servers]

    async def kv_blocks(self, session: aiohttp.ClientSession) -> int | None:
        """The KV capacity the cache model replays against: the one pool's. With several pools each request's is the
        pool of the replica that served it (kv_pools, indexed by the attributed replica): None here."""
        pools = await self.kv_pools(session)
        return pools[0] if len(pools) == 1 else None


def parse_router_metrics(text: str, worker_urls: Sequence[str]) -> dict[str, float]:
    """A Prometheus page's samples keyed by name and labels (histogram buckets left out); a label whose value is one of
    `worker_urls` (with or without a trailing slash) reads as that worker's index instead."""
    from prometheus_client.parser import text_string_to_metric_families  # here: the workflow imports no parser

    index = {u.rstrip("/"): str(i) for i, u in enumerate(worker_urls)}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                continue
            labels = {k: index.get(v.rstrip("/"), v) for k, v in sample.labels.items()}
            key = sample.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
            out[key] = out.get(key, 0.0) + float(sample.value)
    return out
