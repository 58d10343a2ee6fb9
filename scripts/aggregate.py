"""Snakemake edge: summary.csv, speedup.csv, the shapes' tables and the replicas' tables (see prefixbench.aggregate and
prefixbench.replicas_analysis)."""

import sys
from pathlib import Path

from prefixbench.aggregate import write_summary
from prefixbench.replicas_analysis import ReplicaTables, router_run, routing_module, write_replica_tables

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
i, o, p = snakemake.input, snakemake.output, snakemake.params
router = router_run(dict(p.target))  # None for one server
write_summary(
    map(Path, i.records),
    map(Path, i.meta),
    Path(o.summary),
    Path(o.speedup),
    Path(o.shapes),
    prompt_paths=map(Path, i.prompts),
    block_size=p.block_size,
    shape_points_csv=Path(o.shape_points),
    trace_csv=Path(o.trace_capacity),
    shapes=p.shapes,
    policy=router.primary if router else None,
)
write_replica_tables(
    map(Path, i.records),
    map(Path, i.meta),
    map(Path, [*i.prompts, *i.regime_prompts]),
    p.block_size,
    router,
    ReplicaTables(
        *(Path(o[k]) for k in ("replica_requests", "replica_points", "replica_contrasts", "routing_sim", "routing_curve"))
    ),
    routing_module(),
    map(Path, i.info),
)
