"""Memory while a point runs, and the records it produces, handled off the client's event loop.

The event loop timestamps every streamed chunk; anything else it runs (a blocking `nvidia-smi`, a
psutil walk, parsing `/metrics`, writing a record) shows up as a stall in those timestamps. Measured on
an H200 before this module: 24-31 ms inter-chunk spikes every ~0.55 s. So the sampler and the record
writer each run in a thread of their own, and the loop only puts a record on a queue.
"""

from __future__ import annotations

import functools
import json
import queue
import re
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from .client import bearer
from .host import has_nvidia_smi, nvidia_smi_gpus, process_tree, visible_gpus

if TYPE_CHECKING:
    from .target import MeasuredTarget


@functools.cache
def gauge_line(name: str) -> re.Pattern[bytes]:
    """One gauge's line of a Prometheus page, read with a regex instead of a full parse."""
    return re.compile(rb"^" + re.escape(name.encode()) + rb"(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


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


class GpuMemory:
    """GPU memory in use on the GPUs this job may use (CUDA_VISIBLE_DEVICES). NVML (nvidia-ml-py) is initialised
    once, when the reader opens, and shut down when it closes; `nvidia-smi` is spawned per reading only where NVML
    is unavailable.

    NVML's version-2 memory query, where the driver has it, is what `nvidia-smi` reports as memory.used (checked on
    an H200: 1550.8 MiB against nvidia-smi's 1551 with 1 GiB allocated); the version-1 `used` also counts the
    driver's reserved memory (615 MiB more there), so the readings stay comparable with earlier runs'."""

    def __init__(self) -> None:
        self._nvml = None
        self._handles: list = []
        self._version = None  # NVML's memory query version (None: version 1)
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - no NVML (not installed, no driver): fall back to the command line tool
            return
        try:
            ids = visible_gpus() or range(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in ids]
            self._nvml = pynvml
            self._version = self._v2(pynvml)
        except Exception:  # noqa: BLE001 - NVML without these GPUs: fall back as well
            pynvml.nvmlShutdown()

    def _v2(self, pynvml) -> int | None:
        """The version-2 memory query, where this driver and nvidia-ml-py have it (else None: version 1)."""
        v2 = getattr(pynvml, "nvmlMemory_v2", None)
        try:
            if v2 is not None and self._handles:
                pynvml.nvmlDeviceGetMemoryInfo(self._handles[0], version=v2)
                return v2
        except Exception:  # noqa: BLE001 - an older driver: version 1
            pass
        return None

    @property
    def nvml(self) -> bool:
        return self._nvml is not None

    def used_mib(self) -> float | None:
        if self._nvml is not None:
            try:
                return sum(self._nvml.nvmlDeviceGetMemoryInfo(h, version=self._version).used for h in self._handles) / 2**20
            except Exception:  # noqa: BLE001 - a failed reading is no reading
                return None
        if not has_nvidia_smi():
            return None
        out = nvidia_smi_gpus("--query-gpu=memory.used", "--format=csv,noheader,nounits", timeout_s=5)
        try:
            return sum(float(x) for x in out.split()) if out is not None else None
        except ValueError:
            return None

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None


def gauge_value(base_url: str, name: str, api_key: str | None, timeout_s: float = 2.0) -> float | None:
    """One gauge of a server's /metrics (the KV-cache usage, 0-1), or None."""
    req = urllib.request.Request(f"{base_url}/metrics", headers=bearer(api_key))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            m = gauge_line(name).search(r.read())
    except (OSError, ValueError):
        return None
    return float(m.group(1)) if m else None


@dataclass
class Sampler:
    """Peak server RSS (summed over the target's servers), GPU memory and KV-cache usage (the fullest server's)
    while a point runs, sampled in a thread of its own.

    `probe` replaces the real readings (tests use it to make a sampler that blocks)."""

    target: MeasuredTarget | None  # None only with a probe
    interval_s: float  # benchmark.sample_interval_s
    api_key: str | None = None
    gpu: bool = True  # read GPU memory (a target on this machine)
    probe: Callable[[], None] | None = None
    peak_rss_bytes: int = 0
    peak_gpu_mem_mib: float | None = None
    peak_kv_usage: float | None = None
    peak_kv_usage_per_server: list[float | None] | None = None  # each server's own peak, in the target's order
    samples: int = 0
    _gpu_reader: GpuMemory | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def sample(self) -> None:
        if self.probe is not None:
            self.probe()
        elif self.target is not None:
            self._read(self.target)
        self.samples += 1

    def _read(self, target: MeasuredTarget) -> None:
        self.peak_rss_bytes = max(self.peak_rss_bytes, sum(process_tree_rss(r.pid) for r in target.servers if r.pid))
        gpu = self._gpu_reader.used_mib() if self._gpu_reader is not None else None
        if gpu is not None:
            self.peak_gpu_mem_mib = max(self.peak_gpu_mem_mib or 0.0, gpu)
        if target.capabilities.metrics:
            name = target.engine.metrics.kv_usage
            each = [gauge_value(r.base_url, name, self.api_key) for r in target.servers]
            peaks = self.peak_kv_usage_per_server or [None] * len(each)
            self.peak_kv_usage_per_server = [p if v is None else max(p or 0.0, v) for p, v in zip(peaks, each, strict=True)]
            kv = [v for v in each if v is not None]
            if kv:
                self.peak_kv_usage = max(self.peak_kv_usage or 0.0, *kv)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        if self.gpu and self.probe is None:
            self._gpu_reader = GpuMemory()
        self._thread = threading.Thread(target=self._run, name="prefixbench-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._gpu_reader is not None:
            self._gpu_reader.close()


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
