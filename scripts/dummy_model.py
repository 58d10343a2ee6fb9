"""Snakemake edge: a random-weight model folder (see prefixbench.dummy_model)."""

import sys
from pathlib import Path

from prefixbench.dummy_model import make_dummy_model

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
make_dummy_model(snakemake.params.shape, Path(snakemake.input.tokenizer), Path(snakemake.output[0]))
