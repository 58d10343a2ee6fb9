"""Snakemake edge: the server command of one cache setting as an executable script."""

import sys
from pathlib import Path

from prefixbench.server import ServerSpec, write_script

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
spec = dict(snakemake.params.spec)
spec["extra_args"] = tuple(spec["extra_args"])
write_script(ServerSpec(**spec), snakemake.wildcards.mode, Path(snakemake.output[0]))
