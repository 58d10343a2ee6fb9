rule aggregate:
    """One row per measurement point (seed's columns first) and the off/on ratios, with polars."""
    input:
        records=all_point_files("jsonl"),
        meta=all_point_files("meta.json"),
        code=package_files("aggregate", "stats"),
    output:
        summary="results/summary.csv",
        speedup="results/speedup.csv",
    conda:
        "../envs/pipeline.yaml"
    log:
        "results/logs/aggregate.log",
    script:
        "../scripts/aggregate_results.py"
