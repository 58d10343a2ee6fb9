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
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TextIO, cast

import aiohttp

from . import ON
from . import metrics as m
from .client import (
    ClientConfig,
    RequestRecord,
    bearer,
    record_dict,
    run_closed_loop,
    run_open_loop,
    run_sessions,
    send_one,
)
from .corpus import text_of_at_least
from .design import point_stem
from .endpoint import Capabilities, Endpoint, probe, redact_url
from .engines import engine_for
from .host import hardware
from .paired import SALTED, Send, mixed_order, schedule
from .plan import Eta, fmt_duration
from .point_meta import PointMeta
from .prompts import read_prompts
from .replicas import (
    Attribution,
    ManagedReplicas,
    ManagedRouter,
    RouterSpec,
    attribution,
    log_offsets,
    recorded_argv,
    router_argv,
    router_version,
)
from .sampling import RecordWriter, Sampler
from .server import ManagedServer, ServerError
from .sessions import session_key
from .settings import BenchSettings, api_key
from .shapes import Arrivals, Sessions, kind_of
from .target import MeasuredTarget, Replica


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


def paired_sends(
    point: Point, prompts: Sequence[dict], settings: BenchSettings, instance: int, repeat: int, policy: str | None = None
) -> list[Send]:
    """This pass's sends: the point's prompts in request order, in hit and miss sub-blocks; every salt unique in the
    lifetime (point, repeat, router policy, arm, sub-block, prompt)."""
    indices = mixed_order(prompts)
    prefix = f"pb{instance}-{point.regime}-{point.reuse_pct}-{point.label}-r{repeat}" + (f"-{policy}" if policy else "")
    return schedule(indices, point.concurrency, prefix, settings.paired)


def per_request_counters(point: Point, prompts: Sequence[dict]) -> bool:
    """Whether a pass reads the server's counters around every request: a kind that asks for it (its
    `per_request_counters`: a KV tier's hits, split by tier, per request) at a closed-loop point of one request at a
    time, where a request's counter change is its own."""
    kind = kind_of(prompts)
    return bool(getattr(kind, "per_request_counters", False)) and point.concurrency == 1 and not point.request_rate


async def run_one_by_one(
    cfg: ClientConfig, target: MeasuredTarget, items: Sequence[tuple[int, str | list[int]]], sink, api_key_value: str | None
) -> float:
    """Each request alone, the target's counters read before and after it: its record gets their change
    (`counters_delta`). One connection for the requests and another for the counters; returns the wall time."""
    names = target.engine.metrics
    t_origin = time.perf_counter()
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http,
        aiohttp.ClientSession(headers=bearer(api_key_value)) as metrics,
    ):
        for index, prompt in items:
            async with server_calls(target):
                before = await target.read_metrics(metrics)
            rec = await send_one(http, cfg, index, prompt, t_origin)
            async with server_calls(target):
                after = await target.read_metrics(metrics)
            sink(rec, {"counters_delta": m.counter_delta(before, after, names)})
    return time.perf_counter() - t_origin


async def run_pass(
    cfg: ClientConfig,
    prompts: Sequence[dict],
    point: Point,
    settings: BenchSettings,
    repeat: int,
    sink,
    target: MeasuredTarget | None = None,
) -> float:
    """One pass over a point's prompts, in the shape's own traffic pattern; returns the wall time.

    A workload shape's kind says how its prompts go (shapes.base.ShapeKind.traffic): sessions whose turns run in
    order, or its own arrival times; anything else closed loop at the point's concurrency, or open loop at its rate.
    A kind that asks for each request's own counters (per_request_counters) sends them one by one, reading `target`'s
    counters around each."""
    items = [(p["request_index"], p["prompt"]) for p in prompts]
    kind = kind_of(prompts)
    if target is not None and target.capabilities.metrics and per_request_counters(point, prompts):
        return await run_one_by_one(cfg, target, items, sink, api_key(settings))
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


