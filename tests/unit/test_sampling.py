"""Sampling and record writing never touch the event loop that timestamps the streams."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from aiohttp import web

from prefixbench.client import ClientConfig, run_closed_loop
from prefixbench.engines import engine_for
from prefixbench.sampling import RecordWriter, Sampler, gauge_line

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
    cfg = ClientConfig(base, "m", max_tokens=TOKENS, request_timeout_s=10, stall_timeout_s=5, engine=engine_for("vllm"))
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
    with Sampler(None, interval_s=0.05, probe=lambda: time.sleep(BLOCK)) as sampler:
        threaded = await stalls(steady_server)
    assert sampler.samples >= 5
    assert blocked >= 5, f"the control did not stall the client ({blocked} stalls)"
    assert threaded <= blocked // 5, f"the threaded sampler stalled the client ({threaded} vs {blocked} on the loop)"


def test_sampler_reads_peaks_in_its_thread():
    with Sampler(None, interval_s=0.01, gpu=False) as s:
        time.sleep(0.1)
    assert s.samples >= 3 and s.peak_rss_bytes == 0 and s.peak_kv_usage is None


def test_kv_usage_is_read_from_its_line():
    text = b'# HELP x\nvllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25\nvllm:other 3\n'
    assert float(gauge_line(engine_for("vllm").metrics.kv_usage).search(text).group(1)) == 0.25


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


class FakeNvml:
    """pynvml as the sampler uses it: two GPUs, memory in bytes; counts inits and shutdowns."""

    def __init__(self, fail_init: bool = False):
        self.fail_init, self.inits, self.shutdowns, self.reads = fail_init, 0, 0, 0

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    nvmlMemory_v2 = 0x02000028

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        """Version 2 leaves the driver's reserved 512 MiB out, as nvidia-smi does; version 1 counts it."""
        self.reads += 1
        return types.SimpleNamespace(used=(handle + 1) * 2**30 + (0 if version == self.nvmlMemory_v2 else 2**29))


def local_target():
    from prefixbench.endpoint import Capabilities
    from prefixbench.target import MeasuredTarget, Replica

    return MeasuredTarget("http://127.0.0.1:9", (Replica("http://127.0.0.1:9", Path("log")),), engine_for("vllm"), Capabilities())


def test_gpu_memory_comes_from_nvml_initialised_once_per_sampler(monkeypatch):
    import prefixbench.sampling as sampling

    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(sampling, "nvidia_smi_gpus", lambda *a, **k: pytest.fail("nvidia-smi spawned beside NVML"))
    with Sampler(local_target(), interval_s=0.01, gpu=True) as s:
        time.sleep(0.1)
    assert s.samples >= 3 and nvml.reads >= 2 * 3
    assert nvml.inits == 1 and nvml.shutdowns == 1  # not once per sample
    assert s.peak_gpu_mem_mib == 3 * 1024  # 1 GiB + 2 GiB, read with the version-2 query (no reserved memory)


def test_gpu_memory_falls_back_to_nvidia_smi_without_nvml(monkeypatch):
    import prefixbench.sampling as sampling

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(fail_init=True))
    monkeypatch.setattr(sampling, "has_nvidia_smi", lambda: True)
    monkeypatch.setattr(sampling, "nvidia_smi_gpus", lambda *a, **k: "100\n250\n")
    with Sampler(local_target(), interval_s=0.01, gpu=True) as s:
        time.sleep(0.05)
    assert s.peak_gpu_mem_mib == 350.0


def test_each_replicas_kv_peak_is_kept_beside_the_fullest(monkeypatch):
    """Behind a router the report shows every replica's own peak KV usage, not only the fullest one's."""
    from types import SimpleNamespace

    import prefixbench.sampling as sampling

    readings = iter([{"a": 0.1, "b": 0.5}, {"a": 0.4, "b": None}, {"a": 0.2, "b": 0.3}])
    current: dict = {}
    monkeypatch.setattr(sampling, "gauge_value", lambda url, name, key: current[url])
    servers = [SimpleNamespace(base_url="a", pid=None), SimpleNamespace(base_url="b", pid=None)]
    target = SimpleNamespace(servers=servers, capabilities=SimpleNamespace(metrics=True), engine=engine_for("vllm"))
    s = Sampler(target, interval_s=1.0, gpu=False)
    for current in readings:  # noqa: B007  (the patched gauge reads it)
        s.sample()
    assert s.peak_kv_usage_per_server == [0.4, 0.5] and s.peak_kv_usage == 0.5
