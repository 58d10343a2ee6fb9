"""Snakemake edge: every measurement point of one cache setting (see prefixbench.measure)."""

import dataclasses
import sys
from pathlib import Path

from prefixbench.endpoint import Endpoint
from prefixbench.measure import BenchSettings, Point, measure_endpoint, measure_mode

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log.measure, "w", buffering=1)
p = snakemake.params
mode = snakemake.wildcards.mode
prompts = {Path(f).stem: Path(f) for f in snakemake.input.prompts}
points = [
    Point(regime, reuse, conc, prompts[regime], Path(rec), Path(meta), rate)
    for (regime, reuse, conc, rate), rec, meta in zip(p.points, snakemake.output.records, snakemake.output.meta)
]
settings = BenchSettings(**p.bench)
extra = {"target": p.target, "model": dict(p.model)}
if p.endpoint:
    ep = dict(p.endpoint)
    endpoint = Endpoint(ep["base_url"], ep["model"], ep.get("api_key_env"), Path(snakemake.log.server))
    measure_endpoint(mode, endpoint, Path(snakemake.output.info), points,
                     dataclasses.replace(settings, api_key_env=ep.get("api_key_env")),
                     {**extra, "description": p.description}, journal_path=Path(snakemake.log.records))
else:
    measure_mode(
        mode, Path(snakemake.input.script), p.host, Path(snakemake.log.server), Path(snakemake.output.info),
        p.served_name, points, settings, p.ready_timeout_s, p.python,
        extra_info=extra, journal_path=Path(snakemake.log.records),
    )