@dataclass(frozen=True)
class ReplicaPlan:
    """How a replicated lifetime starts (targets.*.replicas >= 2): each replica's environment overrides (its CPU cores
    or GPU) and log, and the router in front of them."""

    envs: Sequence[Mapping[str, str]]
    log_paths: Sequence[Path]
    router: RouterSpec
    router_log: Path


@dataclass
class Fleet:
    """A replicated lifetime: N replicas started once, and for each pass vLLM's router with one policy in front of
    them. The cache-off setting runs the primary policy only; the cache-on setting every policy, in an order rotated
    by (repeat + instance) so that no policy always runs first on a point."""

    servers: Sequence[ManagedServer]
    spec: RouterSpec
    host: str
    router_log: Path
    kv_pools: list[int | None] = field(default_factory=list)
    starts: list[dict] = field(default_factory=list)  # each router start: policy, startup_s, worker_order

    @property
    def members(self) -> MeasuredTarget:
        """The replicas without a router: memory sampling, KV pools, warm-up."""
        replicas = tuple(Replica.of_server(s) for s in self.servers)
        return MeasuredTarget(self.servers[0].base_url, replicas, self.servers[0].engine, Capabilities.everything())

    def policies(self, mode: str, repeat: int, instance: int) -> list[str]:
        """The policies one repeat of a point runs, in order."""
        if mode != ON:
            return [self.spec.primary]
        names = list(self.spec.policies)
        k = (repeat + instance) % len(names)
        return names[k:] + names[:k]

    @contextlib.contextmanager
    def routed(self, policy: str) -> Iterator[MeasuredTarget]:
        """The router with `policy` in front of the replicas, for one pass; stopped after it, however it ends."""
        urls = [s.base_url for s in self.servers]
        with ManagedRouter(self.spec, policy, urls, self.host, self.router_log) as started:
            router = cast(ManagedRouter, started)
            order = list(router.worker_order) or None
            self.starts.append({"policy": policy, "startup_s": router.startup_s, "worker_order": order})
            yield MeasuredTarget.of_replicas(router, self.servers)

    def attribute(self, records: list[dict], offsets: Sequence[int]) -> int:
        """Each record's `replica` (and that replica's `kv_blocks`) from the replicas' request logs since the pass
        began, or `replica_unknown` saying why not (replicas.attribution: never a guess; an id a dead replica and one
        live one logged is the live one's, the router's retry); and its `replica_seq`, its place in the order the
        replica received the pass's requests. Returns how many were attributed."""
        logs = list(zip([s.log_path for s in self.servers], offsets))
        dead = [i for i, _ in self.dead()]
        try:
            found = attribution([r["request_id"] for r in records], logs, self.servers[0].engine, dead=dead)
        except OSError as exc:
            found = Attribution(unknown={r["request_id"]: f"replica logs unreadable ({exc})" for r in records})
        for r in records:
            k = found.replica.get(r["request_id"])
            r["replica"] = k
            r["replica_seq"] = found.arrival[k].get(r["request_id"]) if k is not None else None
            r["kv_blocks"] = self.kv_pools[k] if k is not None and k < len(self.kv_pools) else None
            if k is not None:
                r["replica_unknown"] = None
            elif (r.get("error") or "").startswith("not sent"):
                r["replica_unknown"] = "not sent"
            else:
                why = found.unknown.get(r["request_id"], "no replica logged it")
                r["replica_unknown"] = why + (f" (the request failed: {r['error'][:120]})" if r.get("error") else "")
        return sum(r["replica"] is not None for r in records)

    def dead(self) -> list[tuple[int, ServerError]]:
        """The replicas whose process has exited, with the error that names each one's log."""
        out = []
        for i, s in enumerate(self.servers):
            try:
                s.check_alive()
            except ServerError as exc:
                out.append((i, exc))
        return out

    def died(
        self, dead: list[tuple[int, ServerError]], policy: str | None, records: list[dict], router: dict | None
    ) -> ServerError:
        """The error of a pass during which replicas died: which, their logs, what the router did with the traffic
        (every request of the pass accounted for, the failures' errors, the router's counters over the pass)."""
        failed = [r for r in records if r["status"] != "ok"]
        errors = Counter((r.get("error") or "")[:80] for r in failed).most_common(3)
        on_dead = Counter(r["replica"] for r in records if r["replica"] in {i for i, _ in dead})
        names = ", ".join(f"replica {i} (log: {self.servers[i].log_path})" for i, _ in dead)
        moved = {k: v for k, v in (router or {}).items() if v}
        lines = [
            f"{names} died during a pass behind the router (policy {policy}): {len(records)} requests accounted for, "
            f"{len(records) - len(failed)} ok, {len(failed)} failed; attributed to the dead: {dict(on_dead) or 'none'}",
            f"the failures' errors: {errors or 'none'}",
            f"the router's counters over the pass: {moved or 'not read'}",
        ]
        return ServerError("\n".join(lines + [str(dead[0][1])]))

    def replica_info(self, envs: Sequence[Mapping[str, str]]) -> list[dict]:
        """server.json's `replicas`."""
        return [
            {"index": i, "base_url": s.base_url, "port": s.port, "log": str(s.log_path),
             "kv_blocks": self.kv_pools[i] if i < len(self.kv_pools) else None, "env": dict(envs[i]) if i < len(envs) else {}}
            for i, s in enumerate(self.servers)
        ]  # fmt: skip

    def router_info(self) -> dict:
        """server.json's `router`: the policies, the binary, its version, its command line (ports and replica URLs as
        placeholders), and each start's policy, time to ready and worker order (replica indices, as the router
        ordered them: round_robin and the tie-breaks follow that order, which changes from start to start)."""
        urls = [s.base_url for s in self.servers]
        return {
            "policies": list(self.spec.policies),
            "primary": self.spec.primary,
            "binary": self.spec.binary,
            "version": router_version(self.spec),
            "argv": recorded_argv(router_argv(self.spec, self.spec.primary, urls, self.host, 0, 0)),
            "startup_s": [s["startup_s"] for s in self.starts],
            "starts": list(self.starts),
        }


