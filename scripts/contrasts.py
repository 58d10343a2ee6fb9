"""Snakemake edge: results/contrasts.csv, every contrast of the run with its verdict (see prefixbench.verdicts)."""

import sys

from prefixbench.verdicts import read_contrasts

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
i = snakemake.input
read_contrasts(i.summary, i.speedup, i.shape_points, list(i.info)).write_csv(snakemake.output[0])
