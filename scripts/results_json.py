"""Snakemake edge: results/results.json, the run's result as a schema-checked file (see prefixbench.results_file)."""

import sys
from pathlib import Path

from prefixbench.results_file import ResultsError, Setup, write_results

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
i, p = snakemake.input, snakemake.params
setup = Setup(
    target=p.target,
    model=dict(p.model),
    block_size=p.block_size,
    max_tokens=p.max_tokens,
    dtype=p.dtype,
    config=dict(p.config),
)
try:
    write_results(
        setup,
        list(map(Path, i.info)),
        Path(i.summary),
        Path(i.speedup),
        Path(i.contrasts),
        Path(i.shape_points),
        Path(snakemake.output[0]),
        Path(i.schema),
        replica_csvs=(Path(i.replica_points), Path(i.replica_contrasts), Path(i.routing_sim)),
    )
except ResultsError as exc:  # the message names every field that fails; the rule fails with it
    print(exc, file=sys.stderr)
    raise SystemExit(f"results_json: {exc}") from None
