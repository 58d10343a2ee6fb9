"""Snakemake edge: prefix_caching_results.md (see prefixbench.report)."""

import sys
from pathlib import Path

from prefixbench.report import ReportInputs, render

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
i, p = snakemake.input, snakemake.params
inputs = ReportInputs(
    summary_csv=Path(i.summary),
    speedup_csv=Path(i.speedup),
    info_paths=list(map(Path, i.info)),
    script_paths=list(map(Path, i.scripts)),
    prompt_paths=list(map(Path, i.prompts)),
    model=dict(p.model),
    target=p.target,
    max_tokens=p.max_tokens,
    block_size=p.block_size,
    slo=dict(p.slo),
    shape_csv=Path(i.shapes),
    shape_points_csv=Path(i.shape_points),
    trace_csv=Path(i.trace_capacity),
    shapes={k: dict(v) for k, v in dict(p.shapes).items()},
    calibration_json=Path(i.calibration[0]) if i.calibration else None,
    contrasts_csv=Path(i.contrasts[0]) if getattr(i, "contrasts", None) else None,
    replica_points_csv=Path(i.replica_points),
    replica_contrasts_csv=Path(i.replica_contrasts),
    routing_sim_csv=Path(i.routing_sim),
    routing_curve_csv=Path(i.routing_curve),
    offload_md=Path(i.offload[0]) if getattr(i, "offload", None) else None,
)
render(inputs, Path(i.template), Path(snakemake.output[0]))
