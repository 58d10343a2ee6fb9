"""One cache setting, end to end: start its server, warm it up, measure every point, tear it down.

Each point (regime x reuse x concurrency) starts from a known cache state: the server is idle, its
prefix cache is reset (vLLM: a dev-mode endpoint, loopback only), and the prefix-cache counters are read
before and after, so every point has a *measured* hit rate. Memory (server RSS, GPU memory where
there is one, the engine's KV-cache usage) is sampled while the point runs. Everything goes through a
target.MeasuredTarget: one URL for the requests, each server behind it for metrics, resets and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO, cast

import aiohttp

from . import ON
from . import metrics as m
from .client import ClientConfig, RequestRecord, bearer, record_dict, run_closed_loop, run_open_loop, run_sessions
from .corpus import text_of_at_least
from .design import point_stem
from .endpoint import Endpoint, probe, redact_url
from .engines import engine_for
from .host import hardware
from .paired import SALTED, Send, mixed_order, schedule
from .plan import Eta, fmt_duration
from .point_meta import PointMeta
from .prompts import read_prompts
from .sampling import RecordWriter, Sampler
from .server import ManagedServer, ServerError
from .settings import BenchSettings, api_key
from .shapes import Arrivals, Sessions, kind_of
from .target import MeasuredTarget


@dataclass(frozen=True)
class Point:
    """One measurement point and where its records go."""

    regime: str
    reuse_pct: int
    concurrency: int  # closed loop: requests in flight; 0 for an open-loop point
    prompts_path: Path
    records_path: Path
    meta_path: Path
    request_rate: float = 0.0  # open loop: mean arrivals per second; 0 for a closed-loop point
    request_indices: tuple[int, ...] | None = None  # the plan's subset of the reuse level's requests; None = all
    estimated_s: float | None = None  # the plan's estimate of this point's duration (all repeats)
    dropped: str | None = None  # the plan gave this point up, and why: it is not sent

    @property
    def label(self) -> str:
        return point_stem(self.concurrency, self.request_rate)


def client_config(server: MeasuredTarget, model: str, settings: BenchSettings) -> ClientConfig:
    return ClientConfig.of(server.base_url, model, settings, server.engine, salt_every_request=server.salt_every_request)


async def wait_idle(session: aiohttp.ClientSession, server: MeasuredTarget, timeout_s: float = 60.0) -> None:
    """Until no server of the target runs or queues a request."""
    names = server.engine.metrics
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        cur = await server.read_metrics(session)
        if cur.get(names.running, 0) == 0 and cur.get(names.waiting, 0) == 0:
            return
        await asyncio.sleep(0.2)
    raise ServerError(f"server still busy {timeout_s:.0f} s after the previous point")


def warmup_prompt(i: int, approx_tokens: int) -> str:
    """A prompt sharing no block with any measured prompt (its own header and seed)."""
    return "Warm-up. " + text_of_at_least("rag_document", f"warmup:{i}", approx_tokens * 4)


async def idle_and_reset(session: aiohttp.ClientSession, server: MeasuredTarget, settings: BenchSettings) -> str:
    """Before a pass: wait until the target is idle (where it says), then reset its cache; 'ok', or why not."""
    caps = server.capabilities
    if caps.idle_gauges:
        await wait_idle(session, server)
    if not settings.reset_cache:
        return "not requested"
    return await server.reset_cache(session) if caps.cache_reset == "ok" else caps.cache_reset


@contextlib.asynccontextmanager
async def server_calls(server: MeasuredTarget):
    """Turn a failed call to the server into a ServerError that says whether the process died."""
    try:
        yield
    except (TimeoutError, aiohttp.ClientError) as exc:
        server.check_alive()
        raise ServerError(
            f"server at {server.base_url} stopped answering ({type(exc).__name__}: {exc}); log: {server.log_path}"
        ) from None


def is_paired(point: Point, prompts: Sequence[dict], mode: str, settings: BenchSettings) -> bool:
    """Whether a point runs as hit and forced-miss sub-blocks (prefixbench.paired): every closed-loop point of a
    single shared prefix in a cache-on lifetime. Workload shapes and open-loop points keep the comparison across
    lifetimes: their order and arrival times are the test, and salted misses near the KV capacity would evict what
    the hit arm should find."""
    single = bool(prompts) and kind_of(prompts) is None
    return settings.paired != "none" and mode == ON and point.concurrency > 0 and not point.request_rate and single


def paired_sends(point: Point, prompts: Sequence[dict], settings: BenchSettings, instance: int, repeat: int) -> list[Send]:
    """This pass's sends: the point's prompts in request order, in hit and miss sub-blocks; every salt unique in the
    lifetime (point, repeat, arm, sub-block, prompt)."""
    indices = mixed_order(prompts)
    prefix = f"pb{instance}-{point.regime}-{point.reuse_pct}-{point.label}-r{repeat}"
    return schedule(indices, point.concurrency, prefix, settings.paired)


async def run_pass(cfg: ClientConfig, prompts: Sequence[dict], point: Point, settings: BenchSettings, repeat: int, sink) -> float:
    """One pass over a point's prompts, in the shape's own traffic pattern; returns the wall time.

    A workload shape's kind says how its prompts go (shapes.base.ShapeKind.traffic): sessions whose turns run in
    order, or its own arrival times; anything else closed loop at the point's concurrency, or open loop at its rate."""
    items = [(p["request_index"], p["prompt"]) for p in prompts]
    kind = kind_of(prompts)
    traffic = kind.traffic(prompts, point.request_rate) if kind else None
    if isinstance(traffic, Sessions):
        return await run_sessions(cfg, traffic.sessions, max(point.concurrency, 1), traffic.think_s, sink)
    if isinstance(traffic, Arrivals):
        return await run_open_loop(cfg, items, point.request_rate, settings.burstiness, 0, sink, offsets=traffic.offsets)
    if point.request_rate:
        return await run_open_loop(cfg, items, point.request_rate, settings.burstiness, settings.seed + repeat, sink)
    return await run_closed_loop(cfg, items, point.concurrency, sink)


