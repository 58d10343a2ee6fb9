"""Snakemake edge: summary.csv, speedup.csv and the shapes' tables (see prefixbench.aggregate)."""

import sys
from pathlib import Path

from prefixbench.aggregate import write_summary

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
write_summary(
    map(Path, snakemake.input.records),
    map(Path, snakemake.input.meta),
    Path(snakemake.output.summary),
    Path(snakemake.output.speedup),
    Path(snakemake.output.shapes),
    prompt_paths=map(Path, snakemake.input.prompts),
    block_size=snakemake.params.block_size,
    shape_points_csv=Path(snakemake.output.shape_points),
    trace_csv=Path(snakemake.output.trace_capacity),
    shapes=snakemake.params.shapes,
)
