"""Sampling and record writing never touch the event loop that timestamps the streams."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import pytest
from aiohttp import web

from prefixbench.client import ClientConfig, run_closed_loop
from prefixbench.sampling import KV_USAGE_LINE, RecordWriter, Sampler

GAP, TOKENS, BLOCK = 0.02, 12, 0.03


async def steady(request: web.Request) -> web.StreamResponse:
    """Tokens at a fixed 20 ms pace, one per chunk."""
    body = await request.json()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for _ in range(body["max_tokens"]):
        await asyncio.sleep(GAP)
        await resp.write(f"data: {json.dumps({'choices': [{'index': 0, 'text': 't'}]})}\n\n".encode())
    usage = {"prompt_tokens": 3, "completion_tokens": body["max_tokens"]}
    await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
    return resp


@pytest.fixture
def steady_server():
    """The server runs on its own loop in its own thread: blocking the client's loop must not slow it."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", steady)
        holder["runner"] = runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["port"] = site._server.sockets[0].getsockname()[1]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{holder['port']}"
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


async def stalls(base: str) -> int:
    """Per-token gaps the client saw that are at least half a block longer than the server's pace."""
    recs = []
    cfg = ClientConfig(base, "m", max_tokens=TOKENS, request_timeout_s=10, stall_timeout_s=5)
    await run_closed_loop(cfg, [(i, "p") for i in range(16)], 4, recs.append)  # 4 rounds: room for several stalls
    assert all(r.status == "ok" for r in recs)
    return sum(x > GAP + BLOCK / 2 for r in recs for x in r.itl_s)


async def test_a_sampler_that_blocks_30ms_changes_no_client_timing(steady_server):
    """The control: the same 30 ms block run on the loop shows up in the timings; in the sampler's thread it does not."""
    stop = asyncio.Event()

    async def on_the_loop() -> None:  # what the old sampler did: a blocking call on the client's loop
        while not stop.is_set():
            time.sleep(BLOCK)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(on_the_loop())
    blocked = await stalls(steady_server)
    stop.set()
    await task
    with Sampler("http://unused", None, interval_s=0.05, probe=lambda: time.sleep(BLOCK)) as sampler:
        threaded = await stalls(steady_server)
    assert sampler.samples >= 5
    assert blocked >= 5, f"the control did not stall the client ({blocked} stalls)"
    assert threaded <= blocked // 5, f"the threaded sampler stalled the client ({threaded} vs {blocked} on the loop)"


def test_sampler_reads_peaks_in_its_thread():
    with Sampler("http://127.0.0.1:9", None, interval_s=0.01, metrics=False, gpu=False) as s:
        time.sleep(0.1)
    assert s.samples >= 3 and s.peak_rss_bytes == 0 and s.peak_kv_usage is None


def test_kv_usage_is_read_from_its_line():
    text = b'# HELP x\nvllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25\nvllm:other 3\n'
    assert float(KV_USAGE_LINE.search(text).group(1)) == 0.25


def test_record_writer_writes_every_record_in_order_and_reports_errors():
    out = io.StringIO()
    seen = []
    with RecordWriter([out, None], seen.append) as w:
        for i in range(100):
            w.put({"i": i})
    assert [json.loads(x)["i"] for x in out.getvalue().splitlines()] == list(range(100)) and len(seen) == 100

    class Broken(io.StringIO):
        def write(self, _):
            raise OSError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        with RecordWriter([Broken()]) as w:
            w.put({"i": 0})
