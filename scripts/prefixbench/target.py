"""What the measuring code talks to: one URL that takes the requests, and the servers behind it.

A target is one base URL plus `servers`, each a replica with its own `/metrics`, its own prefix cache and its own
KV pool. Counters are read from every replica and summed (a point's hits are the target's hits), the cache reset
goes to each, and memory is sampled over every replica's process. Today a target is one server, started by
prefixbench (`of_server`) or already running (`of_endpoint`); several replicas behind a router build on this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .endpoint import Capabilities, Endpoint, fetch_kv_blocks, fetch_metrics, reset_prefix_cache
from .engines import Engine
from .metrics import sum_metrics
from .server import ManagedServer


def _nothing_to_poll() -> None:
    """A remote server has no process to poll; a dead one shows up as failed requests."""


@dataclass(frozen=True)
class Replica:
    """One server behind the target's URL."""

    base_url: str  # the server's own URL: its /metrics and its cache reset
    log_path: Path
    pid: int | None = None  # its process, whose tree's memory is sampled; None: not on this machine
    check_alive: Callable[[], None] = _nothing_to_poll  # raises ServerError once its process has died


@dataclass(frozen=True)
class MeasuredTarget:
    """Requests go to `base_url`; metrics, cache resets and memory come from each of `servers`."""

    base_url: str
    servers: Sequence[Replica]
    engine: Engine
    capabilities: Capabilities  # what the servers offer (one prefixbench started: everything)
    salt_every_request: bool = False  # every request a forced miss: the cache off, realized on a cache-on deployment

    @classmethod
    def of_server(cls, server: ManagedServer) -> MeasuredTarget:
        """A server prefixbench started (it must be running): requests and metrics at the same URL."""
        pid = server.proc.pid if server.proc is not None else None
        replica = Replica(server.base_url, server.log_path, pid, server.check_alive)
        return cls(server.base_url, (replica,), server.engine, Capabilities.everything())

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
        for replica in self.servers:
            replica.check_alive()

    async def read_metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """Every replica's samples, summed."""
        return sum_metrics([await fetch_metrics(session, r.base_url, self.engine) for r in self.servers])

    async def reset_cache(self, session: aiohttp.ClientSession) -> str:
        """Reset every replica's prefix cache: 'ok', or the first replica's reason why not."""
        results = [await reset_prefix_cache(session, r.base_url, self.engine) for r in self.servers]
        return next((r for r in results if r != "ok"), "ok")

    async def kv_pools(self, session: aiohttp.ClientSession) -> list[int | None]:
        """Each replica's KV capacity in blocks, as its /metrics states it."""
        return [await fetch_kv_blocks(session, r.base_url, self.engine) for r in self.servers]

    async def kv_blocks(self, session: aiohttp.ClientSession) -> int | None:
        """The KV capacity the cache model replays against: the one pool's. With several pools a request's cache is
        the replica the router chose, which the model does not follow yet: None."""
        pools = await self.kv_pools(session)
        return pools[0] if len(pools) == 1 else None