@contextlib.contextmanager
def pass_target(server: MeasuredTarget | Fleet, policy: str | None) -> Iterator[MeasuredTarget]:
    """What one pass sends to: the target itself, or a router with `policy` in front of the fleet."""
    if isinstance(server, Fleet):
        with server.routed(cast(str, policy)) as target:
            yield target
    else:
        yield server


@dataclass(frozen=True)
class Counters:
    """The target's counters at one moment: summed over its servers, and behind a router per replica and the router's."""

    total: dict[str, float]
    per_replica: list[dict[str, float]] | None = None
    router: dict[str, float] | None = None


async def read_counters(session: aiohttp.ClientSession, target: MeasuredTarget, fleet: Fleet | None) -> Counters:
    if fleet is None:
        return Counters(await target.read_metrics(session))
    per = await target.read_metrics_per_replica(session)
    return Counters(m.sum_metrics(per), per, await target.read_router_metrics(session))


def router_delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    """The router's samples moved by a pass (every sample of its page, counters and gauges alike)."""
    if before is None or after is None:
        return None
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(before) | set(after))}


@dataclass
class PassResult:
    """What one pass of a point measured: its wall time, cache reset and counter deltas (summed over the replicas,
    and per replica and of the router where there is one), and how its records were attributed."""

    repeat: int
    policy: str | None
    order: int
    wall_s: float
    reset: str
    delta: dict[str, float]
    per_replica: list[dict[str, float]] | None = None
    router: dict[str, float] | None = None
    attributed: int = 0
    unattributed: int = 0
    worker_order: list[int] | None = None  # the router's order of the replicas in this pass (its GET /workers)
    memory: dict = field(default_factory=dict)  # behind a router: the pass's memory peaks (sampled_memory)

    def replica_pass(self) -> dict:
        """The point meta's `replica_passes` entry."""
        return {"repeat": self.repeat, "policy": self.policy, "order": self.order, "wall_s": self.wall_s,
                "counters_delta_per_replica": self.per_replica, "router_counters_delta": self.router,
                "attributed": self.attributed, "unattributed": self.unattributed,
                "worker_order": self.worker_order} | self.memory  # fmt: skip


