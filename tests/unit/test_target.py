"""A measured target: one URL for the requests, and each server behind it read, reset and sized on its own."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from prefixbench.endpoint import Capabilities
from prefixbench.engines import engine_for
from prefixbench.target import MeasuredTarget, Replica, parse_router_metrics

VLLM = engine_for("vllm")


def replica_app(hits: int, blocks: int, reset_status: int, resets: list[int]) -> web.Application:
    async def metrics(_):
        return web.Response(
            text=(
                f"# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total {hits}\n"
                f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 1\n"
                f'# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{num_gpu_blocks="{blocks}"}} 1.0\n'
            )
        )

    async def reset(_):
        resets.append(hits)
        return web.Response(status=reset_status)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_post(VLLM.cache_reset_path, reset)
    return app


@pytest.fixture
async def replicas():
    """Two servers: the second refuses the cache reset."""
    resets: list[int] = []
    runners, urls = [], []
    for hits, blocks, status in ((100, 64, 200), (50, 32, 404)):
        runner = web.AppRunner(replica_app(hits, blocks, status, resets))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")
    yield [Replica(u, Path("log")) for u in urls], resets
    for runner in runners:
        await runner.cleanup()


async def test_metrics_add_up_and_the_reset_goes_to_every_server(replicas):
    servers, resets = replicas
    target = MeasuredTarget(servers[0].base_url, servers, VLLM, Capabilities.everything())
    async with aiohttp.ClientSession() as s:
        m = await target.read_metrics(s)
        assert m[VLLM.metrics.prefix_hits] == 150 and m[VLLM.metrics.running] == 2
        assert await target.reset_cache(s) == "HTTP 404"  # the one that refused says why
        assert sorted(resets) == [50, 100]
        assert await target.kv_pools(s) == [64, 32]
        assert await target.kv_blocks(s) is None  # the cache model follows one pool, not a router's choice
        one = MeasuredTarget(servers[0].base_url, servers[:1], VLLM, Capabilities.everything())
        assert await one.kv_blocks(s) == 64 and await one.reset_cache(s) == "ok"
    assert not target.local and target.log_path == Path("log")


def test_a_dead_server_fails_the_target():
    def dead() -> None:
        raise RuntimeError("server exited")

    target = MeasuredTarget("http://x", (Replica("http://x", Path("a")), Replica("http://y", Path("b"), 7, dead)), VLLM,
                            Capabilities())  # fmt: skip
    assert target.local
    with pytest.raises(RuntimeError, match="exited"):
        target.check_alive()


ROUTER_PAGE = """# TYPE vllm_router_processed_requests_total counter
vllm_router_processed_requests_total{worker="http://127.0.0.1:8302"} 117
vllm_router_processed_requests_total{worker="http://127.0.0.1:8301/"} 43
# TYPE vllm_router_prefix_routing_decisions_total counter
vllm_router_prefix_routing_decisions_total{policy="cache_aware",stage="regular",outcome="prefix_hit"} 9
# TYPE vllm_router_active_workers gauge
vllm_router_active_workers 2
# TYPE vllm_router_generate_duration_seconds histogram
vllm_router_generate_duration_seconds_bucket{le="0.001"} 1
vllm_router_generate_duration_seconds_sum 0.25
vllm_router_generate_duration_seconds_count 4
"""


def test_the_routers_page_keeps_its_labels_with_workers_as_replica_indexes():
    m = parse_router_metrics(ROUTER_PAGE, ["http://127.0.0.1:8301", "http://127.0.0.1:8302"])
    assert m['vllm_router_processed_requests_total{worker="0"}'] == 43
    assert m['vllm_router_processed_requests_total{worker="1"}'] == 117
    assert m['vllm_router_prefix_routing_decisions_total{outcome="prefix_hit",policy="cache_aware",stage="regular"}'] == 9
    assert m["vllm_router_active_workers"] == 2 and m["vllm_router_generate_duration_seconds_count"] == 4
    assert not [k for k in m if "_bucket" in k]


class FakeRouter:
    """What of_replicas reads of a ManagedRouter."""

    def __init__(self, base_url: str, metrics_url: str):
        self.base_url, self.metrics_url = base_url, metrics_url

    def check_alive(self) -> None:
        raise RuntimeError("router exited")


async def test_a_replicated_target_sends_to_the_router_and_reads_each_replica(replicas):
    servers, _ = replicas

    async def page(_):
        return web.Response(text=ROUTER_PAGE.replace("8301/", servers[0].base_url.rsplit(":", 1)[1]))

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]

    class Server:  # what of_replicas reads of a ManagedServer
        def __init__(self, r: Replica):
            self.base_url, self.log_path, self.proc, self.engine = r.base_url, r.log_path, None, VLLM

        def check_alive(self) -> None:
            pass

    try:
        target = MeasuredTarget.of_replicas(
            FakeRouter("http://router", f"http://127.0.0.1:{port}/metrics"), [Server(s) for s in servers]
        )
        assert target.base_url == "http://router" and [r.base_url for r in target.servers] == [s.base_url for s in servers]
        async with aiohttp.ClientSession() as s:
            per = await target.read_metrics_per_replica(s)
            assert [p[VLLM.metrics.prefix_hits] for p in per] == [100, 50]
            assert (await target.read_metrics(s))[VLLM.metrics.prefix_hits] == 150
            assert (await target.read_router_metrics(s))['vllm_router_processed_requests_total{worker="0"}'] == 43
            assert await target.kv_pools(s) == [64, 32]
            one = MeasuredTarget(servers[0].base_url, servers[:1], VLLM, Capabilities.everything())
            assert await one.read_router_metrics(s) == {}  # no router
        with pytest.raises(RuntimeError, match="router exited"):
            target.check_alive()  # a dead router fails the target like a dead replica
    finally:
        await runner.cleanup()