async def run_paired_pass(cfg: ClientConfig, prompts: Sequence[dict], sends: Sequence[Send], concurrency: int, sink) -> float:
    """One paired pass: every send in order as one closed loop at the point's concurrency (the level never drops
    between sub-blocks); a record's request_index is its position in `sends`."""
    text = {p["request_index"]: p["prompt"] for p in prompts}
    return await run_closed_loop(cfg, [(k, text[s.request_index], s.salt) for k, s in enumerate(sends)], concurrency, sink)


async def measure_point(
    server: MeasuredTarget,
    model: str,
    point: Point,
    settings: BenchSettings,
    context: dict,
    journal: TextIO | None = None,
) -> PointMeta:
    """Measure one point `settings.repeats` times, each from a reset cache on an idle server.

    Each record goes to the point's file and, when given, to `journal`: a log that Snakemake keeps even
    when the job fails (it deletes a failed job's outputs)."""
    from tqdm import tqdm

    prompts = [
        p
        for p in read_prompts(point.prompts_path)
        if p["reuse_pct"] == point.reuse_pct and (point.request_indices is None or p["request_index"] in point.request_indices)
    ]
    if not prompts:
        raise ValueError(f"{point.prompts_path}: no prompts for reuse {point.reuse_pct}%")
    by_index = {p["request_index"]: p for p in prompts}
    paired = is_paired(point, prompts, context["mode"], settings)
    kind = kind_of(prompts)
    fields = kind.record_fields if kind else ()  # a shape's own prompt fields, copied into each record
    cfg = client_config(server, model, settings)
    point.records_path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"ok": 0, "failed": 0}
    walls: list[float] = []
    deltas: list[dict[str, float]] = []
    resets: list[str] = []
    caps = server.capabilities
    desc = f"{context['mode']} {point.regime} reuse{point.reuse_pct} {point.label}"

    async def counters(session: aiohttp.ClientSession) -> dict[str, float]:
        return await server.read_metrics(session) if caps.metrics else {}

    def written(_: dict) -> None:
        bar.update(1)

    # The loop that timestamps the streams only enqueues records; sampling and writing have threads of their own.
    with (
        point.records_path.open("w") as fh,
        tqdm(total=len(prompts) * settings.repeats * (2 if paired else 1), file=sys.stderr, mininterval=2, desc=desc) as bar,
        RecordWriter([fh, journal], written) as writer,
        Sampler(server, settings.sample_interval_s, api_key(settings), gpu=server.local) as sampler,
    ):
        for repeat in range(settings.repeats):
            async with aiohttp.ClientSession(headers=bearer(api_key(settings))) as session:
                async with server_calls(server):
                    resets.append(await idle_and_reset(session, server, settings))
                    before = await counters(session)

            sends = paired_sends(point, prompts, settings, context.get("instance", 1), repeat) if paired else []

            def sink(rec: RequestRecord, repeat: int = repeat, sends: list[Send] = sends) -> None:
                send = sends[rec.request_index] if sends else None
                src = by_index[send.request_index if send else rec.request_index]
                counts[rec.status] += 1
                out = record_dict(
                    rec,
                    **context,
                    regime=point.regime,
                    reuse_pct=point.reuse_pct,
                    concurrency=point.concurrency,
                    request_rate=point.request_rate,
                    repeat=repeat,
                    prefix_len_tokens=src["prefix_len_tokens"],
                    workload=src.get("workload"),
                    prefix_group=src.get("prefix_group"),
                    expected_cached_tokens=src.get("expected_cached_tokens"),
                    **{k: src[k] for k in fields if k in src},
                )
                if send:  # the paired design: which arm, sub-block and pair; a salted miss can hit nothing
                    out |= {"request_index": send.request_index, "send_index": rec.request_index, "arm": send.arm,
                            "sub_block": send.sub_block, "pair": send.pair}  # fmt: skip
                    if send.arm in SALTED:
                        out["expected_cached_tokens"] = 0
                writer.put(out)

            if sends:
                walls.append(await run_paired_pass(cfg, prompts, sends, point.concurrency, sink))
            else:
                walls.append(await run_pass(cfg, prompts, point, settings, repeat, sink))
            server.check_alive()
            async with aiohttp.ClientSession(headers=bearer(api_key(settings))) as session:
                async with server_calls(server):
                    deltas.append(m.counter_delta(before, await counters(session), server.engine.metrics))
    delta = {k: sum(d.get(k, 0.0) for d in deltas) for k in {k for d in deltas for k in d}}
    sent = len(prompts) * settings.repeats * (2 if paired else 1)
    meta = PointMeta(
        mode=context["mode"],
        engine=server.engine.name,
        instance=context.get("instance", 1),
        regime=point.regime,
        reuse_pct=point.reuse_pct,
        concurrency=point.concurrency,
        request_rate=point.request_rate,
        burstiness=settings.burstiness if point.request_rate else None,
        repeats=settings.repeats,
        requests_sent=sent,
        requests_ok=counts["ok"],
        requests_failed=counts["failed"],
        wall_s=sum(walls),
        wall_s_per_repeat=walls,
        cache_reset=next((r for r in resets if r != "ok"), "ok"),
        counters_delta=delta,
        counters_delta_per_repeat=deltas,
        measured_hit_rate=m.hit_rate(delta, server.engine.metrics),
        peak_server_rss_gib=sampler.peak_rss_bytes / 2**30 if server.local else None,
        peak_gpu_mem_mib=sampler.peak_gpu_mem_mib,
        peak_kv_cache_usage=sampler.peak_kv_usage,
        memory_samples=sampler.samples,
        paired=settings.paired if paired else None,
    )
    meta.write(point.meta_path)
    if counts["failed"] > settings.max_failed_fraction * sent:
        raise RuntimeError(
            f"{counts['failed']} of {sent} requests failed at {point.regime} reuse {point.reuse_pct}% "
            f"{point.label} (error budget {settings.max_failed_fraction:.0%}); see {point.records_path}"
        )
    return meta