def sampled_memory(sampler: Sampler, target: MeasuredTarget) -> dict:
    """A sampler's peaks as the point meta names them; behind a router also each replica's peak KV-cache usage (where
    the sampler keeps it per server)."""
    out = {
        "peak_server_rss_gib": sampler.peak_rss_bytes / 2**30 if target.local else None,
        "peak_gpu_mem_mib": sampler.peak_gpu_mem_mib,
        "peak_kv_cache_usage": sampler.peak_kv_usage,
        "memory_samples": sampler.samples,
    }
    per_server = sampler.peak_kv_usage_per_server
    return out | (
        {"peak_kv_cache_usage_per_replica": list(per_server)} if per_server is not None and len(target.servers) > 1 else {}
    )


def peak_memory(passes: Sequence[dict]) -> dict:
    """The point's memory fields from its passes' (the primary policy's): the highest peaks, every sample counted."""

    def peak(key: str) -> float | None:
        values = [p[key] for p in passes if p.get(key) is not None]
        return max(values) if values else None

    return {
        "peak_server_rss_gib": peak("peak_server_rss_gib"),
        "peak_gpu_mem_mib": peak("peak_gpu_mem_mib"),
        "peak_kv_cache_usage": peak("peak_kv_cache_usage"),
        "memory_samples": sum(p.get("memory_samples", 0) for p in passes),
    }


def point_prompts(point: Point) -> list[dict]:
    """The point's prompts: its reuse level's, cut to the plan's subset."""
    prompts = [
        p
        for p in read_prompts(point.prompts_path)
        if p["reuse_pct"] == point.reuse_pct and (point.request_indices is None or p["request_index"] in point.request_indices)
    ]
    if not prompts:
        raise ValueError(f"{point.prompts_path}: no prompts for reuse {point.reuse_pct}%")
    return prompts


def pass_id(token: str, point: Point, repeat: int, policy: str | None) -> str:
    """The request-id prefix of one pass: unique in the lifetime (point, repeat, policy) and, by the lifetime's own
    random token, across lifetimes and runs on a shared server; an id is this and the record's send index."""
    return f"pb-{token}-{point.regime}-{point.reuse_pct}-{point.label}-r{repeat}-{policy or 'direct'}"


