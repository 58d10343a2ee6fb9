"""Snakemake edge: one server lifetime per cache setting, every measurement point (see prefixbench.measure)."""

import sys
from pathlib import Path

from prefixbench.measure import BenchSettings, Point, measure_mode

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log.measure, "w", buffering=1)
p = snakemake.params
mode = snakemake.wildcards.mode
prompts = {Path(f).stem: Path(f) for f in snakemake.input.prompts}
points = [
    Point(regime, reuse, conc, prompts[regime], Path(rec), Path(meta), rate)
    for (regime, reuse, conc, rate), rec, meta in zip(p.points, snakemake.output.records, snakemake.output.meta)
]
measure_mode(
    mode, Path(snakemake.input.script), p.host, Path(snakemake.log.server), Path(snakemake.output.info),
    p.served_name, points, BenchSettings(**p.bench), p.ready_timeout_s, p.python,
    extra_info={"target": p.target, "model": dict(p.model)}, journal_path=Path(snakemake.log.records),
)