async def warm_up(server: MeasuredTarget, model: str, settings: BenchSettings, approx_tokens: int) -> list[dict]:
    cfg = client_config(server, model, settings)
    out: list[dict] = []
    prompts = [(i, warmup_prompt(i, approx_tokens)) for i in range(settings.warmup_requests)]
    await run_closed_loop(cfg, prompts, 1, lambda r: out.append(record_dict(r)))
    bad = [r for r in out if r["status"] != "ok"]
    if bad:
        raise ServerError(f"warm-up request failed: {bad[0]['error']}")
    return out


async def read_kv_blocks(server: MeasuredTarget, settings: BenchSettings) -> int | None:
    async with aiohttp.ClientSession(headers=bearer(api_key(settings))) as session:
        return await server.kv_blocks(session)


def measure_points(
    mode: str,
    instance: int,
    server: MeasuredTarget,
    model: str,
    points: Sequence[Point],
    settings: BenchSettings,
    journal: TextIO | None,
) -> dict:
    """Warm the server up, then every point in order; one console line per point, with the time left.

    Returns what the lifetime's server.json records of it: the points measured and the server's KV blocks."""
    kv_blocks = asyncio.run(read_kv_blocks(server, settings)) if server.capabilities.metrics else None
    # Every record carries its server's KV capacity: the cache model replays each pass against it.
    context = {"mode": mode, "instance": instance, "kv_blocks": kv_blocks}
    name = f"{mode} #{instance}"
    for point in (p for p in points if p.dropped):
        write_dropped(point, mode, instance)
    points = [p for p in points if not p.dropped]
    max_prefix = max((p["prefix_len_tokens"] for pt in points for p in read_prompts(pt.prompts_path)[:1]), default=64)
    t0 = time.monotonic()
    asyncio.run(warm_up(server, model, settings, max_prefix))
    eta = Eta(point_estimates(points))
    if all(p.estimated_s is not None for p in points):
        print(
            f"[prefixbench] {name}: {len(points)} points, about {fmt_duration(eta.remaining_s())} (calibrated estimate)",
            flush=True,
        )
    for i, point in enumerate(points, 1):
        t_point = time.monotonic()
        meta = asyncio.run(measure_point(server, model, point, settings, context, journal))
        eta.point_done(time.monotonic() - t_point)
        # One line per point on stdout (the console), while the progress bars go to the job's log.
        print(
            f"[prefixbench] {name} point {i}/{len(points)}: {point.regime} reuse {point.reuse_pct}% "
            f"{point.label}: {meta.requests_ok}/{meta.requests_sent} ok in {meta.wall_s:.1f} s; "
            f"elapsed {fmt_duration(time.monotonic() - t0)}, about {fmt_duration(eta.remaining_s())} left",
            flush=True,
        )
    return {"points": len(points), "kv_blocks": kv_blocks}


