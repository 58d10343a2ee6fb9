"""Snakemake edge: summary.csv and speedup.csv (see prefixbench.aggregate)."""

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
)
