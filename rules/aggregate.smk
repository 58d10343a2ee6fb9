# A replicated target (replicas behind vLLM's router, issue 23): its policies, and the tables of the Across-replicas
# analysis (prefixbench.replicas_analysis); None for one server, whose replica tables are empty files.
from prefixbench.router_run import TRACE as ROUTING_TRACE, router_run  # noqa: E402

ROUTER = None if ENDPOINT_MODE else router_run(TARGET)


rule aggregate:
    """One row per measurement point (seed's columns first), the off/on ratios, and the shapes' tables the report reads
    (per request, per point, each trace's capacity curve), with polars; behind a router, of the primary policy, and
    the replicas' tables of every policy (per request, per policy and point, the policies' contrasts, the simulator
    beside the measurement and its curve on the trace)."""
    input:
        records=all_point_files("jsonl"),
        meta=all_point_files("meta.json"),
        prompts=[prompt_file(n) for n in SHAPES],
        # Behind a router every request is replayed per replica: the regimes' prompts carry their block hashes too.
        regime_prompts=[prompt_file(n) for n in REGIMES] if ROUTER else [],
        routing_trace=[str(ROUTING_TRACE)] if ROUTER else [],
        # The replicas' URLs per lifetime (consistent_hash's ring hashes them: the simulator's exact routing).
        info=SERVER_INFOS if ROUTER else [],
        data=[f for files in SHAPE_DATA.values() for f in files],
        code=package_files("aggregate"),
    output:
        summary=report("results/summary.csv", caption="../report/summary.rst", category="Tables", labels={"table": "every point"}),
        speedup=report(
            "results/speedup.csv", caption="../report/speedup.rst", category="Tables", labels={"table": "off/on ratios"}
        ),
        shapes="results/shape_requests.csv",
        shape_points="results/shape_points.csv",
        trace_capacity="results/trace_capacity.csv",
        replica_requests="results/replica_requests.csv",
        replica_points="results/replica_points.csv",
        replica_contrasts="results/replica_contrasts.csv",
        routing_sim="results/routing_sim.csv",
        routing_curve="results/routing_curve.csv",
    log:
        "results/logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        block_size=TARGET["block_size"],
        shapes={n: asdict(s) for n, s in SHAPES.items()},
        target={} if ENDPOINT_MODE else TARGET,  # its replicas and router: prefixbench.replicas_analysis.router_run
    script:
        "../scripts/aggregate.py"


rule regime_table:
    """One prefix regime under one cache setting, filed in Snakemake's report by regime and setting."""
    input:
        summary="results/summary.csv",
        code=package_files("regime_table"),
    output:
        report(
            "results/tables/{regime}/{mode}.csv",
            caption="../report/regime_table.rst",
            category="Regime {regime}",
            subcategory="{mode}",
            labels={"regime": "{regime}", "cache setting": "{mode}"},
        ),
    log:
        "results/logs/regime_table/{regime}_{mode}.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/regime_table.py"
