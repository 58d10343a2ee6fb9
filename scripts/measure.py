"""Snakemake edge: every measurement point of one cache setting (see prefixbench.measure)."""

import dataclasses
import os
import sys
from pathlib import Path

from prefixbench import OFF
from prefixbench.calibrate import read_plan
from prefixbench.design import point_order
from prefixbench.endpoint import Endpoint
from prefixbench.engines import engine_for
from prefixbench.measure import Point, ReplicaPlan, measure_endpoint, measure_mode
from prefixbench.replicas import replica_envs
from prefixbench.settings import BenchSettings, RouterSpec

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log.measure, "w", buffering=1)
p = snakemake.params
mode = snakemake.wildcards.mode
instance = int(p.instance)
prompts = {Path(f).stem: Path(f) for f in snakemake.input.prompts}
plan = read_plan(snakemake.input.plan[0] if snakemake.input.plan else None)
planned = plan["points"] if plan else [None] * len(p.points)
points = [
    Point(
        regime,
        reuse,
        conc,
        prompts[regime],
        Path(rec),
        Path(meta),
        rate,
        request_indices=tuple(pp["request_indices"]) if pp else None,
        estimated_s=pp["estimated_s"][mode] if pp else None,
        dropped=pp.get("dropped") if pp else None,
    )
    for (regime, reuse, conc, rate), rec, meta, pp in zip(p.points, snakemake.output.records, snakemake.output.meta, planned)
]
settings = BenchSettings(**p.bench)
points = point_order(points, settings.seed, instance)
extra = {
    "lifetime": "kv" if "/kv/" in str(snakemake.output.info) else f"#{instance}",
    "target": p.target,
    "model": dict(p.model),
    "dtype_choice": dict(p.dtype_choice) or None,
    "plan_summary": plan["summary"] if plan else None,
}
if p.endpoint:
    ep = dict(p.endpoint)
    endpoint = Endpoint(
        ep["base_url"],
        ep["model"],
        ep.get("api_key_env"),
        Path(snakemake.log.server),
        engine=engine_for(p.engine),
        salt_every_request=ep["salt_every_request"],
        # The cache-off setting as forced misses on the cache-on deployment: both settings' lifetimes say so.
        cache_off_forced=snakemake.config["targets"][p.target]["endpoints"][OFF]["salt_every_request"],
    )
    measure_endpoint(
        mode,
        instance=instance,
        endpoint=endpoint,
        server_info_path=Path(snakemake.output.info),
        points=points,
        settings=dataclasses.replace(settings, api_key_env=ep.get("api_key_env")),
        extra_info={**extra, "description": p.description},
        journal_path=Path(snakemake.log.records),
    )
else:
    # A replicated target (config.replica_settings): every replica's log beside the lifetime's server log (which then
    # names them), the router's too; each replica's cores (of those this job may run on) or GPU (of CUDA_VISIBLE_DEVICES).
    rep = dict(p.replicas or {})
    replicas = None
    if rep.get("count", 1) > 1:
        server_log = Path(snakemake.log.server)
        router = dict(rep["router"])
        replicas = ReplicaPlan(
            envs=replica_envs(rep["kind"], rep["count"], rep["gpus"], sorted(os.sched_getaffinity(0))),
            log_paths=[server_log.with_name(f"{server_log.stem}_r{k}.log") for k in range(rep["count"])],
            router=RouterSpec(**router | {"policies": tuple(router["policies"]), "extra_args": tuple(router["extra_args"])}),
            router_log=server_log.with_name(server_log.name.replace("server_", "router_", 1)),
        )
    measure_mode(
        mode,
        instance=instance,
        script=Path(snakemake.input.script),
        host=p.host,
        log_path=Path(snakemake.log.server),
        server_info_path=Path(snakemake.output.info),
        model=p.served_name,
        points=points,
        settings=settings,
        ready_timeout_s=p.ready_timeout_s,
        python=p.python,
        engine=p.engine,
        extra_info=extra,
        journal_path=Path(snakemake.log.records),
        replicas=replicas,
    )
