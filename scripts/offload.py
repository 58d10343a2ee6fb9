"""Snakemake edge: the second KV tier's analysis, charts and report section (rules/offload.smk; see prefixbench.offload,
prefixbench.charts_offload, prefixbench.findings.offload). One script, its step named by the rule."""

import json
import sys
from pathlib import Path

snakemake = globals()["snakemake"]
sys.stderr = open(snakemake.log[0], "w")
i, o, p = snakemake.input, snakemake.output, snakemake.params

if snakemake.rule == "offload_analysis":
    from prefixbench.charts import kv_cache_dtype
    from prefixbench.engines import engine_for
    from prefixbench.offload import analyse, write_table

    tables = analyse(
        records=[Path(f) for f in i.records],
        meta=[Path(f) for f in i.meta],
        prompts=[Path(f) for f in i.prompts],
        model_dir=i.model[0] if i.model else None,
        kv_dtype=kv_cache_dtype(p.dtype, list(p.server_args)),
        trace=Path(i.trace[0]) if i.trace else None,
        block_size=p.block_size,
        cpu_gib=p.cpu_gib,
        seed=p.seed,
        shapes=dict(p.shapes),
        names=engine_for(p.engine).metrics,
    )
    for name, df in tables.items():
        write_table(df, o[name])
elif snakemake.rule == "offload_charts":
    from prefixbench.charts_offload import draw_offload_charts
    from prefixbench.offload import read_table

    draw_offload_charts(read_table(i.requests), read_table(i.points), read_table(i.ttft), Path(p.outdir))
elif snakemake.rule == "offload_report":
    from prefixbench.findings.offload import OffloadRun, offload_page, offload_section
    from prefixbench.offload import read_table

    run = OffloadRun(
        requests=read_table(i.requests),
        points=read_table(i.points),
        ttft=read_table(i.ttft),
        crossover=read_table(i.crossover),
        trace=read_table(i.trace),
        cpu_gib=p.cpu_gib,
        backend=p.backend,
        block_size=p.block_size,
        lifetimes=[json.loads(Path(f).read_text()) for f in i.info],
    )
    Path(o.section).write_text(offload_section(run))
    Path(o.page).write_text(offload_page(run, target=p.target, model=dict(p.model)))
elif snakemake.rule == "offload_not_run":
    from prefixbench.findings.offload import not_run_section

    Path(o.section).write_text(not_run_section(p.reason))
else:
    raise SystemExit(f"scripts/offload.py: no step for rule {snakemake.rule!r}")