def write_dropped(point: Point, mode: str, instance: int) -> None:
    """A point the plan gave up: no records, and a meta file that says why (aggregate leaves it out)."""
    point.records_path.parent.mkdir(parents=True, exist_ok=True)
    point.records_path.write_text("")
    PointMeta(
        mode=mode,
        instance=instance,
        regime=point.regime,
        reuse_pct=point.reuse_pct,
        concurrency=point.concurrency,
        request_rate=point.request_rate,
        repeats=0,
        requests_sent=0,
        requests_ok=0,
        requests_failed=0,
        wall_s=0.0,
        wall_s_per_repeat=[],
        cache_reset="not sent",
        counters_delta={},
        measured_hit_rate=None,
        dropped=point.dropped,
    ).write(point.meta_path)


def point_estimates(points: Sequence[Point]) -> list[float]:
    """The plan's estimate per point, or, without a plan, its request count (the ETA scales either by the pace so far)."""
    if all(p.estimated_s is not None for p in points):
        return [float(cast(float, p.estimated_s)) for p in points]  # every one is set (checked above)
    return [
        float(len(p.request_indices))
        if p.request_indices is not None
        else float(sum(1 for r in read_prompts(p.prompts_path) if r["reuse_pct"] == p.reuse_pct))
        for p in points
    ]


