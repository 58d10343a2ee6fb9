"""Memory while a point runs, and the records it produces, handled off the client's event loop.

The event loop timestamps every streamed chunk; anything else it runs (a blocking `nvidia-smi`, a
psutil walk, parsing `/metrics`, writing a record) shows up as a stall in those timestamps. Measured on
an H200 before this module: 24-31 ms inter-chunk spikes every ~0.55 s. So the sampler and the record
writer each run in a thread of their own, and the loop only puts a record on a queue.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from .client import bearer
from .host import has_nvidia_smi, nvidia_smi_gpus, process_tree, visible_gpus

KV_USAGE_LINE = re.compile(rb"^vllm:kv_cache_usage_perc(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


def process_tree_rss(pid: int | None) -> int:
    """Resident memory of a process and all its descendants (a vLLM server is several processes)."""
    import psutil

    total = 0
    for p in process_tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def gpu_memory_used_mib() -> float | None:
    """GPU memory in use on the GPUs this job may use (CUDA_VISIBLE_DEVICES), through NVML where nvidia-ml-py
    is installed, else nvidia-smi."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        try:
            return (
                sum(
                    pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used
                    for i in (visible_gpus() or range(pynvml.nvmlDeviceGetCount()))
                )
                / 2**20
            )
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML: fall back to the command line tool
        pass
    out = nvidia_smi_gpus("--query-gpu=memory.used", "--format=csv,noheader,nounits", timeout_s=5)
    try:
        return sum(float(x) for x in out.split()) if out is not None else None
    except ValueError:
        return None


def kv_cache_usage(base_url: str, api_key: str | None, timeout_s: float = 2.0) -> float | None:
    """vLLM's KV-cache usage gauge (0-1), read with one regex instead of a full parse."""
    req = urllib.request.Request(f"{base_url}/metrics", headers=bearer(api_key))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            m = KV_USAGE_LINE.search(r.read())
    except (OSError, ValueError):
        return None
    return float(m.group(1)) if m else None


@dataclass
class Sampler:
    """Peak server RSS, GPU memory and KV-cache usage while a point runs, sampled in a thread of its own.

    `probe` replaces the real readings (tests use it to make a sampler that blocks)."""

    base_url: str
    server_pid: int | None  # None: a remote endpoint, whose memory this machine can't see
    interval_s: float  # benchmark.sample_interval_s
    metrics: bool = True
    api_key: str | None = None
    gpu: bool = field(default_factory=has_nvidia_smi)
    probe: Callable[[], None] | None = None
    peak_rss_bytes: int = 0
    peak_gpu_mem_mib: float | None = None
    peak_kv_usage: float | None = None
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def sample(self) -> None:
        if self.probe is not None:
            self.probe()
        else:
            self.peak_rss_bytes = max(self.peak_rss_bytes, process_tree_rss(self.server_pid))
            gpu = gpu_memory_used_mib() if self.gpu else None
            if gpu is not None:
                self.peak_gpu_mem_mib = max(self.peak_gpu_mem_mib or 0.0, gpu)
            kv = kv_cache_usage(self.base_url, self.api_key) if self.metrics else None
            if kv is not None:
                self.peak_kv_usage = max(self.peak_kv_usage or 0.0, kv)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="prefixbench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


class RecordWriter:
    """Writes each record line to its files from a thread; the event loop only enqueues (`put`)."""

    def __init__(self, outputs: list[TextIO | None], on_written: Callable[[dict], None] | None = None):
        self._outputs = [o for o in outputs if o is not None]
        self._on_written = on_written
        self._queue: queue.SimpleQueue[dict | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="prefixbench-writer", daemon=True)
        self.error: BaseException | None = None

    def put(self, record: dict) -> None:
        self._queue.put(record)

    def _run(self) -> None:
        while (record := self._queue.get()) is not None:
            try:
                line = json.dumps(record) + "\n"
                for out in self._outputs:
                    out.write(line)
                    out.flush()
                if self._on_written:
                    self._on_written(record)
            except BaseException as exc:  # noqa: BLE001 - kept and raised on close, never lost silently
                self.error = self.error or exc

    def __enter__(self) -> RecordWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.error is not None and exc[0] is None:
            raise RuntimeError(f"writing a record failed: {self.error}") from self.error
