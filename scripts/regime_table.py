"""Snakemake edge: one regime under one cache setting, as a table for Snakemake's report."""

import sys

import polars as pl

from prefixbench.aggregate import regime_mode_table

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
regime_mode_table(pl.read_csv(snakemake.input.summary), snakemake.wildcards.regime, snakemake.wildcards.mode).write_csv(
    snakemake.output[0]
)
