"""Snakemake edge: prefix_caching_results.md (see prefixbench.report)."""

import sys
from pathlib import Path

from prefixbench.report import render

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
i, p = snakemake.input, snakemake.params
render(
    Path(i.template),
    Path(snakemake.output[0]),
    Path(i.summary),
    Path(i.speedup),
    list(map(Path, i.info)),
    list(map(Path, i.scripts)),
    list(map(Path, i.prompts)),
    dict(p.model),
    p.target,
    p.max_tokens,
    p.block_size,
    dict(p.slo),
)
