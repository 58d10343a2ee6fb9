"""A measured target: one URL for the requests, and each server behind it read, reset and sized on its own."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from prefixbench.endpoint import Capabilities
from prefixbench.engines import engine_for
from prefixbench.target import MeasuredTarget, Replica

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
