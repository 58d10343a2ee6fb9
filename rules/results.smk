rule contrasts:
    """Every contrast the run measured, one row each with its interval, MDE and the claim rule's verdict: the one table
    the report's verdict table, the contrast chart and results.json read (prefixbench.verdicts)."""
    input:
        summary="results/summary.csv",
        speedup="results/speedup.csv",
        shape_points="results/shape_points.csv",
        code=package_files("contrasts"),
    output:
        "results/contrasts.csv",
    log:
        "results/logs/contrasts.log",
    benchmark:
        "results/benchmarks/contrasts.tsv"
    conda:
        "../envs/pipeline.yaml"
    script:
        "../scripts/contrasts.py"
