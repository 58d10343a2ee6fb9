"""Snakemake edge: the Altair charts (see prefixbench.charts)."""

import sys
from pathlib import Path

from prefixbench.charts import draw_all

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
p = snakemake.params
draw_all(
    summary_csv=Path(snakemake.input.summary),
    speedup_csv=Path(snakemake.input.speedup),
    outdir=Path(p.outdir),
    names=list(p.names),
    slo=dict(p.slo),
    model_dir=p.model_dir or None,
    block_size=p.block_size,
    shape_csv=Path(snakemake.input.shapes),
    calibration_json=Path(snakemake.input.calibration[0]) if snakemake.input.calibration else None,
)
