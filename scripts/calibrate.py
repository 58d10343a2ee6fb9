"""Snakemake edge: time the cache-off server on cold requests and plan the sweep (see prefixbench.calibrate)."""

import os
import sys
from pathlib import Path

from prefixbench.calibrate import calibrate, write_plan
from prefixbench.replicas import replica_envs
from prefixbench.settings import BenchSettings

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log.calibrate, "w", buffering=1)
p = snakemake.params
rep = dict(p.replicas or {})
# A replicated target: one server, on the first replica's cores or GPU (prefixbench.calibrate says what that means).
env = (
    replica_envs(rep["kind"], rep["count"], rep["gpus"], sorted(os.sched_getaffinity(0)))[0] if rep.get("count", 1) > 1 else None
)
plan = calibrate(
    script=Path(snakemake.input.script),
    host=p.host,
    log_path=Path(snakemake.log.server),
    ready_timeout_s=p.ready_timeout_s,
    model=p.served_name,
    settings=BenchSettings(**p.bench),
    prompt_paths=[Path(f) for f in snakemake.input.prompts],
    points=[tuple(x) for x in p.points],
    budget_s=p.budget_s,
    engine=p.engine,
    env=env,
)
write_plan(plan, Path(snakemake.output[0]))
print(f"[prefixbench] calibration: {plan['summary']}", flush=True)
