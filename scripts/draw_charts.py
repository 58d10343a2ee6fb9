"""Snakemake edge: the Altair charts (see prefixbench.charts)."""

import sys
from pathlib import Path

from prefixbench.charts import draw_all

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
p = snakemake.params
draw_all(
    Path(snakemake.input.summary),
    Path(snakemake.input.speedup),
    Path(p.outdir),
    list(p.names),
    dict(p.slo),
    p.model_dir,
    p.block_size,
)
