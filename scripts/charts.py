"""Snakemake edge: the Altair charts (see prefixbench.charts)."""

import sys
from pathlib import Path

from prefixbench.charts import draw_all, kv_cache_dtype

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
i, p = snakemake.input, snakemake.params
draw_all(
    summary_csv=Path(i.summary),
    speedup_csv=Path(i.speedup),
    outdir=Path(p.outdir),
    names=list(p.names),
    slo=dict(p.slo),
    model_dir=p.model_dir or None,
    block_size=p.block_size,
    shape_csv=Path(i.shapes),
    calibration_json=Path(i.calibration[0]) if i.calibration else None,
    contrasts_csv=Path(i.contrasts),
    records=[Path(f) for f in i.records],
    trace_csv=Path(i.trace_capacity),
    kv_prompts=[Path(f) for f in i.kv_prompts],
    dtype=kv_cache_dtype(p.dtype, list(p.server_args)),
    replica_points_csv=Path(i.replica_points),
    routing_curve_csv=Path(i.routing_curve),
    policy=p.policy,
)