def warmup_policy(settings: BenchSettings) -> str:
    return f"{settings.warmup_requests} warm-up request(s) of unrelated text after start; " + (
        "prefix cache reset and server idle before every point" if settings.reset_cache else "no cache reset between points"
    )


def measure_mode(
    mode: str,
    *,
    instance: int = 1,
    script: Path,
    host: str,
    log_path: Path,
    server_info_path: Path,
    model: str,
    points: Sequence[Point],
    settings: BenchSettings,
    ready_timeout_s: float,
    python: str,
    engine: str,
    extra_info: dict,
    journal_path: Path | None = None,
) -> None:
    """Run every point of one cache setting against one server lifetime (records also to `journal_path`)."""
    eng = engine_for(engine)
    info = {
        "mode": mode,
        "instance": instance,
        "script": str(script),
        "engine": eng.name,
        "vllm_version": eng.version_of(python),
        "hardware": hardware(),
        "warmup_policy": warmup_policy(settings),
        "started_by_prefixbench": True,
        **extra_info,
    }
    with (
        journal_path.open("w") if journal_path else contextlib.nullcontext() as journal,
        ManagedServer(script, host, log_path, ready_timeout_s, api_key=api_key(settings), engine=eng) as server,
    ):
        info["startup_s"] = server.startup_s
        info["port"] = server.port
        info |= measure_points(mode, instance, MeasuredTarget.of_server(server), model, points, settings, journal)
    server_info_path.write_text(json.dumps(info, indent=2))


def measure_endpoint(
    mode: str,
    *,
    instance: int = 1,
    endpoint: Endpoint,
    server_info_path: Path,
    points: Sequence[Point],
    settings: BenchSettings,
    extra_info: dict,
    journal_path: Path | None = None,
) -> None:
    """Every point of one cache setting against an existing endpoint: probe it, use what it offers, say the rest."""
    caps = asyncio.run(probe(endpoint, api_key(settings), settings.reset_cache))
    with endpoint.log_path.open("w") as log:
        log.write(f"endpoint {redact_url(endpoint.base_url)} model {endpoint.model}: {caps}\n")
    if caps.cache_reset != "ok" and settings.reset_cache:
        settings_note = f"; cache reset unavailable ({caps.cache_reset})"
    else:
        settings_note = ""
    info = {
        "mode": mode,
        "instance": instance,
        "started_by_prefixbench": False,
        "endpoint": {
            "base_url": redact_url(endpoint.base_url),
            "model": endpoint.model,
            "api_key_env": endpoint.api_key_env,
            "salt_every_request": endpoint.salt_every_request,
        },
        "capabilities": asdict(caps),
        "not_measured": caps.not_measured(endpoint.engine) + endpoint.forced_miss_notes(),
        "engine": endpoint.engine.name,
        "vllm_version": caps.version or f"unknown (the endpoint has no {endpoint.engine.version_path})",
        "hardware": {"client": hardware(), "server": "a remote endpoint: not visible to prefixbench"},
        "warmup_policy": warmup_policy(settings) + settings_note,
        "startup_s": None,
        **extra_info,
    }
    with journal_path.open("w") if journal_path else contextlib.nullcontext() as journal:
        info |= measure_points(mode, instance, MeasuredTarget.of_endpoint(endpoint), endpoint.model, points, settings, journal)
    server_info_path.write_text(json.dumps(info, indent=2))
