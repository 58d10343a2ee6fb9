"""What one measured point says about itself, beside its request records: one definition for the writer
(measure), the reader (aggregate) and the tests' synthetic runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class PointMeta:
    mode: str
    regime: str
    reuse_pct: int
    concurrency: int  # closed loop: requests in flight; 0 for an open-loop point
    request_rate: float  # open loop: mean arrivals per second; 0 for a closed-loop point
    repeats: int
    requests_sent: int
    requests_ok: int
    requests_failed: int
    wall_s: float
    wall_s_per_repeat: list[float]
    cache_reset: str  # "ok", or why the cache could not be reset before the point
    counters_delta: dict[str, float]  # server counters and histogram sums/counts moved by the point
    measured_hit_rate: float | None
    burstiness: float | None = None  # open loop only
    counters_delta_per_repeat: list[dict[str, float]] = field(default_factory=list)
    peak_server_rss_gib: float | None = None  # None: a remote endpoint, whose memory this machine can't see
    peak_gpu_mem_mib: float | None = None
    peak_kv_cache_usage: float | None = None
    memory_samples: int = 0
    instance: int = 1  # which server lifetime of its cache setting (prefixbench.design)
    dropped: str | None = None  # the plan did not send this point, and why (plan.make_plan); no records
    paired: str | None = None  # the paired design it ran (prefixbench.paired: hit_miss, miss_miss), None: one arm
    engine: str | None = None  # whose metric names counters_delta holds (prefixbench.engines); read() fills it in
    # Behind a router: one entry per pass (repeat x policy): its policy, order, wall time, each replica's and the
    # router's counter changes, the worker order and how many requests were attributed (prefixbench.measure).
    replica_passes: list[dict] | None = None

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> PointMeta:
        """A point's metadata; keys this version does not know are ignored, missing optional ones take their defaults."""
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        raw.setdefault("request_rate", 0.0)
        raw.setdefault("wall_s_per_repeat", [raw.get("wall_s", 0.0)])
        raw.setdefault("repeats", len(raw["wall_s_per_repeat"]))
        raw["engine"] = raw.get("engine") or "vllm"  # every point written before engines had names was vLLM's
        return cls(**{k: v for k, v in raw.items() if k in known})
