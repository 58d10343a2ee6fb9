"""Snakemake edge: time the cache-off server on cold requests and plan the sweep (see prefixbench.calibrate)."""

import sys
from pathlib import Path

from prefixbench.calibrate import calibrate, write_plan
from prefixbench.settings import BenchSettings

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log.calibrate, "w", buffering=1)
p = snakemake.params
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
)
write_plan(plan, Path(snakemake.output[0]))
print(f"[prefixbench] calibration: {plan['summary']}", flush=True)
