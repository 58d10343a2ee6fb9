rule aggregate:
    """One row per measurement point (seed's columns first), the off/on ratios, and the shapes' tables the report reads
    (per request, per point, each trace's capacity curve), with polars."""
    input:
        records=all_point_files("jsonl"),
        meta=all_point_files("meta.json"),
        prompts=[prompt_file(n) for n in SHAPES],
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
    log:
        "results/logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        block_size=TARGET["block_size"],
        shapes={n: asdict(s) for n, s in SHAPES.items()},
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