async def measure_point(
    server: MeasuredTarget | Fleet,
    model: str,
    point: Point,
    settings: BenchSettings,
    context: dict,
    journal: TextIO | None = None,
    *,
    id_token: str = "x",
) -> PointMeta:
    """Measure one point `settings.repeats` times, each from a reset cache on an idle server; on a replicated target
    each repeat once under every policy of the lifetime (Fleet.policies), each pass behind a router of its own.

    Each record goes to the point's file and, when given, to `journal`: a log that Snakemake keeps even
    when the job fails (it deletes a failed job's outputs). Behind a router a pass's records are written when the
    pass ends, each with the replica that served it (attributed from the replicas' request logs, off the loop that
    timestamps the streams); a pass that fails still writes every record it has."""
    from tqdm import tqdm

    prompts = point_prompts(point)
    by_index = {p["request_index"]: p for p in prompts}
    paired = is_paired(point, prompts, context["mode"], settings)
    kind = kind_of(prompts)
    fields = kind.record_fields if kind else ()  # a shape's own prompt fields, copied into each record
    point.records_path.parent.mkdir(parents=True, exist_ok=True)
    instance = context.get("instance", 1)
    fleet = server if isinstance(server, Fleet) else None
    members = fleet.members if fleet else cast(MeasuredTarget, server)
    n_policies = len(fleet.policies(context["mode"], 0, instance)) if fleet else 1
    per_pass = len(prompts) * (2 if paired else 1)
    counts: dict[str | None, dict[str, int]] = {}
    passes: list[PassResult] = []
    desc = f"{context['mode']} {point.regime} reuse{point.reuse_pct} {point.label}"

    def written(_: dict) -> None:
        bar.update(1)

    # The loop that timestamps the streams only enqueues records; sampling and writing have threads of their own.
    with (
        point.records_path.open("w") as fh,
        tqdm(total=per_pass * settings.repeats * n_policies, file=sys.stderr, mininterval=2, desc=desc) as bar,
        RecordWriter([fh, journal], written) as writer,
        # One server: memory sampled over the whole point. Behind a router: over each pass (sampled_memory), so that
        # each policy's peaks are its own and the point's are the primary policy's, as its other totals.
        Sampler(members, settings.sample_interval_s, api_key(settings), gpu=members.local)
        if not fleet
        else contextlib.nullcontext() as point_sampler,
    ):
        for repeat in range(settings.repeats):
            policies = fleet.policies(context["mode"], repeat, instance) if fleet else [None]
            for order, policy in enumerate(policies):
                sends = paired_sends(point, prompts, settings, instance, repeat, policy) if paired else []
                tally = counts.setdefault(policy, {"ok": 0, "failed": 0})

                def record(rec: RequestRecord, repeat: int = repeat, sends: list[Send] = sends, policy=policy) -> dict:
                    send = sends[rec.request_index] if sends else None
                    src = by_index[send.request_index if send else rec.request_index]
                    out = record_dict(
                        rec,
                        **context | ({"policy": policy} if fleet else {}),
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
                    return out

                keys = session_keys(prompts, sends) if fleet else {}
                with (
                    pass_target(server, policy) as target,
                    Sampler(members, settings.sample_interval_s, api_key(settings), gpu=members.local)
                    if fleet
                    else contextlib.nullcontext() as pass_sampler,
                ):
                    cfg = replace(client_config(target, model, settings), id_prefix=pass_id(id_token, point, repeat, policy),
                                  session_keys=keys)  # fmt: skip
                    result = await measure_pass(target, fleet, cfg, point, prompts, sends, settings,
                                                (repeat, policy, order), record, writer, tally)  # fmt: skip
                if fleet:
                    memory = sampled_memory(cast(Sampler, pass_sampler), members)
                    result = replace(result, worker_order=fleet.starts[-1]["worker_order"], memory=memory)
                passes.append(result)
    primary = [r for r in passes if r.policy == (fleet.spec.primary if fleet else None)]
    deltas = [r.delta for r in primary]
    delta = {k: sum(d.get(k, 0.0) for d in deltas) for k in {k for d in deltas for k in d}}
    sent = per_pass * settings.repeats
    tally = counts[primary[0].policy]
    meta = PointMeta(
        mode=context["mode"],
        engine=members.engine.name,
        instance=instance,
        regime=point.regime,
        reuse_pct=point.reuse_pct,
        concurrency=point.concurrency,
        request_rate=point.request_rate,
        burstiness=settings.burstiness if point.request_rate else None,
        repeats=settings.repeats,
        requests_sent=sent,
        requests_ok=tally["ok"],
        requests_failed=tally["failed"],
        wall_s=sum(r.wall_s for r in primary),
        wall_s_per_repeat=[r.wall_s for r in primary],
        cache_reset=next((r.reset for r in passes if r.reset != "ok"), "ok"),
        counters_delta=delta,
        counters_delta_per_repeat=deltas,
        measured_hit_rate=m.hit_rate(delta, members.engine.metrics),
        **(peak_memory([r.memory for r in primary]) if fleet else sampled_memory(cast(Sampler, point_sampler), members)),
        paired=settings.paired if paired else None,
        # every pass under every policy, beside the primary's totals (which every existing analysis reads)
        replica_passes=[r.replica_pass() for r in passes] if fleet else None,
    )
    meta.write(point.meta_path)
    for policy, tally in counts.items():
        if tally["failed"] > settings.max_failed_fraction * sent:
            under = f" under policy {policy}" if policy else ""
            raise RuntimeError(
                f"{tally['failed']} of {sent} requests failed{under} at {point.regime} reuse {point.reuse_pct}% "
                f"{point.label} (error budget {settings.max_failed_fraction:.0%}); see {point.records_path}"
            )
    return meta


def session_keys(prompts: Sequence[dict], sends: Sequence[Send]) -> dict[int, str]:
    """Send index -> X-Session-ID (session_key), which a router's consistent_hash keeps on one replica."""
    key = {p["request_index"]: session_key(p) for p in prompts}
    return {k: key[s.request_index] for k, s in enumerate(sends)} if sends else key


async def measure_pass(
    target: MeasuredTarget,
    fleet: Fleet | None,
    cfg: ClientConfig,
    point: Point,
    prompts: Sequence[dict],
    sends: list[Send],
    settings: BenchSettings,
    at: tuple[int, str | None, int],
    record: Callable[[RequestRecord], dict],
    writer: RecordWriter,
    tally: dict[str, int],
) -> PassResult:
    """One pass from an idle, reset target: counters before and after it; behind a router, each replica's and the
    router's too, and every record attributed to its replica before it is written (also when the pass fails). `at`:
    the pass's repeat, router policy (None: no router) and position in the repeat's order of policies."""
    repeat, policy, order = at
    caps = target.capabilities
    names = target.engine.metrics
    async with aiohttp.ClientSession(headers=bearer(api_key(settings))) as session:
        async with server_calls(target):
            reset = await idle_and_reset(session, target, settings)
            before = await read_counters(session, target, fleet) if caps.metrics else Counters({})
    offsets = log_offsets([s.log_path for s in fleet.servers]) if fleet else []
    pending: list[dict] = []

    def sink(rec: RequestRecord, extra: dict | None = None) -> None:
        tally[rec.status] += 1
        out = record(rec) | (extra or {})
        if fleet:
            pending.append(out)  # written once attributed, after the pass
        else:
            writer.put(out)

    try:
        if sends:
            wall = await run_paired_pass(cfg, prompts, sends, point.concurrency, sink)
        else:
            wall = await run_pass(cfg, prompts, point, settings, repeat, sink, target)
    finally:
        attributed = fleet.attribute(pending, offsets) if fleet else 0
        for out in pending:
            writer.put(out)
    if fleet and (dead := fleet.dead()):
        router = None
        with contextlib.suppress(Exception):  # the router's view of the pass, where it still answers
            async with aiohttp.ClientSession() as session:
                router = router_delta(before.router, await target.read_router_metrics(session))
        raise fleet.died(dead, policy, pending, router)
    target.check_alive()
    async with aiohttp.ClientSession(headers=bearer(api_key(settings))) as session:
        async with server_calls(target):
            after = await read_counters(session, target, fleet) if caps.metrics else Counters({})
    return PassResult(
        repeat=repeat,
        policy=policy,
        order=order,
        wall_s=wall,
        reset=reset,
        delta=m.counter_delta(before.total, after.total, names),
        per_replica=[m.counter_delta(b, a, names) for b, a in zip(before.per_replica, after.per_replica)]
        if before.per_replica is not None and after.per_replica is not None
        else None,
        router=router_delta(before.router, after.router),
        attributed=attributed,
        unattributed=len(pending) - attributed,
    )


async def warm_up(server: MeasuredTarget, model: str, settings: BenchSettings, approx_tokens: int) -> list[dict]:
    cfg = client_config(server, model, settings)
    out: list[dict] = []
    prompts = [(i, warmup_prompt(i, approx_tokens)) for i in range(settings.warmup_requests)]
    await run_closed_loop(cfg, prompts, 1, lambda r: out.append(record_dict(r)))
    bad = [r for r in out if r["status"] != "ok"]
    if bad:
        raise ServerError(f"warm-up request failed: {bad[0]['error']}")
    return out


async def read_kv_pools(server: MeasuredTarget, settings: BenchSettings) -> list[int | None]:
    """Each of the target's servers' KV capacity in blocks."""
    async with aiohttp.ClientSession(headers=bearer(api_key(settings))) as session:
        return await server.kv_pools(session)


def measure_points(
    mode: str,
    instance: int,
    server: MeasuredTarget | Fleet,
    model: str,
    points: Sequence[Point],
    settings: BenchSettings,
    journal: TextIO | None,
) -> dict:
    """Warm the server up (every replica of a fleet), then every point in order; one console line per point, with
    the time left.

    Returns what the lifetime's server.json records of it: the points measured and the server's KV blocks (a fleet:
    each replica's pool, and the one they share where they are equal)."""
    fleet = server if isinstance(server, Fleet) else None
    members = fleet.members if fleet else cast(MeasuredTarget, server)
    pools: list[int | None] = asyncio.run(read_kv_pools(members, settings)) if members.capabilities.metrics else [None]
    kv_blocks = pools[0] if len(set(pools)) == 1 else None
    # Every record carries its server's KV capacity: the cache model replays each pass against it. Behind a router
    # that is the serving replica's, known once the pass is attributed (Fleet.attribute).
    context: dict = {"mode": mode, "instance": instance, "kv_blocks": kv_blocks, "policy": None, "replica": None}
    if fleet:
        fleet.kv_pools = pools
        context |= {"kv_blocks": None, "replica_unknown": None, "replica_seq": None}
    name = f"{mode} #{instance}"
    for point in (p for p in points if p.dropped):
        write_dropped(point, mode, instance)
    points = [p for p in points if not p.dropped]
    max_prefix = max((p["prefix_len_tokens"] for pt in points for p in read_prompts(pt.prompts_path)[:1]), default=64)
    t0 = time.monotonic()
    for replica in [MeasuredTarget.of_server(s) for s in fleet.servers] if fleet else [members]:
        asyncio.run(warm_up(replica, model, settings, max_prefix))
    eta = Eta(point_estimates(points))
    if all(p.estimated_s is not None for p in points):
        print(
            f"[prefixbench] {name}: {len(points)} points, about {fmt_duration(eta.remaining_s())} (calibrated estimate)",
            flush=True,
        )
    token = uuid.uuid4().hex[:8]  # the lifetime's part of every request id: unique across runs on a shared server
    for i, point in enumerate(points, 1):
        t_point = time.monotonic()
        meta = asyncio.run(measure_point(server, model, point, settings, context, journal, id_token=token))
        eta.point_done(time.monotonic() - t_point)
        # One line per point on stdout (the console), while the progress bars go to the job's log.
        print(
            f"[prefixbench] {name} point {i}/{len(points)}: {point.regime} reuse {point.reuse_pct}% "
            f"{point.label}: {meta.requests_ok}/{meta.requests_sent} ok in {meta.wall_s:.1f} s"
            + (f" (policies: {', '.join(fleet.policies(mode, 0, instance))})" if fleet else "")
            + f"; elapsed {fmt_duration(time.monotonic() - t0)}, about {fmt_duration(eta.remaining_s())} left",
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
    replicas: ReplicaPlan | None = None,
) -> None:
    """Run every point of one cache setting against one server lifetime (records also to `journal_path`): one server,
    or `replicas` started from the same script behind vLLM's router (`log_path` then holds where their logs are)."""
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
    if replicas is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(
            "".join(f"replica {i}: {p}\n" for i, p in enumerate(replicas.log_paths)) + f"router: {replicas.router_log}\n"
        )
        with (
            journal_path.open("w") if journal_path else contextlib.nullcontext() as journal,
            ManagedReplicas(
                script,
                host,
                list(replicas.log_paths),
                ready_timeout_s,
                [dict(e) for e in replicas.envs],
                api_key(settings),
                engine=eng,
            ) as started,  # fmt: skip
        ):
            fleet = Fleet(started.servers, replicas.router, host, replicas.router_log)
            info["startup_s"] = max((s.startup_s or 0.0) for s in fleet.servers)  # the lifetime's: every replica ready
            info["port"] = None
            info |= measure_points(mode, instance, fleet, model, points, settings, journal)
            info |= {"replicas": fleet.replica_info(replicas.envs), "router": fleet.router_info()}
        server_info_path.write_text(json.dumps(info, indent=2))
        return
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
